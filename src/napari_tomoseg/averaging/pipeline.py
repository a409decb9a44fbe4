"""Files in: a tomogram and its particles, opened and placed for averaging.

The averaging and classification jobs themselves are in ``jobs.average``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from ..errors import InvalidCoordinatesError, InvalidSettingsError
from ..io.mrc import open_volume
from ..io.particle_files import particle_format, read_particles
from ..io.particles import star_tilt_series_pixel_size
from .extract import Subtomograms, extract_subtomograms


def open_tomogram_and_particles(tomogram: str | os.PathLike, particles: str | os.PathLike,
                                tomo_name: str | None = None,
                                tilt_series_pixel_size: float | None = None):
    """The (memory-mapped) tomogram, its frame, and the particles placed on its voxels.

    A STAR file keeps only the rows of this tomogram (``tomo_name``, else the
    file stem; a file of a single tomogram lends its name to the outputs) and
    lends its rlnTomoTiltSeriesPixelSize when none is given.
    """
    from dataclasses import replace

    from ..tomogram import tomogram_name, volume_frame

    volume, info = open_volume(tomogram)
    frame = volume_frame(info, tomo_name or tomogram_name(tomogram), tilt_series_pixel_size)
    path = Path(particles)
    table, _ = read_particles(path, frame, tomo_name=tomo_name)
    if particle_format(path) == "star":
        names = set(table["tomo_name"]) if "tomo_name" in table else set()
        name = names.pop() if len(names) == 1 and not tomo_name else frame.name
        frame = replace(frame, name=name, tilt_series_pixel_size=(
            tilt_series_pixel_size or star_tilt_series_pixel_size(path, name)))
    if len(table) == 0:
        raise InvalidCoordinatesError(f"{path.name} has no particles for {frame.name}.")
    return volume, frame, table


def drop_repeated_picks(table: pd.DataFrame,
                        distance: float | None = None) -> tuple[pd.DataFrame, int]:
    """The table without picks repeating an earlier one, and how many went (with a warning).

    A particle picked twice lands in both half sets, and its two copies agree
    on noise: the FSC then reports a resolution the data do not have.
    """
    import warnings

    from ..io.particles import CoordinateWarning
    from .extract import DUPLICATE_VOXELS, repeated_picks

    distance = DUPLICATE_VOXELS if distance is None else float(distance)
    drop = repeated_picks(table[["z", "y", "x"]].to_numpy(float), distance)
    if len(drop):
        warnings.warn(f"{len(drop)} of {len(table)} particles lie within {distance:g} voxels of "
                      "another pick and were dropped as duplicates (a copy in each half set "
                      "would inflate the FSC).", CoordinateWarning, stacklevel=2)
    return table.drop(index=table.index[drop]), int(len(drop))


def extract_particles(volume, table: pd.DataFrame, box: int, edge: str,
                      progress=None, min_distance: float | None = None) -> Subtomograms:
    """Boxes around each distinct particle; at least 4 must fit, or averaging means nothing.

    ``indices`` of the result are rows of ``table``; repeated picks (closer than
    ``min_distance`` voxels, default ``DUPLICATE_VOXELS``) are left out.
    """
    kept, duplicates = drop_repeated_picks(table.reset_index(drop=True), min_distance)
    sub = extract_subtomograms(volume, kept[["z", "y", "x"]].to_numpy(float), box, edge=edge,
                               progress=progress)
    sub.indices = kept.index.to_numpy()[sub.indices]
    sub.duplicates = duplicates
    if len(sub.data) < 4:
        repeats = f", {duplicates} duplicates" if duplicates else ""
        raise InvalidSettingsError(f"only {len(sub.data)} particles fit a {box}-voxel box inside "
                                   f"the tomogram ({sub.skipped} too close to the edge{repeats}).")
    return sub
