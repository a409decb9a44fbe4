"""Pick particles from a probability map and write them in the format the file names."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..io.mrc import check_finite_volume
from ..io.particle_files import eman2_box_size, write_particles
from ..io.particles import TomogramFrame
from ..picking import PickSettings, check_same_grid, pick_particles, sample_along
from ..probability_maps import as_probability
from .progress import Job, Progress


def pick_job(probability: np.ndarray, frame: TomogramFrame, settings: PickSettings,
             feature: str, output: str | os.PathLike | None = None,
             spacing: float | None = None,
             exclude: np.ndarray | None = None) -> Job[pd.DataFrame]:
    """Particles of ``feature`` in ``frame``'s pixels; written to ``output`` (STAR, JSON, CSV).

    With ``spacing`` (Angstrom) points are laid along the mask above the
    threshold instead (filaments, membranes). ``exclude``: voxels of artifacts
    (carbon) where no pick may lie.
    """
    yield Progress(0, 2, f"picking {feature}")
    check_finite_volume(probability, feature)
    if spacing is not None:
        mask = as_probability(probability) > settings.threshold
        if exclude is not None:
            check_same_grid(exclude, mask.shape)
            mask &= ~np.asarray(exclude, bool)
        table = sample_along(mask, spacing, frame.voxel_size)
    else:
        table = pick_particles(np.asarray(probability), frame.voxel_size, settings, exclude)
    table["feature"] = feature
    yield Progress(1, 2, f"{len(table)} {feature} picks")
    if output is not None:
        write_particles(Path(output), table, frame, feature=feature,
                        box_size=eman2_box_size(settings.diameter, frame.voxel_size))
    yield Progress(2, 2, f"{len(table)} {feature} picks")
    return table
