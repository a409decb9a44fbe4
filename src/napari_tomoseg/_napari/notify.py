"""User-caused errors become napari notifications, never a traceback or a crash."""

from __future__ import annotations

from collections.abc import Callable

from napari.utils.notifications import show_error

from ..errors import TomosegError


def guarded(action: Callable, report: Callable[[str], None] | None = None) -> Callable:
    """Wrap a widget action: TomosegError, FileExistsError and MemoryError are shown."""
    def run(*args):
        notify = report or show_error
        try:
            return action()
        except (TomosegError, FileExistsError) as exc:
            notify(str(exc))
        except MemoryError:
            notify("out of memory: bin the tomogram or use a smaller region.")
    return run
