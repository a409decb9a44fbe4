"""One progress bar on stderr for every command, and the one way a command runs a job.

``run_with_bar`` drives any job (``jobs.progress``) to its end with a bar;
Ctrl-C closes the job, which removes its partial outputs (a training job
keeps its best model so far), and ``main`` reports the interrupt.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

from ..jobs.progress import Job, Progress, run_job

T = TypeVar("T")


@contextlib.contextmanager
def progress_bar(description: str, unit: str = "step") -> Iterator[Callable[[int, int, str], None]]:
    """A bar on stderr; yields ``show(step, total, message)``. Closed on leaving."""
    from tqdm import tqdm

    bar = tqdm(total=1, desc=description, unit=unit, leave=False, file=sys.stderr)

    def show(step: int, total: int, message: str = "") -> None:
        bar.total = max(int(total), 1)
        bar.n = int(step)
        bar.set_description(f"{description}: {message}" if message else description,
                            refresh=False)
        bar.refresh()

    try:
        yield show
    finally:
        bar.close()


def run_with_bar(job: Job[T], description: str, unit: str = "step") -> T:
    """The job's result, after showing its progress on one bar."""
    with progress_bar(description, unit) as show:
        def on_progress(progress: Progress) -> None:
            show(progress.step, progress.total, progress.message)

        return run_job(job, on_progress)
