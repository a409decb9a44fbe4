"""Heavy lazy imports done early, in the background, once per process.

torch's optimisers import ``torch._dynamo`` (about 1.1 s of module code,
holding the GIL in long stretches) the first time one is made. Done at the
first Train that froze the viewer for up to 270 ms; done while the dock is
being opened, the user is not yet working in it.
"""

from __future__ import annotations

import threading

_started = threading.Event()


def _import_heavy() -> None:
    try:
        import torch._dynamo  # noqa: F401 - imported for its side effect of being loaded
    except Exception:  # noqa: BLE001 - only a speed-up; training imports it again if needed
        pass


def preload_in_background() -> None:
    """Start the imports in a daemon thread (once)."""
    if not _started.is_set():
        _started.set()
        threading.Thread(target=_import_heavy, name="tomoseg-warmup", daemon=True).start()
