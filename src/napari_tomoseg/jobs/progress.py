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

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

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
