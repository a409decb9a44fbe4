"""Explore's whole-volume computations: a surface mesh and a segmentation's numbers."""

from __future__ import annotations

import numpy as np

from ..explore.measure import feature_numbers
from ..explore.surfaces import Surface, surface_from_volume
from .progress import Job, Progress


def surface_job(volume: np.ndarray, threshold: float, voxel_size: float,
                origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
                step: int = 1) -> Job[Surface]:
    """A smooth surface at ``threshold`` (marching cubes, world Angstrom)."""
    yield Progress(0, 1, "computing the surface")
    surface = surface_from_volume(volume, threshold, voxel_size, origin, step)
    yield Progress(1, 1, f"{len(surface.faces):,} triangles")
    return surface


def numbers_job(volume: np.ndarray, threshold: float, voxel_size: float) -> Job[dict]:
    """Fraction, volume and components of the voxels above ``threshold``."""
    yield Progress(0, 1, "measuring")
    numbers = feature_numbers(np.asarray(volume) > threshold, voxel_size)
    numbers["shape"] = tuple(np.shape(volume))
    yield Progress(1, 1, "measured")
    return numbers
