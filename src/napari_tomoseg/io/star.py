"""RELION 5 tomography particle STAR files, as RELION's own programs read them.

Checked in RELION 5's source (3dem/relion):

* ``relion_tomo_import_coordinates`` (src/jaz/tomography/apps/import_coordinates.cpp)
  reads a coordinate STAR with ``MetaDataTable::read`` and no block name,
  i.e. the FIRST data block: the particles block is written first.
* ``ParticleSet::getParticleCoordDecenteredPixel`` (src/jaz/tomography/particle_set.cpp)
  divides ``rlnCenteredCoordinate*Angst`` by ``rlnTomoTiltSeriesPixelSize`` of
  the particle's optics group and adds the centre ``rlnTomoSize / 2`` of the
  unbinned tomogram; ``ParticleSet::read`` builds the optics table from the
  tomogram set when the file has none. So the pixel size is written only
  when it is known, never guessed from a binned tomogram.
* ``ParticleSet::getPosition``: true position = coordinate - A_sub @ origin,
  with ``origin = rlnOriginX/Y/ZAngst`` and ``A_sub`` the matrix of
  ``rlnTomoSubtomogramRot/Tilt/Psi``; ``ParticleSet::getMatrix3x3``: the
  particle's orientation is ``A_sub @ A(rlnAngleRot, rlnAngleTilt, rlnAnglePsi)``.

Tables hold the true position (``z y x``, pixels of the tomogram) and the
full orientation (``rot tilt psi`` of ``A_sub @ A_particle``); the origin
shifts and subtomogram angles are kept (``origin_x..`` in A,
``subtomo_rot..``) so that writing restores RELION's decomposition.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import starfile

from ..errors import InvalidCoordinatesError
from .atomic import atomic_path
from .star_optics import particle_pixel_sizes
from .particles import (AXES, CoordinateWarning, TomogramFrame, check_coordinates,
                        check_inside, particle_table, select_tomogram, tomogram_names)
from .relion_euler import relion_angles, relion_matrices

# our column -> RELION label, for the optional per-particle values
OPTIONAL_STAR = {
    "score": "rlnAutopickFigureOfMerit",
    "class": "rlnClassNumber",
    "half": "rlnRandomSubset",
    "alignment_score": "rlnTomosegAlignmentScore",
    "reference_score": "rlnTomosegReferenceScore",  # tomoseg rescore (template matching)
    "feature": "rlnTomosegFeature",
    "filament": "rlnHelicalTubeID",  # traced filaments (filaments.py): RELION's helical columns
    "track_length": "rlnHelicalTrackLengthAngst",
    "tilt_prior": "rlnAngleTiltPrior",
    "psi_prior": "rlnAnglePsiPrior",
}
ANGLES = {"rot": "rlnAngleRot", "tilt": "rlnAngleTilt", "psi": "rlnAnglePsi"}
SUBTOMO = {"subtomo_rot": "rlnTomoSubtomogramRot", "subtomo_tilt": "rlnTomoSubtomogramTilt",
           "subtomo_psi": "rlnTomoSubtomogramPsi"}
ORIGIN = {"origin_x": "rlnOriginXAngst", "origin_y": "rlnOriginYAngst", "origin_z": "rlnOriginZAngst"}
ORIGIN_PIXELS = [f"rlnOrigin{a}" for a in "XYZ"]  # RELION 3.0: pixels of the particle image
IMAGE_PIXEL = ["rlnDetectorPixelSize", "rlnMagnification"]  # RELION 3.0: 1e4 * dstep / mag A
CENTRED = [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]
PIXELS = [f"rlnCoordinate{a}" for a in "XYZ"]
OPTICS_NAME = "opticsGroup1"


def _matrices(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """RELION matrices of three angle columns; identity where the file has none."""
    if not all(c in frame for c in columns):
        return np.repeat(np.eye(3)[None], len(frame), axis=0)
    return relion_matrices(frame[columns].to_numpy(dtype=float))


def _origins(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """(n, 3) origin shifts (x, y, z) in the columns' unit; a missing axis is 0, not all three."""
    return np.stack([frame[c].to_numpy(dtype=float) if c in frame else np.zeros(len(frame))
                     for c in columns], axis=1)


def _shifts(particles: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``A_sub @ origin`` (x, y, z) in Angstrom and in pixels of rlnCoordinateX/Y/Z: RELION 3.1
    reads 3.0's pixel origins as ``rlnOriginX * 1e4 * rlnDetectorPixelSize / rlnMagnification``
    A (src/jaz/io/star_converter.cpp ``translateOffsets``); without those, the subtomogram's
    pixel is the tomogram's (not rescaled). The Angstrom columns win when a file has both."""
    zero = np.zeros((len(particles), 3))
    if any(c in particles for c in ORIGIN.values()):
        angstrom, pixels = _origins(particles, list(ORIGIN.values())), zero
    elif (size := _image_pixel_size(particles)) is not None:
        angstrom, pixels = _origins(particles, ORIGIN_PIXELS) * size[:, None], zero
    else:
        angstrom, pixels = zero, _origins(particles, ORIGIN_PIXELS)
    sub = _matrices(particles, list(SUBTOMO.values()))
    return np.einsum("nij,nj->ni", sub, angstrom), np.einsum("nij,nj->ni", sub, pixels)


def _image_pixel_size(particles: pd.DataFrame) -> np.ndarray | None:
    """RELION 3.0's particle-image pixel (A), ``1e4 * rlnDetectorPixelSize / rlnMagnification``."""
    if not all(c in particles for c in IMAGE_PIXEL):
        return None
    size = (1e4 * particles[IMAGE_PIXEL[0]] / particles[IMAGE_PIXEL[1]]).to_numpy(dtype=float)
    return size if np.all(np.isfinite(size) & (size > 0)) else None


def _particle_block(table: pd.DataFrame, frame: TomogramFrame) -> pd.DataFrame:
    zyx = table[list(AXES)].to_numpy(dtype=float)
    sub = _matrices(table, list(SUBTOMO))
    # RELION subtracts A_sub @ origin from the coordinate: add it back
    centred_xyz = frame.pixel_to_centered_angstrom(zyx)[:, ::-1]
    centred_xyz = centred_xyz + np.einsum("nij,nj->ni", sub, _origins(table, list(ORIGIN)))
    out = pd.DataFrame({"rlnTomoName": [frame.name] * len(table)})
    for i, label in enumerate(CENTRED):
        out[label] = centred_xyz[:, i]
    pixels_xyz = _decentred_pixels(centred_xyz, frame)
    for i, label in enumerate(PIXELS):
        out[label] = pixels_xyz[:, i]
    for column, label in ORIGIN.items():
        if column in table:
            out[label] = table[column].to_numpy(dtype=float)
    if all(c in table for c in ANGLES):
        full = relion_matrices(table[list(ANGLES)].to_numpy(dtype=float))
        if all(c in table for c in SUBTOMO):  # A = A_sub @ A_particle
            angles = relion_angles(np.transpose(sub, (0, 2, 1)) @ full)
        else:
            angles = table[list(ANGLES)].to_numpy(dtype=float)
        for i, label in enumerate(ANGLES.values()):
            out[label] = angles[:, i]
    for column, label in SUBTOMO.items():
        if column in table:
            out[label] = table[column].to_numpy(dtype=float)
    for column, label in OPTIONAL_STAR.items():
        if column in table:
            out[label] = table[column].to_numpy()
    return out


def _decentred_pixels(centred_xyz: np.ndarray, frame: TomogramFrame) -> np.ndarray:
    """``rlnCoordinateX/Y/Z`` for RELION's coordinates (origin shift included).

    RELION reads them, when a file has no centred columns, as decentred pixels
    of the unbinned tilt series (``getParticleCoordDecenteredPixel``): so they
    are written in those pixels when the tilt-series pixel size is known, and in
    this tomogram's pixels otherwise (the warning about the unknown size says so).
    """
    size = frame.tilt_series_pixel_size or frame.voxel_size
    centre_xyz = np.asarray(frame.shape[::-1], dtype=float) * frame.voxel_size / (2.0 * size)
    return centred_xyz / size + centre_xyz


def write_star(path: str | os.PathLike, table: pd.DataFrame, frame: TomogramFrame,
               overwrite: bool = True, keep_richer: bool = False) -> Path:
    """A RELION 5 tomography particle STAR: particles block first, then optics.

    Without a known tilt-series pixel size there is no optics block (RELION
    then takes the optics from its tomogram set) and a warning says so. With
    ``keep_richer``, an existing STAR holding what this one would not (other
    tomograms, blocks or columns, e.g. a refinement's) is refused, not replaced.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists.")
    check_coordinates(table, "the particle table")
    table = _without_missing_angles(table, path.name)
    particles = _particle_block(table, frame)
    blocks = {"particles": particles}
    if frame.tilt_series_pixel_size:
        particles["rlnOpticsGroup"] = 1
        blocks["optics"] = optics_block(frame.tilt_series_pixel_size)
    else:
        warn_unknown_pixel_size(path.name)
    lost = lost_by_replacing(path, blocks, frame.name) if keep_richer else []
    if lost:
        raise InvalidCoordinatesError(f"{path.name} holds {'; '.join(lost)}, which these "
                                      "points do not carry: it is not replaced. Save under "
                                      "another name.")
    with atomic_path(path) as tmp:
        starfile.write(blocks, tmp, float_format="%.6f")
    return path


def _without_missing_angles(table: pd.DataFrame, name: str) -> pd.DataFrame:
    """Points without angles (added by hand beside picks that have them) get angles 0 and
    the user is told: a NaN in a STAR stops RELION; infinite angles are refused."""
    angles = [c for c in (*ANGLES, *SUBTOMO) if c in table]
    values = table[angles].to_numpy(dtype=float) if angles else np.zeros((0, 0))
    if np.isinf(values).any():
        raise InvalidCoordinatesError("the particle table has infinite angles.")
    missing = np.isnan(values).any(axis=1) if angles else np.zeros(0, bool)
    if not missing.any():
        return table
    rows = ", ".join(str(i + 1) for i in np.flatnonzero(missing)[:5])
    warnings.warn(f"{name}: {int(missing.sum())} particle(s) without angles (added by hand?: "
                  f"rows {rows}{', ...' if missing.sum() > 5 else ''}) written with angles 0.",
                  CoordinateWarning, stacklevel=3)
    return table.assign(**{c: table[c].fillna(0.0) for c in angles})


def lost_by_replacing(path: Path, blocks: dict, tomo_name: str) -> list[str]:
    """What the STAR file at ``path`` holds that ``blocks`` would not (nothing if it is not
    a readable STAR): a points layer opened from a refinement and saved back kept only our
    columns, one tomogram's particles, and no general block."""
    try:
        existing = read_star_blocks(path) if path.is_file() else {}
    except Exception:  # not a STAR we can read: nothing of it is carried either way
        return []
    lost = []
    source = _particle_block_name(existing)  # e.g. an unnamed data_ block of coordinates
    for name, block in existing.items():
        ours = blocks.get("particles" if name == source else name)
        if ours is None:
            lost.append(f"the block data_{name}")
            continue
        columns = [c for c in getattr(block, "columns", block) if c not in
                   getattr(ours, "columns", ())]
        if columns:
            lost.append(f"{name} columns {', '.join(map(str, columns[:4]))}"
                        + (f" and {len(columns) - 4} more" if len(columns) > 4 else ""))
        if isinstance(block, pd.DataFrame) and "rlnTomoName" in block and name == source:
            others = sorted(set(block["rlnTomoName"].astype(str)) - {tomo_name})
            if others:
                lost.append(f"particles of {len(others)} other tomogram(s) ({', '.join(others[:3])})")
    return lost


def _particle_block_name(blocks: dict) -> str | None:
    """The block particles are read from: ``particles``, else the first table of
    coordinates (an unnamed ``data_`` block, as crYOLO writes)."""
    if isinstance(blocks.get("particles"), pd.DataFrame):
        return "particles"
    return next((name for name, b in blocks.items() if isinstance(b, pd.DataFrame)
                 and any("Coordinate" in str(c) for c in b.columns)), None)


def optics_block(tilt_series_pixel_size: float) -> pd.DataFrame:
    return pd.DataFrame({"rlnOpticsGroup": [1], "rlnOpticsGroupName": [OPTICS_NAME],
                         "rlnTomoTiltSeriesPixelSize": [float(tilt_series_pixel_size)]})


def warn_unknown_pixel_size(what: str) -> None:
    warnings.warn(
        f"{what}: the tilt-series pixel size is unknown, so no rlnTomoTiltSeriesPixelSize "
        "was written (RELION takes it from its tomogram set) and rlnCoordinateX/Y/Z are in "
        "this tomogram's pixels, which RELION 4 style readers take for unbinned tilt-series "
        "pixels; give it with --tilt-series-pixel-size to write both right.",
        CoordinateWarning, stacklevel=3)


def read_star_blocks(path: str | os.PathLike) -> dict:
    """Every block of a STAR file; tomogram names stay text ('001' was read as the number 1,
    so its particles belonged to no tomogram '001' and outputs were named '1')."""
    return starfile.read(path, always_dict=True,
                         parse_as_string=["rlnTomoName", "rlnMicrographName"])


def _read_blocks(path: Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    if not path.is_file():
        raise InvalidCoordinatesError(f"{path} does not exist" if not path.exists()
                                      else f"{path} is a folder, not a STAR file.")
    try:
        data = read_star_blocks(path)
    except Exception as exc:  # starfile raises many types on bad input
        raise InvalidCoordinatesError(f"{path.name} is not a readable STAR file ({exc}).") from exc
    name = _particle_block_name(data)
    particles = data[name] if name is not None else None
    if particles is None or len(particles.columns) == 0:
        raise InvalidCoordinatesError(f"{path.name} has no particle table with coordinates.")
    optics = data.get("optics")
    _require_numbers(particles, path.name)
    return particles, optics if isinstance(optics, pd.DataFrame) else None


def _require_numbers(particles: pd.DataFrame, source: str) -> None:
    """Coordinates, shifts and angles must be numbers: text there raised a bare ValueError."""
    numeric = [*PIXELS, *CENTRED, *ORIGIN.values(), *ORIGIN_PIXELS, *IMAGE_PIXEL,
               *SUBTOMO.values(), *ANGLES.values()]
    for column in (c for c in numeric if c in particles):
        values = pd.to_numeric(particles[column], errors="coerce")
        bad = (values.isna() & particles[column].notna()).to_numpy()  # text
        if column in (*PIXELS, *CENTRED):  # a place must be a finite number
            bad = bad | ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise InvalidCoordinatesError(
                f"{source}: {column} of particle {row + 1} is "
                f"{_shown(particles[column].iloc[row])}, not a finite number.")
        particles[column] = values


def _shown(value) -> str:
    """A cell as the file has it: text quoted, a number (NaN, inf) plain."""
    return repr(value) if isinstance(value, str) else str(float(value))


def star_tilt_series_pixel_size(path: str | os.PathLike, tomo_name: str | None = None) -> float | None:
    """The tilt-series pixel size a STAR file gives for ``tomo_name`` (or its first particle)."""
    try:
        particles, optics = _read_blocks(Path(path))
    except InvalidCoordinatesError:
        return None
    names = tomogram_names(particles)
    if tomo_name is not None and names is not None:
        chosen = particles[(names == tomo_name).to_numpy()]
        particles = chosen if len(chosen) else particles
    sizes = particle_pixel_sizes(optics, particles.iloc[:1])  # of its (first) particle
    if sizes is None:
        return None
    return float(sizes[0] if len(sizes) else optics["rlnTomoTiltSeriesPixelSize"].iloc[0])


def _positions(particles: pd.DataFrame, frame: TomogramFrame | None,
               pixel_size: np.ndarray | None, source: str) -> np.ndarray:
    """True (z, y, x) pixels: RELION's coordinate minus A_sub @ origin (3.0 pixel origins of
    unknown pixel size are in the pixels of rlnCoordinateX/Y/Z, see ``_shifts``)."""
    shift_xyz, shift_pixels = _shifts(particles)
    if frame is not None and all(c in particles for c in CENTRED):
        size = frame.voxel_size if pixel_size is None else np.reshape(pixel_size, (-1, 1))
        centred_xyz = particles[CENTRED].to_numpy(dtype=float) - shift_xyz - shift_pixels * size
        return frame.centered_angstrom_to_pixel(centred_xyz[:, ::-1])
    if all(c in particles for c in PIXELS):
        return _pixel_positions(particles[PIXELS].to_numpy(dtype=float) - shift_pixels,
                                shift_xyz, frame, pixel_size, source)
    if all(c in particles for c in CENTRED):
        raise InvalidCoordinatesError(
            f"{source} has only centred coordinates: say which tomogram they belong to "
            "(its size and voxel size are needed to place them).")
    raise InvalidCoordinatesError(
        f"{source} has neither rlnCoordinateX/Y/Z nor rlnCenteredCoordinateX/Y/ZAngst.")


def _pixel_positions(xyz: np.ndarray, shift_xyz: np.ndarray, frame: TomogramFrame | None,
                     pixel_size: np.ndarray | None, source: str) -> np.ndarray:
    """(z, y, x) from ``rlnCoordinateX/Y/Z``: RELION's unbinned tilt-series pixels when the
    file gives ``rlnTomoTiltSeriesPixelSize`` (scaled onto ``frame``), else ``frame``'s pixels.
    """
    if pixel_size is not None:  # per particle (its optics group)
        pixel_size = np.asarray(pixel_size, float).reshape(-1, 1)
        xyz = xyz - shift_xyz / pixel_size
        if frame is not None:
            xyz = xyz * pixel_size / frame.voxel_size
        return xyz[:, ::-1]
    size = frame.voxel_size if frame is not None else None
    if np.any(shift_xyz != 0):
        if not size:
            raise InvalidCoordinatesError(
                f"{source} has origin shifts in Angstrom but no pixel size to apply them: "
                "say which tomogram the particles belong to.")
        xyz = xyz - shift_xyz / size
    known = frame.tilt_series_pixel_size if frame is not None else None
    if known and not np.isclose(known, frame.voxel_size):
        warnings.warn(
            f"{source} gives no rlnTomoTiltSeriesPixelSize, so rlnCoordinateX/Y/Z were read as "
            f"pixels of this tomogram ({frame.voxel_size:g} A); if they are unbinned tilt-series "
            f"pixels ({known:g} A, as RELION 4 writes them) they lie "
            f"{frame.voxel_size / known:g}x too far from the corner.", CoordinateWarning,
            stacklevel=4)
    return xyz[:, ::-1]


def _orientations(particles: pd.DataFrame, table: pd.DataFrame) -> None:
    """Full orientation A_sub @ A_particle as ``rot tilt psi``; the raw parts kept."""
    has_angles = all(c in particles for c in ANGLES.values())
    has_sub = all(c in particles for c in SUBTOMO.values())
    if has_sub:
        full = _matrices(particles, list(SUBTOMO.values())) @ _matrices(particles, list(ANGLES.values()))
        angles = relion_angles(full)
    elif has_angles:
        angles = particles[list(ANGLES.values())].to_numpy(dtype=float)
    else:
        return
    for i, column in enumerate(ANGLES):
        table[column] = angles[:, i]
    for group in (SUBTOMO, ORIGIN):
        for column, label in group.items():
            if label in particles:
                table[column] = particles[label].to_numpy(dtype=float)


def read_star(path: str | os.PathLike, frame: TomogramFrame | None = None,
              tomo_name: str | None = None) -> pd.DataFrame:
    """Particles of a STAR file in pixel coordinates of ``frame`` (true positions).

    Centred Angstrom coordinates are used when a frame is given (they survive
    binning); otherwise the pixel columns. Only the rows of ``tomo_name``
    (default: the frame's name) are kept when the file holds several tomograms.
    """
    path = Path(path)
    particles, optics = _read_blocks(path)
    wanted = tomo_name or (frame.name if frame is not None else None)
    particles = select_tomogram(particles, wanted, path.name, explicit=tomo_name is not None)
    zyx = _positions(particles, frame, particle_pixel_sizes(optics, particles), path.name)
    table = particle_table(zyx)
    _orientations(particles, table)
    for column, label in OPTIONAL_STAR.items():
        if label in particles:
            table[column] = particles[label].to_numpy()
    names = tomogram_names(particles)
    if names is not None:
        table["tomo_name"] = names.to_numpy()
    check_coordinates(table, path.name)
    if frame is not None:
        check_inside(table, frame, path.name)
    return table.reset_index(drop=True)
