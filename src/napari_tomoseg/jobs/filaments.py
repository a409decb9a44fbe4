"""Trace filaments through a probability map: points along them, and their tubes as labels."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import InvalidSettingsError
from ..filaments import Filaments, FilamentSettings, iter_trace
from ..io.atomic import files_together
from ..io.mrc import check_finite_volume
from ..io.mrc_write import write_volume
from ..io.particle_files import check_particle_output, eman2_box_size, write_particles
from ..io.particles import TomogramFrame
from ..io.paths import check_outputs
from ..io.probability_header import LABELS_MARK, tomogram_labels
from ..probability_maps import probability_scale
from .progress import Job, Progress


def trace_job(probability: np.ndarray, frame: TomogramFrame, settings: FilamentSettings,
              feature: str, points: str | os.PathLike | None = None,
              tubes: str | os.PathLike | None = None,
              overwrite: bool = False) -> Job[Filaments]:
    """Filaments of ``feature`` in ``frame``'s pixels. ``points``: a STAR, CSV or JSON of
    points along each (RELION's helical columns in a STAR); ``tubes``: an MRC label volume,
    each filament's tube numbered as in the points. Both are written at the end, atomically;
    existing files are replaced only with ``overwrite``, and both or neither."""
    outputs = _checked_outputs(points, tubes, overwrite)  # refused outputs cost nothing
    check_finite_volume(probability, feature)
    # the range is checked, not converted: a float16 map is read slab by slab, never copied
    scale = probability_scale(probability, name=f"the {feature} map")
    steps = iter_trace(probability, frame.voxel_size, settings, scale)
    total = settings.directions + 2
    try:
        while True:
            done, directions = next(steps)
            yield Progress(done, directions + 2, f"tracing {feature}: direction {done} of "
                                                 f"{directions}")
            total = directions + 2
    except StopIteration as end:
        filaments: Filaments = end.value
    finally:
        steps.close()
    said = f"{len(filaments.paths)} {feature} filaments"
    yield Progress(total - 1, total, said)
    spacing = settings.spacing or settings.diameter / 2
    table = filaments.table(frame.voxel_size, spacing)
    table["feature"] = feature
    with _together(outputs) as staged:
        if "points" in staged and outputs["points"].suffix.lower() == ".json" \
                and outputs["points"].is_file():  # an EMAN2 info file: its other classes,
            shutil.copy2(outputs["points"], staged["points"])  # tlt_params ... stay
        if "points" in staged:
            write_particles(staged["points"], table, frame, feature=feature,
                            box_size=eman2_box_size(settings.diameter, frame.voxel_size))
        if "tubes" in staged:
            write_volume(staged["tubes"], filaments.tubes, frame.voxel_size, frame.origin,
                         labels=(LABELS_MARK, *tomogram_labels(frame.name)))
    yield Progress(total, total, said)
    return filaments


def _checked_outputs(points: str | os.PathLike | None, tubes: str | os.PathLike | None,
                     overwrite: bool) -> dict[str, Path]:
    """{"points": ..., "tubes": ...} as given, each refused before any work: a folder named
    T.mrc failed only after the points had replaced the earlier ones."""
    outputs = {k: Path(v) for k, v in (("points", points), ("tubes", tubes)) if v is not None}
    if "points" in outputs:
        check_particle_output(outputs["points"], overwrite=overwrite)
    if "tubes" in outputs:
        check_outputs([outputs["tubes"]], [], overwrite)
    if len({p.resolve() for p in outputs.values()}) < len(outputs):
        raise InvalidSettingsError("give the points and the tubes different files.")
    for what, path in outputs.items():
        if path.is_dir():
            raise InvalidSettingsError(f"{path} is a folder: give a file for the {what}.")
        above = next(p for p in path.absolute().parents if p.exists())
        if not above.is_dir():
            raise InvalidSettingsError(f"{path}: {above} is a file, not a folder.")
    return outputs


@contextlib.contextmanager
def _together(outputs: dict[str, Path]) -> Iterator[dict[str, Path]]:
    """``files_together`` per folder: the outputs take their places only once all are
    written, and none does if a write fails."""
    with contextlib.ExitStack() as stack:
        staged: dict[str, Path] = {}
        for folder in dict.fromkeys(p.parent for p in outputs.values()):
            folder.mkdir(parents=True, exist_ok=True)
            group = {k: p for k, p in outputs.items() if p.parent == folder}
            staged.update(stack.enter_context(files_together(group)))
        yield staged
