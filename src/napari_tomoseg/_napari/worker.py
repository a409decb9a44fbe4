"""The one place widgets start background work: a job (see ``jobs.progress``) in a thread.

``start_job`` drives the job's generator in a napari thread worker. Its
``Progress`` reports travel through a Qt signal, so every callback runs on
the GUI thread and may touch layers and widgets. Cancelling sets a flag the
driving thread checks between reports; that thread then closes the job,
so the job's own cleanup (removing partial files, keeping a trained model)
runs where the job ran. Errors go to ``notify.report_error`` unless the
widget handles them: one line for a user's error, a logged traceback for a bug.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from napari.qt.threading import thread_worker
from qtpy.QtCore import QObject, Signal

from ..errors import Cancelled
from ..jobs.progress import Job, Progress, stop_event
from .notify import report_error

_CANCELLED = object()


class _Relay(QObject):
    progressed = Signal(object)


def _drive(job: Job, cancel: threading.Event, emit: Callable[[Progress], None]):
    """Run ``job`` to its end or until ``cancel`` is set; ``_CANCELLED`` when cancelled."""
    try:
        while True:
            if cancel.is_set():
                job.close()
                return _CANCELLED
            try:
                with stop_event(cancel):  # long loops inside the job stop too
                    progress = next(job)
            except StopIteration as end:
                return end.value
            except Cancelled:
                if cancel.is_set():
                    return _CANCELLED
                raise
            emit(progress)
    finally:
        job.close()


class JobHandle:
    """A running job: ``cancel()`` it, ask ``is_running``, or ``wait()`` in tests."""

    def __init__(self, job: Job, on_progress: Callable[[Progress], Any] | None,
                 on_done: Callable[[Any], Any] | None,
                 on_error: Callable[[BaseException], Any] | None,
                 on_cancelled: Callable[[], Any] | None,
                 on_finished: Callable[[], Any] | None, owner=None):
        self._cancel = threading.Event()
        self.alive = True  # False once the owning widget is gone: no callback touches it
        if owner is not None:
            native = getattr(owner, "native", owner)
            native.destroyed.connect(lambda *_, handle=self: handle.orphan())
        on_progress, on_done, on_cancelled, on_finished = (
            self._while_alive(c) for c in (on_progress, on_done, on_cancelled, on_finished))
        on_error = self._while_alive(on_error or report_error)
        self._finished = threading.Event()
        self._relay = _Relay()
        self.outcome: str | None = None  # "done", "cancelled" or "failed" once ended
        self.error: BaseException | None = None  # what it failed with
        if on_progress is not None:
            self._relay.progressed.connect(on_progress)
        self.worker = thread_worker(_drive, start_thread=False, ignore_errors=True)(
            job, self._cancel, self._relay.progressed.emit)
        self.worker._tomoseg_relay = self._relay  # the relay lives as long as the worker
        self.worker.returned.connect(lambda value: self._returned(value, on_done, on_cancelled))
        self.worker.errored.connect(lambda exc: self._failed(exc, on_error))
        self.worker.finished.connect(self._finished.set)
        if on_finished is not None:
            self.worker.finished.connect(on_finished)

    def _while_alive(self, callback):
        """``callback`` while the widget lives; an error in it is shown as one line (it went
        to napari's exception hook as a traceback dialog)."""
        if callback is None:
            return None

        def run(*args):
            if not self.alive:
                return None
            try:
                return callback(*args)
            except Exception as exc:  # noqa: BLE001 - shown or logged, never raised into Qt
                report_error(exc)
                return None
        return run

    def orphan(self) -> None:
        """The owning widget was destroyed: cancel, and call nothing of it any more."""
        self.alive = False
        self.cancel()

    def _returned(self, value, on_done, on_cancelled) -> None:
        self.outcome = "cancelled" if value is _CANCELLED else "done"
        if value is _CANCELLED:
            if on_cancelled is not None:
                on_cancelled()
        elif on_done is not None:
            on_done(value)

    def _failed(self, exc: BaseException, on_error) -> None:
        self.outcome, self.error = "failed", exc
        on_error(exc)

    @property
    def finished(self):
        """The worker's Qt signal, emitted last whatever the outcome."""
        return self.worker.finished

    @property
    def is_running(self) -> bool:
        return not self._finished.is_set()

    def cancel(self) -> None:
        """Ask the job to stop at its next progress report."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has ended (not on the GUI thread of a live app)."""
        return self._finished.wait(timeout)


def stop_or_start(handle: JobHandle | None, status, start: Callable[[], JobHandle]
                  ) -> JobHandle | None:
    """A Start button that reads Stop while its job runs: cancel the running job (saying
    so on the ``status`` label), else start a new one."""
    if handle is not None and handle.is_running:
        handle.cancel()
        status.value = "stopping..."
        return None
    return start()


def start_job(job: Job, on_progress: Callable[[Progress], Any] | None = None,
              on_done: Callable[[Any], Any] | None = None,
              on_error: Callable[[BaseException], Any] | None = None,
              on_cancelled: Callable[[], Any] | None = None,
              on_finished: Callable[[], Any] | None = None, owner=None) -> JobHandle:
    """Start ``job`` in a thread; callbacks run on the GUI thread (see module docstring).

    ``on_finished`` runs last in every case: done, cancelled or failed. When
    ``owner`` (the widget) is destroyed, the job is cancelled and no callback runs.
    """
    handle = JobHandle(job, on_progress, on_done, on_error, on_cancelled, on_finished, owner)
    handle.worker.start()
    return handle
