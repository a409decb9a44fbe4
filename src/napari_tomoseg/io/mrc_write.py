"""MRC writing: whole volumes and slice-by-slice outputs, always atomic.

Writing goes to a temporary file in the target folder that is renamed
into place only when complete, so a crash never leaves a half-written
file that looks finished.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import mrcfile
import numpy as np

from ..errors import InvalidVolumeError
from .atomic import atomic_path, commit_partial, partial_path, raise_for_user
from .mrc_header import PermutedAxesWarning
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
        raise FileExistsError(f"{path} exists; choose another name or use --overwrite.")
    path.parent.mkdir(parents=True, exist_ok=True)


def _set_geometry(mrc, voxel_size, origin) -> None:
    voxel = np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,))
    org = np.broadcast_to(np.asarray(origin, dtype=float), (3,))
    mrc.voxel_size = (voxel[2], voxel[1], voxel[0])
    mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z = org[2], org[1], org[0]


def write_volume(path: str | os.PathLike, data: np.ndarray,
                 voxel_size: float | tuple[float, float, float] = 1.0,
                 origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 overwrite: bool = False, labels: tuple[str, ...] = ()) -> Path:
    """Write a (z, y, x) volume atomically, keeping voxel size and origin (Angstrom);
    ``labels``: MRC header labels (80 characters each)."""
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
            for text in labels:
                mrc.add_label(text)
    return path


class MrcStream:
    """Write an MRC slab by slab with ordinary file writes; it appears at ``path`` only
    when ``finish`` renames it into place (``abort``, or leaving a ``with`` block by an
    exception, removes it). Header statistics are gathered on the way, so nothing is
    read back. Plain writes, not a memory map: pages are not kept dirty in memory.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, int, int], dtype=np.float32,
                 voxel_size: float | tuple[float, float, float] = 1.0,
                 origin: tuple[float, float, float] = (0.0, 0.0, 0.0), overwrite: bool = False,
                 labels: tuple[str, ...] = ()):
        self.path = Path(path)
        _check_target(self.path, overwrite)
        self.tmp = partial_path(self.path)
        self.handle = None
        try:  # a bad header, a full disk or a file-size limit: leave no partial behind
            self.dtype = self._start(shape, np.dtype(dtype), voxel_size, origin, labels)
            self.slice_bytes = int(shape[1]) * int(shape[2]) * self.dtype.itemsize
            self.handle = open(self.tmp, "r+b")
            self.handle.truncate(self.offset + self.slice_bytes * int(shape[0]))
        except OSError as exc:
            self.abort()
            raise_for_user(exc, self.tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self.stats = [np.inf, -np.inf, 0.0, 0.0, 0]  # min, max, sum, sum of squares, count

    def _start(self, shape, dtype: np.dtype, voxel_size, origin, labels) -> np.dtype:
        """Write the header; returns the type stored (mrcfile widens uint8 to uint16)."""
        with mrcfile.new(self.tmp, overwrite=True) as mrc:
            mrc.set_data(np.zeros((1, 1, 1), dtype))  # a header for the whole shape follows
            mrc.header.nx, mrc.header.ny, mrc.header.nz = shape[2], shape[1], shape[0]
            mrc.header.mx, mrc.header.my, mrc.header.mz = shape[2], shape[1], shape[0]
            _set_geometry(mrc, voxel_size, origin)
            for text in labels:
                mrc.add_label(text)
            self.offset = 1024 + int(mrc.header.nsymbt)
            return np.dtype(mrc.data.dtype).newbyteorder("=")

    def write(self, z0: int, data: np.ndarray) -> None:
        """Slices z0.. of the volume."""
        data = np.ascontiguousarray(data, dtype=self.dtype)
        if data.size == 0:
            return
        try:
            self.handle.seek(self.offset + z0 * self.slice_bytes)
            self.handle.write(data.tobytes())
        except OSError as exc:
            raise_for_user(exc, self.tmp, self.path)
        values = data.astype(np.float64)
        self.stats[0] = min(self.stats[0], float(values.min()))
        self.stats[1] = max(self.stats[1], float(values.max()))
        self.stats[2] += float(values.sum())
        self.stats[3] += float((values ** 2).sum())
        self.stats[4] += values.size

    def finish(self) -> Path:
        try:
            self.handle.close()
            lo, hi, total, squares, count = self.stats
            with mrcfile.mmap(self.tmp, mode="r+") as mrc:
                mean = total / max(count, 1)
                mrc.header.dmin, mrc.header.dmax, mrc.header.dmean = lo, hi, mean
                mrc.header.rms = float(np.sqrt(max(squares / max(count, 1) - mean ** 2, 0.0)))
            return commit_partial(self.tmp, self.path)
        except OSError as exc:
            self.abort()
            raise_for_user(exc, self.tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        if self.handle is not None and not self.handle.closed:
            self.handle.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "MrcStream":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.finish()
        else:
            self.abort()


def replace_nonfinite(src: str | os.PathLike, dst: str | os.PathLike,
                      chunk_slices: int = 16, overwrite: bool = False) -> int:
    """Copy ``src`` to ``dst`` with NaN/Inf voxels set to the mean of the finite ones.

    Streams slab by slab so it works on tomograms larger than memory;
    returns the number of voxels replaced. ``dst`` is a plain MRC, never ``src`` itself.
    """
    from .mrc_header import MRC_SUFFIXES
    from .paths import check_outputs

    if Path(dst).suffix.lower() not in MRC_SUFFIXES:  # c.mrc.gz was an uncompressed MRC
        raise InvalidVolumeError(f"{dst}: the copy is written as a plain MRC; name it "
                                 f"{', '.join(MRC_SUFFIXES[:2])} or similar.")
    check_outputs([dst], [src], overwrite, option="output file")  # in place: a bad copy
    with warnings.catch_warnings():  # the copy is the remedy the warning suggests
        warnings.simplefilter("ignore", PermutedAxesWarning)
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
    # a header without a usable voxel size stays without one (not the 1 A assumed on reading)
    voxel = info.voxel_size if info.voxel_size_in_header else 0.0
    with MrcStream(dst, info.shape, out_dtype, voxel, info.origin, overwrite=overwrite) as out:
        for z in range(0, data.shape[0], chunk_slices):
            slab = np.asarray(data[z:z + chunk_slices])
            bad = ~np.isfinite(slab)
            replaced += int(bad.sum())
            out.write(z, np.where(bad, fill, slab))
    return replaced
