"""The shape every job shares: a generator of ``Progress`` that returns its result.

A job is a generator function. It yields ``Progress`` often (at least once
per slab, step or iteration) and returns its result. There is one way to
cancel any job: close the generator. The job then stops at its current
``yield``; its ``finally`` blocks and atomic writers remove any partial
output, and a training job keeps the best model so far. The CLI drives a
job with a progress bar (``cli.progress``), the widgets in a thread
(``_napari.worker``), and tests or scripts with ``run_job``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from ..errors import Cancelled

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """Where a job is (``step`` of ``total``), in words, and what it can show now.

    ``payload`` carries what a face may display while the job runs: a
    training update with its preview, a finished slab of probabilities, an
    averaging iteration. Faces that only show a bar ignore it.
    """

    step: int
    total: int
    message: str = ""
    payload: Any = None


Job = Generator[Progress, None, T]


def run_job(job: Job[T], on_progress: Callable[[Progress], None] | None = None) -> T:
    """Drive ``job`` to its end in this thread; returns its result.

    The job is closed (cancelled) if ``on_progress`` raises, e.g. on Ctrl-C.
    """
    try:
        while True:
            try:
                progress = next(job)
            except StopIteration as end:
                return end.value
            if on_progress is not None:
                on_progress(progress)
    finally:
        job.close()


# A face that runs a job in a thread may also stop it between its yields: a refinement
# iteration searches every particle before it yields, minutes on a CPU, and Cancel waited
# that long (a closed viewer kept computing). The face names its stop event for the thread;
# long loops inside a job call ``raise_if_stopped``.
_running = threading.local()


@contextlib.contextmanager
def stop_event(event: threading.Event) -> Iterator[None]:
    """While in this block, ``raise_if_stopped`` in this thread obeys ``event``."""
    before = getattr(_running, "event", None)
    _running.event = event
    try:
        yield
    finally:
        _running.event = before


def raise_if_stopped() -> bool:
    """Raise ``Cancelled`` when this thread's job was asked to stop; else False (so it
    serves as a ``should_stop`` callback that never returns True: no partial result is
    ever returned as if it were whole)."""
    event = getattr(_running, "event", None)
    if event is not None and event.is_set():
        raise Cancelled("stopped by the user")
    return False
