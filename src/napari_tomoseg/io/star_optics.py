"""The pixel size RELION's ``rlnCoordinateX/Y/Z`` are in: the particle's optics group's
``rlnTomoTiltSeriesPixelSize`` (unbinned tilt-series pixels)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from .particles import CoordinateWarning


def particle_pixel_sizes(optics: pd.DataFrame | None, particles: pd.DataFrame
                         ) -> np.ndarray | None:
    """``rlnTomoTiltSeriesPixelSize`` of each particle's optics group, one per row (the
    first particle's group stood for all: a second group at 4 A was read at 2 A)."""
    if optics is None or "rlnTomoTiltSeriesPixelSize" not in optics or not len(optics):
        return None
    values = optics["rlnTomoTiltSeriesPixelSize"].astype(float).to_numpy()
    if not np.all(np.isfinite(values) & (values > 0)):  # 0 (unknown): this tomogram's pixels
        return None
    if not ("rlnOpticsGroup" in optics and "rlnOpticsGroup" in particles):
        return np.full(len(particles), values[0])
    by_group = dict(zip(optics["rlnOpticsGroup"].astype(int), values))
    groups = particles["rlnOpticsGroup"].astype(int).to_numpy()
    unknown = sorted(set(groups.tolist()) - set(by_group))
    if unknown:
        warnings.warn(f"optics group {unknown[0]} of some particles is not in the optics block: "
                      f"read at the first group's pixel size ({values[0]:g} A).",
                      CoordinateWarning, stacklevel=4)
    return np.array([by_group.get(g, values[0]) for g in groups], float)
