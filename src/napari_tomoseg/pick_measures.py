"""What the picker measures at a candidate peak: its mass above the threshold, its roundness."""

from __future__ import annotations

import numpy as np


def roundness(smooth: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """Smallest over largest curvature of ``smooth`` at each peak: 1 a ball, 0 a sheet or ridge.

    The Hessian from central differences, zero beyond the volume as in the smoothing (a
    peak on a face voxel reads as curved there; such caps rarely have a particle's mass).
    A particle is compact; a carbon edge or membrane the network mistook for one is
    flat or long, so one of its curvatures is near zero.
    """
    if len(peaks) == 0:
        return np.zeros(0)
    f = np.pad(smooth, 1)
    z, y, x = (np.asarray(peaks, int) + 1).T

    def at(dz: int, dy: int, dx: int) -> np.ndarray:
        return f[z + dz, y + dy, x + dx].astype(float)

    centre = at(0, 0, 0)
    hessian = np.empty((len(z), 3, 3))
    steps = ((1, 0, 0), (0, 1, 0), (0, 0, 1))
    for i, a in enumerate(steps):
        hessian[:, i, i] = at(*a) - 2 * centre + at(*(-np.array(a)))
        for j in range(i + 1, 3):
            b = np.array(steps[j])
            plus, minus = np.array(a) + b, np.array(a) - b
            hessian[:, i, j] = hessian[:, j, i] = (at(*plus) - at(*minus) - at(*(-minus))
                                                   + at(*(-plus))) / 4
    magnitude = np.abs(np.linalg.eigvalsh(hessian))
    largest = magnitude.max(axis=1)
    return np.where(largest > 0, magnitude.min(axis=1) / np.maximum(largest, 1e-30), 0.0)


def mass_at(above: np.ndarray, peaks: np.ndarray, radius: float) -> np.ndarray:
    """Voxels of ``above`` within ``radius`` of each peak (a ball sum, only where asked)."""
    r = int(np.ceil(radius))
    zz, yy, xx = np.mgrid[-r:r + 1, -r:r + 1, -r:r + 1]
    ball = zz ** 2 + yy ** 2 + xx ** 2 <= radius ** 2
    padded = np.pad(above, r)
    return np.array([np.count_nonzero(padded[z:z + 2 * r + 1, y:y + 2 * r + 1, x:x + 2 * r + 1]
                                      & ball) for z, y, x in peaks], dtype=float)


# the relative cut never asks more than this: ideal balls cut by the volume's faces read
# 0.30-0.34 (tests/test_picking.py), and a map of such balls (median ~0.9) would drop them
# at 0.3; on the benchmark's maps (0.5 x median 0.16-0.30) 0.25 gave the same F1 as 0.3
RELATIVE_ROUNDNESS_CAP = 0.25
MIN_PICKS_FOR_MEDIAN = 8  # fewer picks say too little about what round is in this map


def relative_roundness_cut(picked: np.ndarray, relative: float) -> float:
    """The roundness a pick must reach besides the absolute minimum: ``relative`` times the
    median roundness of the picks made with it (capped), 0 when off or too few picks.

    A fixed cut must suit the sharpest map (whose true particles read flatter), so it is
    low; relative to the map's own picks it follows the map: on the benchmark's 17 ribosome
    maps 0.5 x the median raised pick F1 from 0.879 / 0.918 to 0.889 / 0.931 (docs/engine.md).
    """
    finite = np.asarray(picked, float)
    finite = finite[np.isfinite(finite)]  # NaN: components, not measured
    if relative <= 0 or len(finite) < MIN_PICKS_FOR_MEDIAN:
        return 0.0
    return min(relative * float(np.median(finite)), RELATIVE_ROUNDNESS_CAP)
