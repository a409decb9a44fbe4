"""The one place widgets start background work: a napari thread worker per task.

Core functions report progress through a ``(step, total, message)``
callback; here the callback emits a Qt signal, which Qt delivers on the
GUI thread, so widgets are only ever touched from there.
"""

from __future__ import annotations

from collections.abc import Callable

from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject, Signal


class _ProgressRelay(QObject):
    progressed = Signal(int, int, str)


def run_with_progress(function: Callable, *args, on_progress: Callable | None = None,
                      on_done: Callable | None = None, on_error: Callable | None = None,
                      **kwargs):
    """Start ``function(*args, progress=callback, **kwargs)`` in a thread; returns the worker."""
    relay = _ProgressRelay()
    worker = thread_worker(function, start_thread=False)(*args, progress=relay.progressed.emit,
                                                         **kwargs)
    worker._tomoseg_relay = relay  # keep the relay alive as long as the worker
    if on_progress:
        relay.progressed.connect(on_progress)
    if on_done:
        worker.returned.connect(on_done)
    if on_error:
        worker.errored.connect(on_error)
    worker.start()
    return worker
