"""One job per user action, the same for the CLI, batch and the widgets.

Each job is a generator of ``Progress`` that returns its result and is
cancelled by closing it (see ``progress``).
"""

from .progress import Job, Progress, run_job

__all__ = ["Job", "Progress", "run_job"]
