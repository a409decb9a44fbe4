"""MRC volumes: validated, memory-mapped reading and atomic writing.

Reading never loads a tomogram whole: the header is parsed by ``mrcfile``
and checked against the file size, then the voxels are exposed as a
read-only ``numpy.memmap`` in (z, y, x) order, so a tomogram larger than
RAM opens at once and a slice costs only its own bytes.

Writing goes to a temporary file in the target folder that is renamed
into place only when complete, so a crash never leaves a half-written
file that looks finished.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from ..errors import InvalidSettingsError, InvalidVolumeError, NonFiniteError
from .atomic import atomic_path, is_partial

MRC_SUFFIXES = (".mrc", ".rec", ".st", ".ali", ".map", ".mrcs")
COMPRESSED_SUFFIXES = (".gz", ".bz2")
HEADER_BYTES = 1024
# IMOD marks files it wrote with this stamp; bit 0 of imodFlags set means
# mode 0 bytes are signed. Older IMOD files without the bit are unsigned.
_IMOD_STAMP = 1146047817
_COMPLEX_MODES = (3, 4)
# voxel sizes (Angstrom) outside this range are not believed: no tomogram is finer
# than 0.1 A per voxel, and 1000 A per voxel would leave a cell a few voxels wide
VOXEL_SIZE_RANGE = (0.1, 1000.0)


@dataclass(frozen=True)
class VolumeInfo:
    """Geometry of a volume in napari's (z, y, x) order; lengths in Angstrom."""

    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    origin: tuple[float, float, float]
    dtype: str
    voxel_size_in_header: bool = True
    header_voxel_size: float | None = None  # the x voxel size as the header gave it

    @property
    def isotropic_voxel_size(self) -> float:
        return float(self.voxel_size[-1])


def sane_voxel_size(value: float) -> bool:
    return bool(np.isfinite(value)) and VOXEL_SIZE_RANGE[0] <= value <= VOXEL_SIZE_RANGE[1]


def require_voxel_size(info: VolumeInfo, path: str | os.PathLike, given: float | None = None,
                       hint: str = "give it with --voxel-size (Angstrom per voxel)") -> VolumeInfo:
    """``info`` with a voxel size the user can trust, or a clear error.

    ``given`` (e.g. ``--voxel-size``) replaces the header's value; a header
    without a usable voxel size (0, negative, absurd) is refused instead of
    being taken as 1 A, which would rescale the data by orders of magnitude.
    """
    low, high = VOXEL_SIZE_RANGE
    if given is not None:
        if not sane_voxel_size(given):
            raise InvalidSettingsError(
                f"the voxel size must lie between {low:g} and {high:g} A, not {given:g}.")
        return dataclasses.replace(info, voxel_size=(float(given),) * 3, voxel_size_in_header=True)
    if not info.voxel_size_in_header:
        raise InvalidVolumeError(
            f"{Path(path).name} has no usable voxel size in its header "
            f"({info.header_voxel_size if info.header_voxel_size is not None else 'none'} A); "
            f"{hint}.")
    return info


def _header_size_problem(path: Path, header, dtype: np.dtype, shape) -> str | None:
    expected = HEADER_BYTES + int(header.nsymbt) + int(np.prod(shape)) * dtype.itemsize
    actual = path.stat().st_size
    if actual == expected:
        return None
    dims = " x ".join(str(int(n)) for n in (header.nx, header.ny, header.nz))
    kind = "is truncated or its header is wrong" if actual < expected else (
        "has more data than its header describes")
    return (f"{path.name} {kind}: the header promises {dims} voxels of {dtype.name} "
            f"({expected:,} bytes with headers) but the file holds {actual:,} bytes.")


def _dtype_for(header, path: Path) -> np.dtype:
    mode = int(header.mode)
    if mode in _COMPLEX_MODES:
        raise InvalidVolumeError(
            f"{path.name} holds complex numbers (MRC mode {mode}, e.g. a Fourier "
            "transform); napari-tomoseg needs a real-valued tomogram.")
    try:
        dtype = mrcfile.utils.data_dtype_from_header(header)
    except ValueError as exc:
        raise InvalidVolumeError(
            f"{path.name} has an unknown MRC data mode {mode}.") from exc
    if mode == 0 and _imod_unsigned_bytes(header):
        dtype = np.dtype(np.uint8)
    return dtype


def _imod_origin_sign(header) -> float:
    """-1 for a file IMOD wrote with its own origin sign, else 1.

    IMOD's origin is "the origin of the coordinate system relative to the
    first pixel" (html/mrc_format.txt), the negative of the MRC2014 origin.
    Its reader (libiimod/mrcfiles.c mrc_head_read) inverts the stored value
    for files with a standard nversion or IMOD flag 4; files IMOD wrote
    without that flag (IMOD writes it only when asked or when the origin is
    zero) hold its own sign.
    """
    extra2 = bytes(np.asarray(header.extra2).tobytes())  # header bytes 112-195
    order = "<" if header.mode.dtype.byteorder in "<=|" else ">"
    stamp, flags = np.frombuffer(extra2[40:48], dtype=f"{order}i4")
    standard = 20140 <= int(header.nversion) < 30000
    return -1.0 if int(stamp) == _IMOD_STAMP and not int(flags) & 4 and not standard else 1.0


def _imod_unsigned_bytes(header) -> bool:
    """IMOD stamp (header bytes 152-155) without the signed-bytes flag (bytes 156-159)."""
    extra2 = bytes(np.asarray(header.extra2).tobytes())  # header bytes 112-195
    order = "<" if header.mode.dtype.byteorder in "<=|" else ">"
    stamp, flags = np.frombuffer(extra2[40:48], dtype=f"{order}i4")
    return int(stamp) == _IMOD_STAMP and not int(flags) & 1


def _axis_order(header, path: Path) -> tuple[int, int, int] | None:
    """Transpose needed to bring the stored axes to (z, y, x), or None."""
    mapping = (int(header.mapc), int(header.mapr), int(header.maps))
    if mapping == (1, 2, 3) or mapping == (0, 0, 0):
        return None
    if sorted(mapping) != [1, 2, 3]:
        raise InvalidVolumeError(
            f"{path.name} has an invalid axis mapping (mapc, mapr, maps) = {mapping}.")
    # stored array axes are (sections, rows, columns) = axes (maps, mapr, mapc)
    stored = (mapping[2], mapping[1], mapping[0])
    return tuple(stored.index(axis) for axis in (3, 2, 1))


def read_header(path: str | os.PathLike) -> tuple[object, VolumeInfo]:
    """Parse and validate an MRC header; raises InvalidVolumeError with a clear reason."""
    path = Path(path)
    if not path.exists():
        raise InvalidVolumeError(f"{path} does not exist.")
    if path.is_dir():
        raise InvalidVolumeError(f"{path} is a folder, not an MRC file.")
    if is_partial(path):
        raise InvalidVolumeError(f"{path.name} is an unfinished output (a partial file left by an "
                                 "interrupted write), not a result; delete it.")
    if path.stat().st_size < HEADER_BYTES:
        raise InvalidVolumeError(
            f"{path.name} is not an MRC file: it is {path.stat().st_size} bytes long, "
            f"shorter than the {HEADER_BYTES}-byte MRC header.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with mrcfile.open(path, mode="r", header_only=True, permissive=False) as mrc:
                header = mrc.header.copy()
                voxel = mrc.voxel_size.copy()
    except ValueError as exc:
        raise InvalidVolumeError(f"{path.name} is not a valid MRC file ({exc}).") from exc
    dtype = _dtype_for(header, path)
    if mrcfile.utils.spacegroup_is_volume_stack(int(header.ispg)):
        raise InvalidVolumeError(
            f"{path.name} is a stack of volumes (4D, space group {int(header.ispg)}); "
            "open one tomogram at a time.")
    shape_xyz = (int(header.nx), int(header.ny), int(header.nz))
    if min(shape_xyz) < 1:
        raise InvalidVolumeError(f"{path.name} has an empty dimension: nx, ny, nz = {shape_xyz}.")
    stored_shape = (shape_xyz[2], shape_xyz[1], shape_xyz[0])
    problem = _header_size_problem(path, header, dtype, stored_shape)
    if problem:
        raise InvalidVolumeError(problem)
    vx, vy, vz = (float(voxel.x), float(voxel.y), float(voxel.z))
    raw_voxel = vx
    in_header = all(sane_voxel_size(v) for v in (vx, vy, vz))
    if not in_header:
        vx = vy = vz = 1.0
    sign = _imod_origin_sign(header)
    origin = tuple(sign * float(getattr(header.origin, a)) for a in "zyx")
    if not all(np.isfinite(origin)):
        origin = (0.0, 0.0, 0.0)
    order = _axis_order(header, path)
    shape = stored_shape if order is None else tuple(stored_shape[i] for i in order)
    info = VolumeInfo(shape=shape, voxel_size=(vz, vy, vx), origin=origin,
                      dtype=dtype.newbyteorder("=").name, voxel_size_in_header=in_header,
                      header_voxel_size=raw_voxel)
    return header, info


def open_volume(path: str | os.PathLike, check_finite: bool = True) -> tuple[np.ndarray, VolumeInfo]:
    """Open an MRC volume read-only and memory-mapped, in (z, y, x) order.

    ``check_finite`` inspects the header statistics and three slices (first,
    middle, last) for NaN/Inf, which a whole-file scan would cost a full read.
    """
    path = Path(path)
    if path.suffix.lower() in COMPRESSED_SUFFIXES:
        return _open_compressed(path, check_finite)
    header, info = read_header(path)
    dtype = _dtype_for(header, path)
    stored = (int(header.nz), int(header.ny), int(header.nx))
    offset = HEADER_BYTES + int(header.nsymbt)
    data = np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=stored)
    order = _axis_order(header, path)
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
                origin = mrc.header.origin
                sign = _imod_origin_sign(mrc.header)
                mode = int(mrc.header.mode)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidVolumeError(f"{path.name} is not a readable compressed MRC file ({exc}).") from exc
    if mode in _COMPLEX_MODES or data.ndim != 3:
        raise InvalidVolumeError(f"{path.name} must hold one real-valued 3D volume.")
    vz, vy, vx = float(voxel.z), float(voxel.y), float(voxel.x)
    in_header = all(sane_voxel_size(v) for v in (vz, vy, vx))
    info = VolumeInfo(shape=tuple(data.shape), voxel_size=(vz, vy, vx) if in_header else (1.0,) * 3,
                      origin=tuple(sign * float(getattr(origin, a)) for a in "zyx"),
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


def check_finite_slab(slab: np.ndarray, z0: int = 0, source: str | os.PathLike | None = None) -> None:
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


def robust_contrast_limits(data: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
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
