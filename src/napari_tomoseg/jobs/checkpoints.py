"""The best weights of a running training, on disk every minute, so a kill keeps them.

Cancel, Ctrl-C, SIGTERM and errors already save the best weights (``jobs.train``);
a kill -9, a power cut or a cluster job's hard time limit did not, and lost the run.
Once a held-out check has chosen weights, they are written to ``NAME.checkpoint.pt``
(their threshold is the one chosen on the check's single predictions); a training without
held-out checks (``--no-early-stop``) writes the weights it would keep then. A training that
ends removes the checkpoint it wrote, and only that file: not one another process wrote
since. The next training of the feature writes its own over a killed run's checkpoint.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from ..feature_files import checkpoint_model_file
from ..nn.model_file import TrainedModel, save_model

CHECKPOINT_EVERY_S = 60.0


class Checkpoints:
    """Writes the newest best weights offered, at most every ``every_s`` seconds."""

    def __init__(self, output: Path | None, every_s: float | None = None):
        self.path = checkpoint_model_file(output) if output is not None else None
        self.every_s = CHECKPOINT_EVERY_S if every_s is None else every_s
        self.last = time.monotonic()  # a training shorter than every_s writes none
        self.pending: TrainedModel | None = None
        self.written: tuple[int, int] | None = None  # (inode, mtime) of our last write
        self.failed: str | None = None  # why the last write failed (training goes on)

    def offer(self, best: TrainedModel | None,
              snapshot: Callable[[], TrainedModel] | None = None) -> None:
        """Keep ``best`` (when given) and write the newest one kept once it is time; a
        training without held-out checks offers a ``snapshot`` of its weights instead."""
        if best is not None:
            self.pending = best
        if self.path is None or time.monotonic() - self.last < self.every_s \
                or (self.pending is None and snapshot is None):
            return
        self.last = time.monotonic()
        try:  # a snapshot is made afresh each time, never kept over a failed write
            save_model(self.pending if self.pending is not None else snapshot(), self.path)
            self.written = _identity(self.path)
        except Exception as exc:  # noqa: BLE001 - a full disk or no memory for the copy
            self.failed = str(exc)  # must not end the training
            return
        self.pending, self.failed = None, None

    def discard(self) -> None:
        """Remove the checkpoint this training wrote (its end saved what it holds)."""
        if self.written is not None and self.path is not None \
                and _identity(self.path) == self.written:
            self.path.unlink(missing_ok=True)
        self.written = None


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns
