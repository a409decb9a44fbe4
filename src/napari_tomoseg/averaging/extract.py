"""Cut subtomograms out of a (memory-mapped) tomogram around coordinates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidCoordinatesError, InvalidSettingsError


@dataclass
class Subtomograms:
    """Boxes cut around particles, and which input rows they came from."""

    data: np.ndarray  # (n, box, box, box) float32, zero mean and unit variance each
    indices: np.ndarray  # row of each box in the input coordinates
    origins: np.ndarray  # (n, 3) integer (z, y, x) voxel of each box centre
    offsets: np.ndarray  # (n, 3) coordinate - origin: sub-voxel part of each position
    skipped: int  # particles dropped because their box left the tomogram
    padded: int  # particles whose box was completed with the mean
    duplicates: int = 0  # picks dropped as repeats of another (see ``repeated_picks``)


# Voxels below which two picks are one particle picked twice, whatever the box. Such
# repeats (a pick merged from two sources, a file appended twice) put one particle's noise
# in both half sets, and the FSC then agrees on noise. A wider default would drop real
# data: points along a filament or a membrane (``pick --spacing``) lie closer than a
# particle's size.
DUPLICATE_VOXELS = 2.0


def repeated_picks(zyx: np.ndarray, distance: float) -> np.ndarray:
    """Rows that lie within ``distance`` voxels of an earlier kept row (the first one stays)."""
    from scipy.spatial import cKDTree

    zyx = np.asarray(zyx, dtype=float).reshape(-1, 3)
    drop = np.zeros(len(zyx), bool)
    if len(zyx) < 2 or distance <= 0:
        return np.nonzero(drop)[0]
    for i, j in sorted(cKDTree(zyx).query_pairs(distance, output_type="ndarray").tolist()):
        if not drop[i]:  # j repeats a kept pick; a dropped one hides nothing
            drop[j] = True
    return np.nonzero(drop)[0]


def extract_subtomograms(tomogram: np.ndarray, zyx: np.ndarray, box: int,
                         edge: str = "skip", invert: bool = False,
                         progress=None) -> Subtomograms:
    """Boxes of ``box`` voxels centred (at ``box // 2``) on the nearest voxel of each pick.

    ``edge="skip"`` drops particles whose box would leave the tomogram,
    ``edge="pad"`` keeps them and fills the outside with the box mean.
    ``invert`` flips contrast so that protein is positive (tomograms show it dark).
    """
    if box < 8 or box > 512:
        raise InvalidSettingsError(f"box size {box} is outside 8-512 voxels.")
    if edge not in ("skip", "pad"):
        raise InvalidSettingsError("edge handling must be 'skip' or 'pad'.")
    zyx = np.asarray(zyx, dtype=float).reshape(-1, 3)
    if not np.all(np.isfinite(zyx)):
        raise InvalidCoordinatesError("particle coordinates must be finite numbers.")
    shape = np.array(tomogram.shape[-3:])
    if np.any(shape < box) and edge == "skip":
        size = " x ".join(str(int(s)) for s in shape)
        raise InvalidSettingsError(f"box size {box} is larger than the tomogram ({size}).")
    origins = np.round(zyx).astype(int)
    lo = origins - box // 2
    hi = lo + box
    inside = np.all((lo >= 0) & (hi <= shape), axis=1)
    touching = np.all((hi > 0) & (lo < shape), axis=1)
    keep = inside if edge == "skip" else touching
    rows = np.nonzero(keep)[0]
    data = np.empty((len(rows), box, box, box), np.float32)
    padded = 0
    for n, i in enumerate(rows):
        a, b = np.maximum(lo[i], 0), np.minimum(hi[i], shape)
        piece = np.asarray(tomogram[a[0]:b[0], a[1]:b[1], a[2]:b[2]], dtype=np.float32)
        if not inside[i]:
            padded += 1
            filled = np.full((box,) * 3, piece.mean(), np.float32)
            start = a - lo[i]
            filled[start[0]:start[0] + piece.shape[0], start[1]:start[1] + piece.shape[1],
                   start[2]:start[2] + piece.shape[2]] = piece
            piece = filled
        piece = piece - piece.mean()
        piece /= max(float(piece.std()), 1e-12)
        data[n] = -piece if invert else piece
        if progress and (n % 50 == 0 or n == len(rows) - 1):
            progress(n + 1, len(rows), "extracting subtomograms")
    return Subtomograms(data=data, indices=rows, origins=origins[rows],
                        offsets=zyx[rows] - origins[rows],
                        skipped=int(len(zyx) - len(rows)), padded=padded)
