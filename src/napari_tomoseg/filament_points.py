"""Points along traced filaments as a user edited them: each keeps RELION's helical columns.

A point moved or added by hand joins the filament of the nearest traced point, with its
priors; its distance along the filament (rlnHelicalTrackLengthAngst) is that point's plus
the step along the filament's direction, so two points never share a track length by
accident (a copied one did, and RELION orders a tube's segments by it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from .errors import TomosegError
from .io.relion_euler import relion_matrices

COLUMNS = ("filament", "track_length", "tilt_prior", "psi_prior")


def directions(table: pd.DataFrame) -> np.ndarray:
    """(n, 3) unit directions (z, y, x) of the filaments at the rows' points: the z axis of
    RELION's matrix of (0, tilt prior, psi prior), as ``filaments.axis_angles`` made it."""
    angles = np.column_stack([np.zeros(len(table)), table["tilt_prior"].to_numpy(float),
                              table["psi_prior"].to_numpy(float)])
    return relion_matrices(angles)[:, :, 2][:, ::-1]


def as_edited(traced: pd.DataFrame, zyx: np.ndarray, voxel_size: float) -> pd.DataFrame:
    """The filament columns of the points ``zyx`` (the map's pixels) as placed now: those of
    the nearest ``traced`` point, its track length moved along the filament by the step to
    it (0 for a point that was not moved)."""
    zyx = np.asarray(zyx, float).reshape(-1, 3)
    if not len(zyx):
        return pd.DataFrame({c: pd.Series(dtype=float) for c in COLUMNS})
    if traced.empty:
        raise TomosegError("the trace found no filaments: there is nothing to join points to.")
    centres = traced[["z", "y", "x"]].to_numpy(float)
    nearest = cKDTree(centres).query(zyx)[1]
    rows = traced.iloc[nearest].reset_index(drop=True)
    step = np.einsum("ij,ij->i", (zyx - centres[nearest]) * voxel_size, directions(rows))
    table = rows[list(COLUMNS)].copy()
    table["track_length"] = rows["track_length"].to_numpy(float) + step
    return table


def tubes_from_points(table: pd.DataFrame, shape: tuple[int, int, int], voxel_size: float,
                      diameter: float) -> np.ndarray:
    """Numbered tubes on the map's grid around the filaments as their points lie now: each
    filament's points in the order of their track length, joined by straight segments (the
    traced tubes no longer match points deleted, moved or added by hand, and a restored
    session has the points only). Binned as the tracer bins, for the same speed."""
    from .filaments import _resampled, _tubes, working_binning, working_shape

    radius_px = diameter / 2 / voxel_size
    binning = working_binning(radius_px)
    work_shape = working_shape(shape, binning)
    last = np.array(work_shape, float) - 1
    paths, numbers = [], []
    known = table.dropna(subset=["filament"]).sort_values(["filament", "track_length"])
    for number, rows in known.groupby("filament", sort=True):
        work = (rows[["z", "y", "x"]].to_numpy(float) - (binning - 1) / 2) / binning
        paths.append(np.clip(_resampled(work, 0.5)[0], 0, last))
        numbers.append(int(number))
    return _tubes(paths, work_shape, radius_px / binning, binning, tuple(shape), numbers)
