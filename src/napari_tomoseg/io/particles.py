"""Particle coordinates: RELION 5 tomography STAR and CSV, with exact geometry.

Conventions (see docs/formats.md):

* Pixel coordinates are 0-based array indices of the tomogram they were
  picked on, voxel centres at integers: napari's data coordinates.
* World coordinates (napari, Angstrom) = origin + pixel * voxel_size.
* RELION 5 centred coordinates (Angstrom) = (pixel - N / 2) * voxel_size,
  relative to the tomogram centre; they do not depend on the header
  origin or on the binning, so they carry picks between binnings.
* Orientations are RELION ZYZ Euler angles (rot, tilt, psi) in degrees,
  ``particle(r) = ref(A^T r)`` (see ``relion_euler``).
* The tilt-series pixel size (RELION's rlnTomoTiltSeriesPixelSize, the
  pixel of the unbinned tilt series) is a property of the tomogram that
  its header does not carry: known only when the user gives it.

Tables are pandas DataFrames with columns ``z y x`` (pixels) plus any of
``rot tilt psi score feature class`` so every format maps onto one shape.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InvalidCoordinatesError, InvalidSettingsError
from .atomic import atomic_path

AXES = ("z", "y", "x")
ANGLE_COLUMNS = ("rot", "tilt", "psi")


class CoordinateWarning(UserWarning):
    """Particles were written or placed, but something the user should know about happened."""


@dataclass(frozen=True)
class TomogramFrame:
    """What is needed to convert between pixel, world and centred coordinates."""

    name: str
    shape: tuple[int, int, int]  # (z, y, x) voxels
    voxel_size: float  # Angstrom per voxel
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (z, y, x) Angstrom
    tilt_series_pixel_size: float | None = None  # Angstrom, unbinned tilt series; None = unknown

    def __post_init__(self):
        size = self.tilt_series_pixel_size
        if size is not None and not (np.isfinite(size) and size > 0):
            raise InvalidSettingsError(f"the tilt-series pixel size must be a positive number "
                                       f"of Angstrom, not {size}.")
        if size is not None and self.voxel_size < 0.99 * size:  # binning below 1
            raise InvalidSettingsError(
                f"{self.name}: its voxel size {self.voxel_size:g} A is smaller than the "
                f"tilt-series pixel size {size:g} A, and a tomogram is never finer than its tilt "
                "series. Is the header's voxel size missing (IMOD writes 1 A then)? Give the "
                "tomogram's voxel size (--voxel-size), or the right tilt-series pixel size.")

    @property
    def centre(self) -> np.ndarray:
        return np.asarray(self.shape, dtype=float) / 2.0

    def pixel_to_centered_angstrom(self, zyx: np.ndarray) -> np.ndarray:
        return (np.asarray(zyx, dtype=float) - self.centre) * self.voxel_size

    def centered_angstrom_to_pixel(self, zyx_angstrom: np.ndarray) -> np.ndarray:
        return np.asarray(zyx_angstrom, dtype=float) / self.voxel_size + self.centre

    def pixel_to_world(self, zyx: np.ndarray) -> np.ndarray:
        return np.asarray(zyx, dtype=float) * self.voxel_size + np.asarray(self.origin)

    def world_to_pixel(self, zyx_world: np.ndarray) -> np.ndarray:
        return (np.asarray(zyx_world, dtype=float) - np.asarray(self.origin)) / self.voxel_size


def at_voxel_size(frame: TomogramFrame, voxel_size: float) -> TomogramFrame:
    """The same tomogram at another binning (e.g. unbinned): same centre, same origin."""
    factor = frame.voxel_size / voxel_size
    return TomogramFrame(frame.name, tuple(int(round(n * factor)) for n in frame.shape),
                         float(voxel_size), frame.origin, frame.tilt_series_pixel_size)


def convert_pixels(table: pd.DataFrame, source: TomogramFrame, target: TomogramFrame) -> pd.DataFrame:
    """Pixel coordinates of ``source`` re-expressed in ``target`` via centred Angstrom."""
    out = table.copy()
    centred = source.pixel_to_centered_angstrom(table[list(AXES)].to_numpy(dtype=float))
    out[list(AXES)] = target.centered_angstrom_to_pixel(centred)
    check_inside(out, target, "the converted particles")
    return out


def particle_table(zyx: np.ndarray, **columns) -> pd.DataFrame:
    """A particle table from (N, 3) pixel coordinates and optional per-particle columns."""
    zyx = np.asarray(zyx, dtype=float).reshape(-1, 3)
    table = pd.DataFrame(zyx, columns=list(AXES))
    for name, values in columns.items():
        if values is not None:
            table[name] = np.asarray(values)
    return table


def check_coordinates(table: pd.DataFrame, source: str) -> None:
    values = table[list(AXES)].to_numpy(dtype=float)
    if not np.all(np.isfinite(values)):
        raise InvalidCoordinatesError(f"{source} has coordinates that are not finite numbers.")


_check_coordinates = check_coordinates


def check_inside(table: pd.DataFrame, frame: TomogramFrame, source: str) -> None:
    """Warn about particles outside the tomogram; refuse when none is inside.

    Particles far outside mean a wrong voxel size, pixel size or tomogram.
    """
    if not len(table):
        return
    zyx = table[list(AXES)].to_numpy(dtype=float)
    shape = np.asarray(frame.shape, dtype=float)
    beyond = np.maximum(np.maximum(-0.5 - zyx, zyx - (shape - 0.5)), 0.0).max(axis=1)
    outside = beyond > 1.0
    if not outside.any():
        return
    message = (f"{source}: {int(outside.sum())} of {len(zyx)} particles lie outside {frame.name} "
               f"{tuple(frame.shape)} (up to {beyond.max():.0f} voxels beyond its edge)")
    if outside.all():
        raise InvalidCoordinatesError(message + ": wrong tomogram, voxel size or pixel size?")
    warnings.warn(message + ".", CoordinateWarning, stacklevel=3)


def tomogram_names(particles: pd.DataFrame) -> pd.Series | None:
    """Each STAR row's tomogram: ``rlnTomoName`` (RELION 4/5), else the name of the
    ``rlnMicrographName`` file, named as ``tomogram_name`` names the opened tomogram
    (``Tomograms/TS_01.mrc``: 'TS_01'): RELION 3.0/3.1 have no rlnTomoName, and the particles
    of every tomogram they list were put on the one opened. None when there is neither."""
    if "rlnTomoName" in particles:
        return particles["rlnTomoName"].astype(str)
    if "rlnMicrographName" not in particles:
        return None
    from ..tomogram import tomogram_name  # that module builds on this one

    files = particles["rlnMicrographName"].astype(str)
    return files.map({f: tomogram_name(f) for f in files.unique()})


def select_tomogram(particles: pd.DataFrame, name: str | None, source: str,
                    explicit: bool = False) -> pd.DataFrame:
    """The rows of tomogram ``name``, saying how many of other tomograms were skipped."""
    names = tomogram_names(particles)
    if name is None or names is None or not len(particles):
        return particles
    present = sorted(set(names))
    if name in present:
        keep = (names == name).to_numpy()
        if not keep.all():
            others = [n for n in present if n != name]
            warnings.warn(f"{source}: using the {int(keep.sum())} particles of '{name}'; skipped "
                          f"{int((~keep).sum())} of {len(others)} other tomogram(s) "
                          f"({', '.join(others[:5])}{', ...' if len(others) > 5 else ''}).",
                          CoordinateWarning, stacklevel=3)
        return particles[keep]
    if len(present) == 1 and not explicit:
        warnings.warn(f"{source}: its particles belong to '{present[0]}', not '{name}'; "
                      "placed on this tomogram anyway.", CoordinateWarning, stacklevel=3)
        return particles
    raise InvalidCoordinatesError(
        f"{source} has no particles of '{name}' (it holds {', '.join(present[:5])}"
        f"{', ...' if len(present) > 5 else ''}): give the right name with --tomo-name.")


def write_csv(path: str | os.PathLike, table: pd.DataFrame, frame: TomogramFrame | None = None) -> Path:
    """CSV with pixel ``x y z`` (and world Angstrom ``x_A y_A z_A`` when a frame is known)."""
    path = Path(path)
    _check_coordinates(table, "the particle table")
    out = pd.DataFrame({axis: table[axis].to_numpy(dtype=float) for axis in AXES[::-1]})
    if frame is not None:
        world = frame.pixel_to_world(table[list(AXES)].to_numpy(dtype=float))
        for i, axis in reversed(list(enumerate(AXES))):  # x_A y_A z_A, as x y z
            out[f"{axis}_A"] = world[:, i]
    for column in table.columns:
        if column not in AXES:
            out[column] = table[column].to_numpy()
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False, float_format="%.6f")
    return path


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV with ``x y z`` pixel columns (any order, any extra columns)."""
    path = Path(path)
    try:
        raw = pd.read_csv(path)
    except Exception as exc:
        raise InvalidCoordinatesError(f"{path.name} is not a readable CSV file ({exc}).") from exc
    lower = {c.lower().strip(): c for c in raw.columns}
    if not all(a in lower for a in AXES):
        raise InvalidCoordinatesError(
            f"{path.name} needs columns x, y and z (pixels); it has {list(raw.columns)}.")
    try:
        zyx = raw[[lower[a] for a in AXES]].to_numpy(dtype=float)
    except (ValueError, TypeError) as exc:
        raise InvalidCoordinatesError(
            f"{path.name}: the x, y and z columns must hold numbers only ({exc}).") from exc
    table = particle_table(zyx)
    skip = set(AXES) | {f"{a}_a" for a in AXES}
    for key, column in lower.items():
        if key not in skip:
            table[key] = raw[column].to_numpy()
    _check_coordinates(table, path.name)
    return table


def read_csv_world(path: str | os.PathLike) -> np.ndarray | None:
    """(z, y, x) world Angstrom of a CSV's particles, from the ``x_A y_A z_A`` columns that
    ``write_csv`` adds when it knows the tomogram; None when the file has none."""
    raw = pd.read_csv(path)
    lower = {c.lower().strip(): c for c in raw.columns}
    names = [f"{a}_a" for a in AXES]
    if not all(n in lower for n in names):
        return None
    try:
        world = raw[[lower[n] for n in names]].to_numpy(dtype=float)
    except (ValueError, TypeError):
        return None
    return world if np.all(np.isfinite(world)) else None


_STAR_NAMES = ("read_star", "write_star", "star_tilt_series_pixel_size")
_EMAN2_NAMES = ("read_eman2_json", "write_eman2_json")


def __getattr__(name: str):
    """STAR and EMAN2 files live in ``star`` and ``eman2_info`` (which build on this module)."""
    if name in _STAR_NAMES:
        from . import star

        return getattr(star, name)
    if name in _EMAN2_NAMES:
        from . import eman2_info

        return getattr(eman2_info, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["AXES", "ANGLE_COLUMNS", "CoordinateWarning", "TomogramFrame", "at_voxel_size",
           "check_coordinates", "check_inside", "convert_pixels", "particle_table", "read_csv",
           "read_csv_world", "select_tomogram", "tomogram_names",
           "read_eman2_json", "read_star", "star_tilt_series_pixel_size", "write_csv",
           "write_eman2_json", "write_star"]
