"""The averaging widget's "Score picks against the reference": ``jobs.rescore.rescore_job``
(the CLI's ``tomoseg rescore``) on the kept picks, in the thread.

The reference is the widget's reference file when one is chosen, else the finished
average. Each kept pick gets a ``reference_score`` feature (rejected and hidden ones
NaN); the scored picks are written to ``scored_particles.star`` in the output folder.
*Reject picks below the cut* then rejects them as QC would (``reject_below_cut``).
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
from .session_layers import is_session_picks, save_or_say, status_colours
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
    where = np.array(points.data[scored], copy=True)  # which pick each score belongs to
    widget.reject_button.enabled = False  # a cut of the scores before is not one of these
    return widget._start(job, lambda progress: _on_progress(widget, progress),
                         lambda outcome: _on_scored(widget, points, (scored, where), output,
                                                    outcome))


def _on_progress(widget, progress: Progress) -> None:
    widget.status.value = f"scoring: {progress.message}"
    widget.progress.max, widget.progress.value = progress.total, progress.step


def _on_scored(widget, points, scored: tuple[np.ndarray, np.ndarray], output: Path,
               outcome) -> None:
    """The scores onto the picks they belong to, unless the picks moved or went meanwhile:
    then the file alone holds them (a deleted pick shifted every later score onto another)."""
    table, suggestion = outcome
    suggestion = round(float(suggestion), 3)  # as the cut box shows it, and counts below
    scores = table["reference_score"].to_numpy(float)
    index, where = scored
    below = int(np.sum(scores < suggestion))
    same = index.max(initial=-1) < len(points.data) and np.array_equal(points.data[index], where)
    if not same:
        widget.status.value = (f"{len(scores)} picks scored and written to {output}; the picks "
                               "changed while they were scored, so the layer is left as it is: "
                               "score again to cut them")
        return
    full = np.full(len(points.data), np.nan)
    full[index] = scores
    points.features["reference_score"] = full
    if is_session_picks(points):  # the scores travel with the session's picks
        save_or_say(points)
    widget.scored_layer = points
    widget.score_cut.value = suggestion
    widget.score_cut.enabled = widget.reject_button.enabled = True
    widget.status.value = (f"{len(scores)} picks scored (feature reference_score of "
                           f"'{points.name}'); {below} below the suggested cut "
                           f"{suggestion:.3f} (median - 2 MADs, set as the cut); written to {output}")


def reject_below_cut(widget) -> int:
    """Reject (QC status -1) the scored, not yet judged picks whose ``reference_score`` is below
    the widget's cut, as the Pick tab's **r** would: they leave averaging and export, stay in
    the layer, and the Pick tab's accept takes any of them back; picks a person accepted stay
    accepted. Returns how many were rejected."""
    points = widget.particles.value
    if points is None or "reference_score" not in points.features:
        raise TomosegError("score the picks against the reference first: the cut applies to "
                           "their reference_score.")
    if points is not getattr(widget, "scored_layer", None):
        raise TomosegError(f"the cut was suggested for other picks than '{points.name}': "
                           "score these first.")
    scores = points.features["reference_score"].to_numpy(float)
    status = (points.features["status"].to_numpy(float) if "status" in points.features
              else np.zeros(len(scores)))
    cut = float(widget.score_cut.value)
    status = np.nan_to_num(status, nan=0.0)  # not judged
    # NaN: not scored; accepted by a person (1): their judgement stands
    newly = np.isfinite(scores) & (scores < cut) & (status == 0)
    status = np.where(newly, -1, status).astype(int)
    points.features["status"] = status
    points.border_color = status_colours(status)
    if is_session_picks(points):  # judgements are work: kept at once, as the Pick tab does
        save_or_say(points)
    widget.status.value = (f"{int(newly.sum())} picks with a reference score below {cut:.3f} "
                           f"rejected ({int((status >= 0).sum())} kept); accept in the Pick "
                           "tab takes one back")
    return int(newly.sum())
