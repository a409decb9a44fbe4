"""Which tomogram a session belongs to: the file's bytes, and its voxels apart from its header.

A session remembers both, so a restore can tell the same file (restore), the same voxels
under a changed header (rebind), and another tomogram (a new session beside it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np


def fingerprint(path: str | os.PathLike) -> str:
    """Cheap identity of a tomogram file: size plus a hash of its first and last MiB."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha1(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(2 ** 20))
        handle.seek(max(size - 2 ** 20, 0))
        digest.update(handle.read(2 ** 20))
    return digest.hexdigest()


def data_checksum(volume: np.ndarray, slices: int = 16, rows: int = 64) -> str:
    """Identity of a volume's voxel values, blind to its header (origin, voxel size, mode).

    Hashes the shape and the values (as float64) of up to ``slices``
    evenly spaced slices, every n-th row of each (about ``rows`` rows):
    a few MiB read even for a 32 GiB tomogram.
    """
    nz, ny = int(volume.shape[0]), int(volume.shape[1])
    digest = hashlib.sha1(repr(tuple(int(s) for s in volume.shape)).encode())
    step = max(1, ny // rows)
    for z in np.unique(np.linspace(0, nz - 1, min(nz, slices)).round().astype(int)):
        digest.update(np.ascontiguousarray(volume[z, ::step], dtype="<f8").tobytes())
    return digest.hexdigest()


def file_checksum(path: str | os.PathLike) -> tuple[str, tuple[float, float, float]]:
    """``data_checksum`` of an MRC file's voxels, and the origin in its header (z, y, x)."""
    from .io.mrc import open_volume

    volume, info = open_volume(path, check_finite=False)
    return data_checksum(volume), tuple(float(o) for o in info.origin)
