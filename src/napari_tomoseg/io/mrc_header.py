"""MRC headers: parse, validate and describe a volume's geometry.

The header is parsed by ``mrcfile`` and checked against the file size, the
data mode, the axis mapping and the voxel size before any voxel is read,
so a damaged or unusual file is refused with a reason instead of being
read as garbage.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import mrcfile
import numpy as np

from ..errors import InvalidSettingsError, InvalidVolumeError
from .atomic import is_partial

MRC_SUFFIXES = (".mrc", ".rec", ".st", ".ali", ".map", ".mrcs")
COMPRESSED_SUFFIXES = (".gz", ".bz2")
HEADER_BYTES = 1024
# IMOD marks files it wrote with this stamp; bit 0 of imodFlags set means
# mode 0 bytes are signed. Older IMOD files without the bit are unsigned.
_IMOD_STAMP = 1146047817
COMPLEX_MODES = (3, 4)
# voxel sizes (Angstrom) outside this range are not believed: no tomogram is finer
# than 0.1 A per voxel, and 1000 A per voxel would leave a cell a few voxels wide
VOXEL_SIZE_RANGE = (0.1, 1000.0)


class PermutedAxesWarning(UserWarning):
    """A file whose axis mapping (mapc, mapr, maps) is not 1, 2, 3: other programs differ."""


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
                       hint: str = "give it with --voxel-size (Angstrom per voxel)",
                       cube_hint: str = "give --voxel-size to take them as cubes of that size"
                       ) -> VolumeInfo:
    """``info`` with a voxel size the user can trust, or a clear error.

    ``given`` (e.g. ``--voxel-size``) replaces the header's value; a header
    without a usable voxel size (0, negative, absurd) is refused instead of
    being taken as 1 A, which would rescale the data by orders of magnitude.
    """
    low, high = VOXEL_SIZE_RANGE
    name = Path(path).name
    sizes = " x ".join(f"{v:g}" for v in info.voxel_size[::-1])
    if given is not None:
        if not sane_voxel_size(given):
            raise InvalidSettingsError(
                f"the voxel size must lie between {low:g} and {high:g} A, not {given:g}.")
        if info.voxel_size_in_header and not _close(info.voxel_size + (given,)):
            warnings.warn(f"{name}: the voxel size given, {given:g} A, replaces the header's "
                          f"{sizes} A.", VoxelSizeWarning, stacklevel=2)
        return dataclasses.replace(info, voxel_size=(float(given),) * 3, voxel_size_in_header=True)
    if not info.voxel_size_in_header:
        raise InvalidVolumeError(
            f"{name} has no usable voxel size in its header "
            f"({info.header_voxel_size if info.header_voxel_size is not None else 'none'} A); "
            f"{hint}.")
    if not _close(info.voxel_size):  # a z step of twice x would put picks and maps off by 2x
        raise InvalidVolumeError(
            f"{name} has voxels of {sizes} A (x, y, z), not cubes; segmentation, picking and "
            f"averaging need cubic voxels: resample it, or {cube_hint}.")
    return info


class VoxelSizeWarning(UserWarning):
    """A voxel size the user gave differs from the file's own."""


def _close(sizes, tolerance: float = 0.01) -> bool:
    return max(sizes) <= (1 + tolerance) * min(sizes)


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


def stored_dtype(header, path: Path) -> np.dtype:
    mode = int(header.mode)
    if mode in COMPLEX_MODES:
        raise InvalidVolumeError(
            f"{path.name} holds complex numbers (MRC mode {mode}, e.g. a Fourier "
            "transform); napari-tomoseg needs a real-valued tomogram.")
    try:
        dtype = mrcfile.utils.data_dtype_from_header(header)
    except ValueError as exc:
        raise InvalidVolumeError(
            f"{path.name} has an unknown MRC data mode {mode}.") from exc
    if mode == 0 and _unsigned_bytes(header):
        dtype = np.dtype(np.uint8)
    return dtype


def imod_origin_sign(header) -> float:
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
    standard = _standard_version(int(header.nversion))
    return -1.0 if int(stamp) == _IMOD_STAMP and not int(flags) & 4 and not standard else 1.0


def _standard_version(nversion: int) -> bool:
    """IMOD's test (mrcfiles.c, mrcGetStandardVersion): 20140 up to 10 x (this year + 2);
    SerialEM before 3.3 left other numbers there, which mark no standard file."""
    return 20140 <= nversion < 10 * (datetime.date.today().year + 2)


def _unsigned_bytes(header) -> bool:
    """Whether mode-0 bytes are unsigned.

    An IMOD stamp (header bytes 152-155) says it with the signed-bytes flag (bytes
    156-159), as IMOD reads it (b3dutil.c, readBytesSigned). Without a stamp, a header
    minimum >= 0 with a maximum >= 128 describes values that signed bytes cannot hold,
    which IMOD reads unsigned too. Every other unstamped header is read signed, as
    MRC2014 says; IMOD there guesses unsigned (e.g. for statistics left at 0), which we
    do not follow: a guess either way is wrong for some files, and the standard is
    what other readers (mrcfile, RELION) apply.
    """
    extra2 = bytes(np.asarray(header.extra2).tobytes())  # header bytes 112-195
    order = "<" if header.mode.dtype.byteorder in "<=|" else ">"
    stamp, flags = np.frombuffer(extra2[40:48], dtype=f"{order}i4")
    if int(stamp) == _IMOD_STAMP:
        return not int(flags) & 1
    return float(header.dmin) >= 0 and float(header.dmax) >= 128


def axis_order(header, path: Path) -> tuple[int, int, int] | None:
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


def warn_permuted(header, path: Path) -> None:
    """Say that IMOD, RELION and EMAN2 would see this file's voxels elsewhere.

    We follow MRC2014 and transpose (as ChimeraX and mrcfile-based tools do), but RELION
    (rwMRC.h) and IMOD never read the mapping and EMAN2 only swaps x and y (mrcio.cpp),
    so picks and maps of this volume would not line up with the file in them.
    """
    mapping = (int(header.mapc), int(header.mapr), int(header.maps))
    warnings.warn(
        f"{path.name} stores its axes permuted (mapc, mapr, maps = "
        f"{', '.join(map(str, mapping))}). It is shown as the MRC2014 standard defines, but "
        "IMOD, RELION and EMAN2 ignore that mapping, so picks and maps made on it will not "
        f"line up with this file there. Rewrite it in standard order first: `tomoseg clean "
        f"{path.name} standard.mrc`, and work on the copy.", PermutedAxesWarning, stacklevel=3)


def header_origin(header) -> tuple[float, float, float]:
    """The (z, y, x) origin in Angstrom with IMOD's sign rule; a NaN or infinite one is (0, 0, 0)
    (it flowed into the layer's position and the CSV's Angstrom columns)."""
    sign = imod_origin_sign(header)
    origin = tuple(sign * float(getattr(header.origin, a)) for a in "zyx")
    return origin if all(np.isfinite(origin)) else (0.0, 0.0, 0.0)


def header_position(header, voxel_zyx: tuple[float, float, float] | None,
                    order: tuple[int, int, int] | None) -> tuple[float, float, float]:
    """Where voxel (0, 0, 0) lies (z, y, x, Angstrom): the origin, or when it is all zero
    the start indices times the voxel size, as ChimeraX and Xmipp read them (Bsoft writes
    its origin there). Read as 0, our maps of such a tomogram lay apart from it in ChimeraX."""
    origin = header_origin(header)
    start = (int(header.nzstart), int(header.nystart), int(header.nxstart))
    if origin == (0.0, 0.0, 0.0) and any(start) and voxel_zyx and order is None:
        return tuple(float(s * v) for s, v in zip(start, voxel_zyx))
    return origin


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
    dtype = stored_dtype(header, path)
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
    order = axis_order(header, path)
    if order is not None:
        warn_permuted(header, path)
    origin = header_position(header, (vz, vy, vx) if in_header else None, order)
    shape = stored_shape if order is None else tuple(stored_shape[i] for i in order)
    info = VolumeInfo(shape=shape, voxel_size=(vz, vy, vx), origin=origin,
                      dtype=dtype.newbyteorder("=").name, voxel_size_in_header=in_header,
                      header_voxel_size=raw_voxel)
    return header, info
