"""Particle coordinates: RELION 5 tomography STAR and CSV, with exact geometry.

Conventions (see docs/formats.md):

* Pixel coordinates are 0-based array indices of the tomogram they were
  picked on, voxel centres at integers: napari's data coordinates.
* World coordinates (napari, Angstrom) = origin + pixel * voxel_size.
* RELION 5 centred coordinates (Angstrom) = (pixel - N / 2) * voxel_size,
  relative to the tomogram centre; they do not depend on the header
  origin or on the binning, so they carry picks between binnings.
* Orientations are RELION ZYZ Euler angles (rot, tilt, psi) in degrees.

Tables are pandas DataFrames with columns ``z y x`` (pixels) plus any of
``rot tilt psi score feature class`` so every format maps onto one shape.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ..errors import InvalidCoordinatesError
from .atomic import atomic_path, write_text

AXES = ("z", "y", "x")
ANGLE_COLUMNS = ("rot", "tilt", "psi")
# our column -> RELION label, for the optional per-particle values
_OPTIONAL_STAR = {
    "rot": "rlnAngleRot",
    "tilt": "rlnAngleTilt",
    "psi": "rlnAnglePsi",
    "score": "rlnAutopickFigureOfMerit",
    "class": "rlnClassNumber",
    "half": "rlnRandomSubset",
    "alignment_score": "rlnTomosegAlignmentScore",
    "feature": "rlnTomosegFeature",
}


@dataclass(frozen=True)
class TomogramFrame:
    """What is needed to convert between pixel, world and centred coordinates."""

    name: str
    shape: tuple[int, int, int]  # (z, y, x) voxels
    voxel_size: float  # Angstrom per voxel
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)  # (z, y, x) Angstrom

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
                         float(voxel_size), frame.origin)


def convert_pixels(table: pd.DataFrame, source: TomogramFrame, target: TomogramFrame) -> pd.DataFrame:
    """Pixel coordinates of ``source`` re-expressed in ``target`` via centred Angstrom."""
    out = table.copy()
    centred = source.pixel_to_centered_angstrom(table[list(AXES)].to_numpy(dtype=float))
    out[list(AXES)] = target.centered_angstrom_to_pixel(centred)
    return out


def write_eman2_json(path: str | os.PathLike, table: pd.DataFrame, frame: TomogramFrame,
                     box_size: int, unbinned_voxel_size: float | None = None,
                     feature: str = "particle") -> Path:
    """EMAN2 (>= 2.9) tomogram info JSON: ``boxes_3d`` in unbinned pixels from the centre.

    Each box is ``[x, y, z, "tomoseg", score, class]``; ``class_list`` names the class and
    its box size. With ``apix_unbin`` present, EMAN2's e2spt_extract reads ``boxes_3d``
    as offsets in unbinned pixels from the tomogram centre, which EMAN2 puts at voxel
    ``N // 2`` (read in EMAN2's source; not run against EMAN2 itself).
    """
    import json

    unbinned = unbinned_voxel_size or frame.voxel_size
    zyx = table[list(AXES)].to_numpy(dtype=float)
    centred = (zyx - _eman2_centre(frame)) * frame.voxel_size / unbinned
    scores = table["score"].to_numpy(float) if "score" in table else np.zeros(len(table))
    boxes = [[float(x), float(y), float(z), "tomoseg", float(score), 0]
             for (z, y, x), score in zip(centred, scores)]
    record = {"apix_unbin": float(unbinned), "boxes_3d": boxes,
              "class_list": {"0": {"boxsize": int(box_size), "name": feature}}}
    path = Path(path)
    write_text(path, json.dumps(record, indent=1))
    return path


def _eman2_centre(frame: TomogramFrame) -> np.ndarray:
    """EMAN2's image centre: voxel N // 2 (RELION's centred coordinates use N / 2)."""
    return np.asarray(frame.shape, dtype=float) // 2


def read_eman2_json(path: str | os.PathLike, frame: TomogramFrame) -> pd.DataFrame:
    """Boxes of an EMAN2 info JSON placed on ``frame``'s pixels (class index kept)."""
    import json

    path = Path(path)
    try:
        record = json.loads(path.read_text())
        boxes = record["boxes_3d"]
        unbinned = float(record.get("apix_unbin", frame.voxel_size))
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidCoordinatesError(f"{path.name} is not an EMAN2 info file with boxes_3d ({exc}).") from exc
    xyz = np.array([b[:3] for b in boxes], dtype=float).reshape(-1, 3)
    zyx = xyz[:, ::-1] * unbinned / frame.voxel_size + _eman2_centre(frame)
    table = particle_table(zyx, score=[float(b[4]) if len(b) > 4 else 0.0 for b in boxes],
                           **{"class": [int(b[5]) if len(b) > 5 else 0 for b in boxes]})
    names = {int(k): v.get("name", k) for k, v in record.get("class_list", {}).items()}
    table["feature"] = [names.get(c, str(c)) for c in table["class"]]
    return table


def particle_table(zyx: np.ndarray, **columns) -> pd.DataFrame:
    """A particle table from (N, 3) pixel coordinates and optional per-particle columns."""
    zyx = np.asarray(zyx, dtype=float).reshape(-1, 3)
    table = pd.DataFrame(zyx, columns=list(AXES))
    for name, values in columns.items():
        if values is not None:
            table[name] = np.asarray(values)
    return table


def _check_coordinates(table: pd.DataFrame, source: str) -> None:
    values = table[list(AXES)].to_numpy(dtype=float)
    if not np.all(np.isfinite(values)):
        raise InvalidCoordinatesError(f"{source} has coordinates that are not finite numbers.")


def write_star(path: str | os.PathLike, table: pd.DataFrame, frame: TomogramFrame,
               overwrite: bool = True) -> Path:
    """Write a RELION 5 tomography particle STAR file (centred Angstrom and pixels)."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists.")
    _check_coordinates(table, "the particle table")
    zyx = table[list(AXES)].to_numpy(dtype=float)
    centred = frame.pixel_to_centered_angstrom(zyx)
    particles = pd.DataFrame({"rlnTomoName": [frame.name] * len(table)})
    for i, axis in enumerate(AXES[::-1]):  # x, y, z
        particles[f"rlnCoordinate{axis.upper()}"] = zyx[:, 2 - i]
    for i, axis in enumerate(AXES[::-1]):
        particles[f"rlnCenteredCoordinate{axis.upper()}Angst"] = centred[:, 2 - i]
    for column, label in _OPTIONAL_STAR.items():
        if column in table:
            particles[label] = table[column].to_numpy()
    particles["rlnOpticsGroup"] = 1
    optics = pd.DataFrame({
        "rlnOpticsGroup": [1],
        "rlnOpticsGroupName": ["opticsGroup1"],
        "rlnTomoTiltSeriesPixelSize": [frame.voxel_size],
        "rlnImagePixelSize": [frame.voxel_size],
    })
    general = {"rlnTomoSubTomosAre2DStacks": 0}
    with atomic_path(path) as tmp:
        starfile.write({"general": general, "optics": optics, "particles": particles}, tmp,
                       float_format="%.6f")
    return path


def read_star(path: str | os.PathLike, frame: TomogramFrame | None = None,
              tomo_name: str | None = None) -> pd.DataFrame:
    """Read particles from a STAR file into pixel coordinates of ``frame``.

    Centred Angstrom coordinates are preferred (they survive binning) when a
    frame is given; otherwise the pixel columns are used as they are.
    ``tomo_name`` keeps only the particles of one tomogram.
    """
    path = Path(path)
    try:
        data = starfile.read(path, always_dict=True)
    except Exception as exc:  # starfile raises many types on bad input
        raise InvalidCoordinatesError(f"{path.name} is not a readable STAR file ({exc}).") from exc
    blocks = [b for b in data.values() if isinstance(b, pd.DataFrame)]
    particles = data.get("particles")
    if particles is None:
        particles = next((b for b in blocks if any("Coordinate" in c for c in b.columns)), None)
    if particles is None or len(particles.columns) == 0:
        raise InvalidCoordinatesError(f"{path.name} has no particle table with coordinates.")
    if tomo_name is not None and "rlnTomoName" in particles:
        particles = particles[particles["rlnTomoName"].astype(str) == tomo_name]
    centred = [f"rlnCenteredCoordinate{a}Angst" for a in "ZYX"]
    pixels = [f"rlnCoordinate{a}" for a in "ZYX"]
    if frame is not None and all(c in particles for c in centred):
        zyx = frame.centered_angstrom_to_pixel(particles[centred].to_numpy(dtype=float))
    elif all(c in particles for c in pixels):
        zyx = particles[pixels].to_numpy(dtype=float)
    elif all(c in particles for c in centred):
        raise InvalidCoordinatesError(
            f"{path.name} has only centred coordinates: say which tomogram they belong to "
            "(its size and voxel size are needed to place them).")
    else:
        raise InvalidCoordinatesError(
            f"{path.name} has neither rlnCoordinateX/Y/Z nor rlnCenteredCoordinateX/Y/ZAngst.")
    table = particle_table(zyx)
    for column, label in _OPTIONAL_STAR.items():
        if label in particles:
            table[column] = particles[label].to_numpy()
    if "rlnTomoName" in particles:
        table["tomo_name"] = particles["rlnTomoName"].astype(str).to_numpy()
    _check_coordinates(table, path.name)
    return table.reset_index(drop=True)


def write_csv(path: str | os.PathLike, table: pd.DataFrame, frame: TomogramFrame | None = None) -> Path:
    """CSV with pixel ``x y z`` (and world Angstrom ``x_A y_A z_A`` when a frame is known)."""
    path = Path(path)
    _check_coordinates(table, "the particle table")
    out = pd.DataFrame({axis: table[axis].to_numpy(dtype=float) for axis in AXES[::-1]})
    if frame is not None:
        world = frame.pixel_to_world(table[list(AXES)].to_numpy(dtype=float))
        for i, axis in enumerate(AXES):
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
