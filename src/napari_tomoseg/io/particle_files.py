"""Particle files chosen by suffix, in one place: STAR, EMAN2 JSON or CSV.

Every face (CLI, batch, widgets, reader, averaging) reads and writes
particles through these two functions, so a format is added, or a
convention fixed, once.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InvalidSettingsError
from .mrc_header import COMPRESSED_SUFFIXES, MRC_SUFFIXES
from .paths import same_file
from .eman2_info import read_eman2_json, write_eman2_json
from .particles import (AXES, CoordinateWarning, TomogramFrame, check_inside, read_csv,
                        read_csv_world, read_star, star_tilt_series_pixel_size, write_csv,
                        write_star)

SUFFIXES = (".star", ".json", ".csv")
# volumes: a particle file written there (as CSV) would destroy a map or a tomogram
VOLUME_SUFFIXES = MRC_SUFFIXES + (".em", ".hdf", ".tif", ".tiff")


def eman2_box_size(diameter: float, voxel_size: float) -> int:
    """Boxes 1.5 particle diameters wide, as e2spt_boxer would draw them (voxels)."""
    return int(round(1.5 * diameter / voxel_size))


def particle_format(path: str | os.PathLike) -> str:
    """'star', 'json' or 'csv' from the suffix (anything else is CSV, as before)."""
    suffix = Path(path).suffix.lower()
    return {".star": "star", ".json": "json"}.get(suffix, "csv")


def read_particles(path: str | os.PathLike, frame: TomogramFrame | None = None,
                   tomo_name: str | None = None) -> tuple[pd.DataFrame, TomogramFrame | None]:
    """(table in ``frame``'s pixels, frame completed from the file).

    A STAR file lends its rlnTomoTiltSeriesPixelSize to a frame that has
    none, so writing the picks back keeps it.
    """
    path = Path(path)
    kind = particle_format(path)
    if kind == "star":
        table = read_star(path, frame, tomo_name=tomo_name)
        if frame is not None and not frame.tilt_series_pixel_size:
            known = star_tilt_series_pixel_size(path, tomo_name or frame.name)
            if known:
                frame = replace(frame, tilt_series_pixel_size=known)
        return table, frame
    if kind == "json":
        if frame is None:
            from ..errors import InvalidCoordinatesError

            raise InvalidCoordinatesError(f"{path.name}: EMAN2 JSON coordinates are relative to "
                                          "the tomogram centre; open the tomogram first.")
        table = read_eman2_json(path, frame)
        check_inside(table, frame, path.name)
        return table, frame
    table = read_csv(path)
    if frame is not None:  # as STAR files are: far outside means a wrong tomogram or size
        table = _placed_by_angstrom(table, read_csv_world(path), frame, path.name)
        check_inside(table, frame, path.name)
    return table, frame


def _placed_by_angstrom(table, world, frame: TomogramFrame, name: str):
    """A CSV we wrote carries world Angstrom beside its pixels: used on a tomogram of another
    voxel size (picked on a bin-2 map, averaged from the unbinned tomogram), its pixel
    columns put every particle at half its place without a word; the Angstrom columns
    place them, and the user is told."""
    if world is None or len(world) != len(table):
        return table
    pixels = frame.world_to_pixel(world)
    if np.allclose(pixels, table[list(AXES)].to_numpy(float), atol=0.5):
        return table
    warnings.warn(f"{name}: its pixel columns were written for a tomogram of another voxel "
                  "size or origin; placed by its Angstrom columns (x_A, y_A, z_A) on "
                  f"{frame.name} ({frame.voxel_size:g} A).", CoordinateWarning, stacklevel=3)
    return table.assign(**{axis: pixels[:, i] for i, axis in enumerate(AXES)})


def check_particle_output(path: str | os.PathLike, inputs: tuple = (),
                          overwrite: bool = True) -> Path:
    """Refuse a particles path that names a volume or no particle format, one of ``inputs``,
    or (without ``overwrite``) an existing file: a CSV written there would replace that file."""
    path = Path(path)
    name = path.name.lower()
    for compressed in COMPRESSED_SUFFIXES:
        name = name.removesuffix(compressed)
    if Path(name).suffix in VOLUME_SUFFIXES:
        raise InvalidSettingsError(f"{path}: a volume's suffix; write particles to .star, "
                                   ".csv or .json.")
    if path.suffix.lower() not in SUFFIXES:  # out.txt became a CSV without a word
        raise InvalidSettingsError(f"{path}: the suffix says the format; write particles to "
                                   ".star (RELION), .json (EMAN2) or .csv.")
    for given in inputs:
        if given and same_file(path, given):
            raise InvalidSettingsError(f"{path} is also an input; write particles elsewhere.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; use --overwrite or another output.")
    return path


def write_particles(path: str | os.PathLike, table: pd.DataFrame, frame: TomogramFrame,
                    box_size: int | None = None, feature: str | None = None,
                    overwrite: bool = True) -> Path:
    """Write ``table`` (pixels of ``frame``) in the format its suffix names; atomic.

    Never onto a volume's suffix; onto an existing file only with ``overwrite``.
    """
    check_particle_output(path, overwrite=overwrite)
    kind = particle_format(path)
    if kind == "json":
        feature = feature or (str(table["feature"].iloc[0]) if "feature" in table and len(table)
                              else "particle")
        return write_eman2_json(path, table, frame, box_size=box_size or 32, feature=feature)
    if kind == "star":
        return write_star(path, table, frame)
    return write_csv(path, table, frame)
