"""MRC writing: whole volumes and slice-by-slice outputs, always atomic.

Writing goes to a temporary file in the target folder that is renamed
into place only when complete, so a crash never leaves a half-written
file that looks finished.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import mrcfile
import numpy as np

from ..errors import InvalidVolumeError
from .atomic import atomic_path
from .mrc_read import open_volume


def quantise_int8(volume: np.ndarray, sigmas: float = 4.0) -> np.ndarray:
    """Zero-mean int8 copy (1 unit = sigma * sigmas / 127): a quarter of float32 on disk."""
    volume = np.asarray(volume, dtype=np.float32)
    centred = (volume - volume.mean()) / max(float(volume.std()), 1e-12)
    return np.clip(np.round(centred * (127.0 / sigmas)), -127, 127).astype(np.int8)


def _mrc_compatible(data: np.ndarray) -> np.ndarray:
    """Cast to a dtype MRC can store without losing values."""
    data = np.asarray(data)
    kind = data.dtype.kind
    if data.dtype in (np.float32, np.float16, np.int8, np.int16, np.uint16):
        return data
    if kind == "b":
        return data.astype(np.int8)
    if kind in "iu":
        lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
        for candidate in (np.int8, np.int16, np.uint16):
            info = np.iinfo(candidate)
            if info.min <= lo and hi <= info.max:
                return data.astype(candidate)
        return data.astype(np.float32)
    if kind == "f":
        return data.astype(np.float32)
    raise InvalidVolumeError(f"cannot store data of type {data.dtype} in an MRC file.")


def _check_target(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another name or allow overwriting.")
    path.parent.mkdir(parents=True, exist_ok=True)


def _set_geometry(mrc, voxel_size, origin) -> None:
    voxel = np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,))
    org = np.broadcast_to(np.asarray(origin, dtype=float), (3,))
    mrc.voxel_size = (voxel[2], voxel[1], voxel[0])
    mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z = org[2], org[1], org[0]


def write_volume(path: str | os.PathLike, data: np.ndarray,
                 voxel_size: float | tuple[float, float, float] = 1.0,
                 origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 overwrite: bool = False) -> Path:
    """Write a (z, y, x) volume atomically, keeping voxel size and origin (Angstrom)."""
    path = Path(path)
    _check_target(path, overwrite)
    data = _mrc_compatible(data)
    if data.ndim not in (2, 3):
        raise InvalidVolumeError(f"an MRC volume must be 2D or 3D, not {data.ndim}D.")
    compression = {".gz": "gzip", ".bz2": "bzip2"}.get(path.suffix.lower())
    with atomic_path(path) as tmp:
        with mrcfile.new(tmp, overwrite=True, compression=compression) as mrc:
            mrc.set_data(np.ascontiguousarray(data))
            _set_geometry(mrc, voxel_size, origin)
    return path


@contextlib.contextmanager
def new_volume(path: str | os.PathLike, shape: tuple[int, int, int], dtype=np.float32,
               voxel_size: float | tuple[float, float, float] = 1.0,
               origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
               overwrite: bool = False) -> Iterator[np.ndarray]:
    """A writable memory-mapped volume that appears at ``path`` only on success.

    Large outputs (segmentations) are written slice by slice into the
    yielded array; an exception inside the block removes the partial file.
    """
    path = Path(path)
    _check_target(path, overwrite)
    with atomic_path(path) as tmp:
        with mrcfile.new_mmap(tmp, shape=tuple(shape), mrc_mode=mrcfile.utils.mode_from_dtype(
                np.dtype(dtype)), overwrite=True) as mrc:
            _set_geometry(mrc, voxel_size, origin)
            yield mrc.data
            mrc.update_header_stats()


def replace_nonfinite(src: str | os.PathLike, dst: str | os.PathLike,
                      chunk_slices: int = 16) -> int:
    """Copy ``src`` to ``dst`` with NaN/Inf voxels set to the mean of the finite ones.

    Streams slab by slab so it works on tomograms larger than memory;
    returns the number of voxels replaced.
    """
    data, info = open_volume(src, check_finite=False)
    total, count = 0.0, 0
    for z in range(0, data.shape[0], chunk_slices):
        slab = np.asarray(data[z:z + chunk_slices], dtype=np.float64)
        finite = np.isfinite(slab)
        total += float(slab[finite].sum())
        count += int(finite.sum())
    fill = total / count if count else 0.0
    replaced = 0
    out_dtype = np.float32 if data.dtype.kind == "f" else data.dtype
    with new_volume(dst, info.shape, out_dtype, info.voxel_size, info.origin) as out:
        for z in range(0, data.shape[0], chunk_slices):
            slab = np.asarray(data[z:z + chunk_slices])
            bad = ~np.isfinite(slab)
            replaced += int(bad.sum())
            out[z:z + chunk_slices] = np.where(bad, fill, slab)
    return replaced
