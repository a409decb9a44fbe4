"""MRC reading: memory-mapped volumes in (z, y, x) order, checked for NaN/Inf.

Reading never loads a tomogram whole: after the header is validated
(:mod:`.mrc_header`) the voxels are exposed as a read-only
``numpy.memmap``, so a tomogram larger than RAM opens at once and a slice
costs only its own bytes.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import mrcfile
import numpy as np

from ..errors import InvalidVolumeError, NonFiniteError
from .mrc_header import (COMPLEX_MODES, COMPRESSED_SUFFIXES, HEADER_BYTES, VolumeInfo,
                         axis_order, header_position, read_header, sane_voxel_size,
                         stored_dtype, warn_permuted)


def open_volume(path: str | os.PathLike,
                check_finite: bool = True) -> tuple[np.ndarray, VolumeInfo]:
    """Open an MRC volume read-only and memory-mapped, in (z, y, x) order.

    ``check_finite`` inspects the header statistics and three slices (first,
    middle, last) for NaN/Inf, which a whole-file scan would cost a full read.
    """
    path = Path(path)
    if path.suffix.lower() in COMPRESSED_SUFFIXES:
        return _open_compressed(path, check_finite)
    header, info = read_header(path)
    dtype = stored_dtype(header, path)
    stored = (int(header.nz), int(header.ny), int(header.nx))
    offset = HEADER_BYTES + int(header.nsymbt)
    data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=stored)
    order = axis_order(header, path)
    if order is not None:
        data = data.transpose(order)
    if check_finite and data.dtype.kind == "f":
        bad = count_nonfinite_sample(data)
        if bad:
            raise InvalidVolumeError(
                f"{path.name} contains NaN or infinite voxels ({bad:,} in the first, middle "
                "and last slices). Replace them first, e.g. `tomoseg clean "
                f"{path.name} cleaned.mrc`.")
    return data, info


def _open_compressed(path: Path, check_finite: bool) -> tuple[np.ndarray, VolumeInfo]:
    """Compressed MRC (.mrc.gz, .mrc.bz2) cannot be memory-mapped: read it whole."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", permissive=False) as mrc:
                data = np.asarray(mrc.data)
                voxel = mrc.voxel_size
                header = mrc.header.copy()
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidVolumeError(
            f"{path.name} is not a readable compressed MRC file ({exc}).") from exc
    if int(header.mode) in COMPLEX_MODES or data.ndim != 3:
        raise InvalidVolumeError(f"{path.name} must hold one real-valued 3D volume.")
    # the same header rules as a plain file: IMOD's unsigned bytes, the axis mapping
    data = data.view(stored_dtype(header, path))
    order = axis_order(header, path)
    if order is not None:
        warn_permuted(header, path)
        data = data.transpose(order)
    vz, vy, vx = float(voxel.z), float(voxel.y), float(voxel.x)
    in_header = all(sane_voxel_size(v) for v in (vz, vy, vx))
    info = VolumeInfo(shape=tuple(data.shape), voxel_size=(vz, vy, vx) if in_header else (1.0,) * 3,
                      origin=header_position(header, (vz, vy, vx) if in_header else None,
                                             order),
                      dtype=data.dtype.newbyteorder("=").name, voxel_size_in_header=in_header,
                      header_voxel_size=vx)
    if check_finite and data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise InvalidVolumeError(f"{path.name} contains NaN or infinite voxels.")
    return data, info


def read_slices(data: np.ndarray, z0: int, z1: int, check_finite: bool = True) -> np.ndarray:
    """Slices z0..z1 as an ordinary array, refused if any voxel is NaN or infinite.

    From a plain memory-mapped MRC the bytes are read with ``pread`` instead
    of through the map, so streaming through a tomogram does not leave it
    mapped into the process (its pages would count as resident memory).
    Every slice read is checked, which costs far less than the filters that
    follow it, so no NaN reaches a network, a probability map or a pick.
    """
    if isinstance(data, np.memmap) and data.flags.c_contiguous and data.filename and data.ndim == 3:
        slice_bytes = data.shape[1] * data.shape[2] * data.dtype.itemsize
        z0, z1 = max(z0, 0), min(z1, data.shape[0])
        with open(data.filename, "rb") as handle:
            raw = os.pread(handle.fileno(), (z1 - z0) * slice_bytes, data.offset + z0 * slice_bytes)
        slab = np.frombuffer(raw, dtype=data.dtype).reshape((z1 - z0,) + data.shape[1:])
    else:
        slab = np.asarray(data[z0:z1])
    if check_finite:
        check_finite_slab(slab, max(z0, 0), getattr(data, "filename", None))
    return slab


def check_finite_volume(data: np.ndarray, source: str | os.PathLike | None = None,
                        chunk_slices: int = 16) -> None:
    """Stream through a whole volume slab by slab; NonFiniteError at the first NaN or Inf."""
    if data.dtype.kind not in "fc":
        return
    for z in range(0, data.shape[0], chunk_slices):
        slab = read_slices(data, z, z + chunk_slices, check_finite=False)
        check_finite_slab(slab, z, source or getattr(data, "filename", None))


def check_finite_slab(slab: np.ndarray, z0: int = 0,
                      source: str | os.PathLike | None = None) -> None:
    """Raise NonFiniteError naming the first bad slice if ``slab`` holds NaN or Inf."""
    if slab.dtype.kind not in "fc":
        return
    finite = np.isfinite(slab)
    if finite.all():
        return
    bad = np.count_nonzero(~finite)
    first = z0 + int(np.argmax(~finite.reshape(len(slab), -1).all(axis=1))) if slab.ndim > 1 else z0
    name = Path(source).name if source else "the tomogram"
    clean = f"`tomoseg clean {name} cleaned.mrc`" if Path(name).suffix else "`tomoseg clean`"
    raise NonFiniteError(
        f"{name} contains NaN or infinite voxels ({bad:,} in slices {z0}-{z0 + len(slab) - 1}, "
        f"the first at z={first}); replace them first, e.g. {clean}.")


def count_nonfinite_sample(data: np.ndarray) -> int:
    """Non-finite voxels in the first, middle and last z-slices."""
    nz = data.shape[0]
    return int(sum(np.count_nonzero(~np.isfinite(np.asarray(data[z])))
                   for z in sorted({0, nz // 2, nz - 1})))


def robust_contrast_limits(data: np.ndarray, low: float = 0.5,
                           high: float = 99.5) -> tuple[float, float]:
    """Percentile display range from a few slices (ignores gold and carbon outliers)."""
    nz = data.shape[0]
    slices = sorted({nz // 4, nz // 2, (3 * nz) // 4}) if data.ndim == 3 else [None]
    sample = np.concatenate([
        np.asarray(data[z] if z is not None else data, dtype=np.float32).ravel()
        for z in slices])
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(sample, [low, high])
    if hi <= lo:
        lo, hi = float(sample.min()), float(sample.max())
        if hi <= lo:
            hi = lo + 1.0
    return float(lo), float(hi)
