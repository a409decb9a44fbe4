"""Smooth surfaces of segmentations (marching cubes), in world coordinates (Angstrom)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage import measure

from ..errors import InvalidSettingsError


@dataclass
class Surface:
    vertices: np.ndarray  # (n, 3) z, y, x in Angstrom (world)
    faces: np.ndarray  # (m, 3) vertex indices
    area_nm2: float

    def as_layer_data(self) -> tuple[np.ndarray, np.ndarray]:
        return self.vertices, self.faces


MESH_VOXELS = 32_000_000  # marching cubes over more takes minutes and gives millions of faces


def default_mesh_step(shape: tuple[int, ...], budget: int = MESH_VOXELS) -> int:
    """The smallest step (1-8 voxels) that keeps the voxels marched within ``budget``: at
    step 1 a 1024 x 1024 x 256 map was one uninterruptible call and a mesh napari crawled on."""
    voxels = float(np.prod(shape))
    return int(min(8, max(1, np.ceil((voxels / budget) ** (1 / 3) - 1e-9))))


def surface_from_volume(volume: np.ndarray, threshold: float, voxel_size: float,
                        origin=(0.0, 0.0, 0.0), step: int = 1) -> Surface:
    """Marching cubes at ``threshold``; ``step`` > 1 skips voxels for a lighter mesh."""
    data = np.asarray(volume, dtype=np.float32)
    if not data.min() < threshold < data.max():
        raise InvalidSettingsError(f"nothing crosses the threshold {threshold:g} "
                                   f"(values {data.min():g} to {data.max():g}).")
    if step < 1:
        raise InvalidSettingsError("the mesh step must be at least 1 voxel.")
    vertices, faces, _, _ = measure.marching_cubes(np.pad(data, 1, constant_values=data.min()),
                                                   threshold, step_size=step)
    vertices = (vertices - 1) * voxel_size + np.asarray(origin, dtype=float)
    area = measure.mesh_surface_area(vertices, faces) / 100.0
    return Surface(vertices.astype(np.float32), faces.astype(np.int32), float(area))
