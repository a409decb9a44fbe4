"""Complexes of ribosome-like size that are not ribosomes: what makes picking hard.

Real cytoplasm holds proteasomes, chaperonins, polysome neighbours and
other 15-30 nm complexes. A picker that has learnt "a dark blob of 25 nm"
takes them all; one that has learnt the ribosome's shape does not. Two
shapes are drawn, both of the ribosome's mass (integrated density): a barrel (four stacked rings,
proteasome-like, 15 x 24 nm) and a compact dumb-bell of two 13 nm lobes.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def _barrel_nm() -> np.ndarray:
    """(x, y, z, sigma, weight) blobs in nm: four rings of seven along z."""
    rows = []
    for ring, z in enumerate((-9.0, -3.0, 3.0, 9.0)):
        radius = 5.5 if ring in (0, 3) else 6.5
        for k in range(7):
            a = 2 * np.pi * k / 7 + ring * 0.2
            rows.append([radius * np.cos(a), radius * np.sin(a), z, 2.4, 0.55])
    return np.asarray(rows)


def _dumbbell_nm() -> np.ndarray:
    return np.asarray([[0.0, 0.0, -6.5, 4.8, 1.0], [0.0, 0.0, 6.5, 4.8, 1.0],
                       [0.0, 0.0, 0.0, 3.0, 0.6]])


def _mass(blobs_nm: np.ndarray) -> float:
    """Integrated density of Gaussian blobs (weight x (2 pi)^1.5 sigma^3, in nm^3)."""
    return float(np.sum(blobs_nm[:, 4] * blobs_nm[:, 3] ** 3) * (2 * np.pi) ** 1.5)


def _ribosome_mass_like(blobs_nm: np.ndarray) -> np.ndarray:
    """The blobs with weights scaled to the ribosome's integrated density: as drawn before,
    a barrel held 60% and a dumb-bell 67% of it, so a picker could reject them by contrast
    alone instead of by shape (an audit of the yardstick)."""
    from .ribosome import _BLOBS_NM

    scaled = blobs_nm.copy()
    scaled[:, 4] *= _mass(_BLOBS_NM) / _mass(blobs_nm)
    return scaled


SHAPES = {"barrel": _ribosome_mass_like(_barrel_nm()),
          "dumbbell": _ribosome_mass_like(_dumbbell_nm())}
RADIUS_NM = 12.0


def _render(out: np.ndarray, blobs_nm: np.ndarray, centre_zyx: np.ndarray,
            rotation: np.ndarray, voxel_size: float, weight: float) -> None:
    scale = 10.0 / voxel_size
    xyz = blobs_nm[:, :3] * scale @ rotation.T
    zyx = xyz[:, ::-1] + centre_zyx
    sigmas = blobs_nm[:, 3] * scale
    reach = float(np.abs(xyz).max() + 3 * sigmas.max()) + 1
    lo = np.maximum(np.floor(centre_zyx - reach).astype(int), 0)
    hi = np.minimum(np.ceil(centre_zyx + reach).astype(int) + 1, out.shape)
    if np.any(hi <= lo):
        return
    g = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    box = np.zeros(tuple(hi - lo), np.float32)
    for (cz, cy, cx), sigma, w in zip(zyx, sigmas, blobs_nm[:, 4]):
        box += (w * np.exp(-((g[0] - cz) ** 2 + (g[1] - cy) ** 2 + (g[2] - cx) ** 2)
                           / (2 * sigma ** 2))).astype(np.float32)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += weight * box


def render_distractors(shape: tuple[int, int, int], voxel_size: float, density_per_um3: float,
                       free: np.ndarray, avoid_zyx: np.ndarray, avoid_radius: float,
                       rng: np.random.Generator, weight: float = 1.3
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Density of distractor complexes placed in ``free`` voxels, clear of ``avoid_zyx``.

    Returns the density and the centres (pixels, z y x). ``avoid_radius`` is
    the clearance (pixels) kept from the centres to avoid (the ribosomes).
    """
    volume_um3 = np.prod(shape) * (voxel_size * 1e-4) ** 3
    target = int(round(density_per_um3 * volume_um3 * free.mean()))
    radius = RADIUS_NM * 10.0 / voxel_size
    density = np.zeros(shape, np.float32)
    candidates = np.argwhere(free[::2, ::2, ::2]) * 2
    centres: list[np.ndarray] = []
    avoid = np.asarray(avoid_zyx, float).reshape(-1, 3)
    if target == 0 or len(candidates) == 0:
        return density, np.zeros((0, 3))
    margin = radius * 0.6
    for i in rng.permutation(len(candidates))[: target * 40]:
        c = candidates[i] + rng.uniform(-1, 1, 3)
        if np.any(c < margin) or np.any(c > np.asarray(shape) - 1 - margin):
            continue
        if len(avoid) and np.min(np.sum((avoid - c) ** 2, axis=1)) < (avoid_radius + radius) ** 2:
            continue
        if centres and np.min(np.sum((np.asarray(centres) - c) ** 2, axis=1)) < (2.05 * radius) ** 2:
            continue
        centres.append(c)
        blobs = SHAPES["barrel" if len(centres) % 2 else "dumbbell"]
        _render(density, blobs, c, Rotation.random(random_state=rng).as_matrix(), voxel_size,
                weight)
        if len(centres) >= target:
            break
    return density, np.asarray(centres).reshape(-1, 3)


def add_distractors(canvas, rng: np.random.Generator, inside: np.ndarray, ribosomes: np.ndarray,
                    ribosome_radius: float) -> None:
    """Render distractors into a cell's canvas (density, occupied) where it is free."""
    spec = canvas.spec
    density, _ = render_distractors(spec.shape, spec.voxel_size, spec.distractor_density_per_um3,
                                    inside & ~canvas.occupied, ribosomes, ribosome_radius, rng)
    canvas.density += density
    canvas.occupied |= density > 0.2
