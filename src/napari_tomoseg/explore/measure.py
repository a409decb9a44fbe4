"""Numbers that help judge a segmentation: volume fraction, components, densities."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def feature_numbers(mask: np.ndarray, voxel_size: float) -> dict:
    """Segmented fraction, volume in cubic micrometres and connected components of a mask."""
    mask = np.asarray(mask) > 0
    _, components = ndimage.label(mask)
    voxel_um3 = (voxel_size * 1e-4) ** 3
    return {"fraction": float(mask.mean()), "volume_um3": float(mask.sum() * voxel_um3),
            "components": int(components)}


def particle_density(count: int, shape, voxel_size: float, region: np.ndarray | None = None) -> float:
    """Particles per cubic micrometre of the tomogram (or of ``region``, e.g. the cytoplasm)."""
    voxels = float(np.count_nonzero(region)) if region is not None else float(np.prod(shape))
    volume_um3 = voxels * (voxel_size * 1e-4) ** 3
    return count / volume_um3 if volume_um3 > 0 else 0.0
