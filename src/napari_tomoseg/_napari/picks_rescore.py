"""The averaging widget's "Score picks against the reference": ``jobs.rescore.rescore_job``
(the CLI's ``tomoseg rescore``) on the kept picks, in the thread.

The reference is the widget's reference file when one is chosen, else the finished
average. Each kept pick gets a ``reference_score`` feature (rejected and hidden ones
NaN); the scored picks are written to ``scored_particles.star`` in the output folder.
Picks below the suggested cut match the reference clearly worse than most: on the
benchmark most were look-alikes of the particle's mass (docs/averaging.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..averaging.template_scores import TemplateSettings
from ..errors import TomosegError
from ..jobs.progress import Progress
from ..jobs.rescore import rescore_job
from .confirm import may_replace
from .voxel_size import voxel_size_of

OUTPUT_NAME = "scored_particles.star"


def start_scoring(widget):
    """Start scoring the widget's kept picks; None when the user keeps an earlier file."""
    tomogram = widget.tomogram.value
    voxel_size_of(tomogram)  # a usable, cubic voxel size, or a message saying what to do
    frame = widget._frame(tomogram)
    reference = widget._reference(frame.voxel_size)
    if reference is None:
        if widget.result is None or widget._kept_voxel is None:
            raise TomosegError("average first, or choose a reference map: the picks are "
                               "scored against it.")
        if abs(widget._kept_voxel - frame.voxel_size) > 1e-3 * frame.voxel_size:
            raise TomosegError("the finished average is of a tomogram of another voxel size: "
                               "average this one first, or choose a reference map.")
        reference = widget.result.average
    table = widget.picked_table()
    if len(table) == 0:
        raise TomosegError("no shown, kept picks to score.")
    if widget.output.value is None:
        raise TomosegError("choose an output folder for the scored picks.")
    output = Path(widget.output.value) / OUTPUT_NAME
    if not may_replace(widget.native, [output], "these scores"):
        widget.status.value = "not scored: the earlier scores in that folder are kept"
        return None
    scored = np.flatnonzero(widget._kept())
    points = widget.particles.value
    settings = TemplateSettings(tilt_min=float(widget.tilt_min.value),
                                tilt_max=float(widget.tilt_max.value))
    job = rescore_job(tomogram.data, frame, table, reference, settings, output)
    widget.status.value = f"scoring {len(table)} picks against the reference..."
    return widget._start(job, lambda progress: _on_progress(widget, progress),
                         lambda outcome: _on_scored(widget, points, scored, output, outcome))


def _on_progress(widget, progress: Progress) -> None:
    widget.status.value = f"scoring: {progress.message}"
    widget.progress.max, widget.progress.value = progress.total, progress.step


def _on_scored(widget, points, scored: np.ndarray, output: Path, outcome) -> None:
    table, suggestion = outcome
    scores = table["reference_score"].to_numpy(float)
    full = np.full(len(points.data), np.nan)
    if len(points.data) > scored.max(initial=-1):  # points removed meanwhile: file only
        full[scored] = scores
        points.features["reference_score"] = full
    below = int(np.sum(scores < suggestion))
    widget.status.value = (f"{len(scores)} picks scored (feature reference_score of "
                           f"'{points.name}'); {below} below the suggested cut "
                           f"{suggestion:.3f} (median - 2 MADs); written to {output}")
