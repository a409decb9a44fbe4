"""Trace filaments through a probability map: points along them, and their tubes as labels."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InvalidSettingsError
from ..filaments import Filaments, FilamentSettings, iter_trace
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
    existing files are replaced only with ``overwrite``."""
    if points is not None:  # refused outputs cost nothing: before any work
        check_particle_output(points, overwrite=overwrite)
    if tubes is not None:
        check_outputs([Path(tubes)], [], overwrite)
        if points is not None and Path(points).resolve() == Path(tubes).resolve():
            raise InvalidSettingsError("give the points and the tubes different files.")
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
    if points is not None:
        write_particles(Path(points), table, frame, feature=feature, overwrite=overwrite,
                        box_size=eman2_box_size(settings.diameter, frame.voxel_size))
    if tubes is not None:
        write_volume(tubes, filaments.tubes, frame.voxel_size, frame.origin,
                     overwrite=overwrite, labels=(LABELS_MARK, *tomogram_labels(frame.name)))
    yield Progress(total, total, said)
    return filaments
