"""Pick particles from a probability map and write them in the format the file names."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..io.mrc import check_finite_volume
from ..io.particle_files import check_particle_output, eman2_box_size, write_particles
from ..io.particles import TomogramFrame
from ..picking import PickSettings, check_same_grid, dropped_note, pick_particles, sample_along
from ..probability_maps import as_probability
from .progress import Job, Progress, raise_if_stopped


def pick_job(probability: np.ndarray, frame: TomogramFrame, settings: PickSettings,
             feature: str, output: str | os.PathLike | None = None,
             spacing: float | None = None,
             exclude: np.ndarray | None = None,
             overwrite: bool = True) -> Job[pd.DataFrame]:
    """Particles of ``feature`` in ``frame``'s pixels; written to ``output`` (STAR, JSON, CSV).

    With ``spacing`` (Angstrom) points are laid along the mask above the
    threshold instead (filaments, membranes). ``exclude``: voxels of artifacts
    (carbon) where no pick may lie. An existing ``output`` is replaced only with
    ``overwrite`` (batch reruns do; the CLI asks for --overwrite).
    """
    yield Progress(0, 2, f"picking {feature}")
    if output is not None:  # before the work: refused outputs cost nothing
        check_particle_output(output, overwrite=overwrite)
    check_finite_volume(probability, feature)
    if spacing is not None:
        mask = as_probability(probability, name=f"the {feature} map") > settings.threshold
        if exclude is not None:
            check_same_grid(exclude, mask.shape)
            mask &= ~np.asarray(exclude, bool)
        table = sample_along(mask, spacing, frame.voxel_size)
    else:
        prob = as_probability(probability, name=f"the {feature} map")
        table = pick_particles(prob, frame.voxel_size, settings, exclude,
                               should_stop=raise_if_stopped)
    table["feature"] = feature
    said = f"{len(table)} {feature} picks" + dropped_note(table)
    yield Progress(1, 2, said)
    if output is not None:
        write_particles(Path(output), table, frame, feature=feature, overwrite=overwrite,
                        box_size=eman2_box_size(settings.diameter, frame.voxel_size))
    yield Progress(2, 2, said)
    return table
