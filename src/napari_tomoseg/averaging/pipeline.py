"""Files in, files out: what ``tomoseg average`` and ``tomoseg classify`` run."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InvalidCoordinatesError, InvalidSettingsError
from ..io.mrc import open_volume
from ..io.particles import TomogramFrame, read_csv, read_star, star_tilt_series_pixel_size
from .align import Alignment
from .classify import ClassifySettings, ClassResult, iter_classify
from .extract import Subtomograms, extract_subtomograms
from .files import write_average_result, write_class_result
from .refine import AverageResult, AverageSettings, iter_average
from .rotations import relion_matrices


def open_tomogram_and_particles(tomogram: str | os.PathLike, particles: str | os.PathLike,
                                tomo_name: str | None = None,
                                tilt_series_pixel_size: float | None = None):
    """The (memory-mapped) tomogram, its frame, and the particles placed on its voxels.

    A STAR file keeps only the rows of this tomogram (``tomo_name``, else the
    file stem; a file of a single tomogram lends its name to the outputs) and
    lends its rlnTomoTiltSeriesPixelSize when none is given.
    """
    from ..layer_data import tomogram_name

    volume, info = open_volume(tomogram)
    frame = TomogramFrame(name=tomo_name or tomogram_name(tomogram), shape=info.shape,
                          voxel_size=info.isotropic_voxel_size, origin=info.origin,
                          tilt_series_pixel_size=tilt_series_pixel_size)
    path = Path(particles)
    if path.suffix.lower() == ".star":
        table = read_star(path, frame, tomo_name=tomo_name)
        names = set(table["tomo_name"]) if "tomo_name" in table else set()
        name = names.pop() if len(names) == 1 and not tomo_name else frame.name
        frame = replace(frame, name=name, tilt_series_pixel_size=(
            tilt_series_pixel_size or star_tilt_series_pixel_size(path, name)))
    else:
        table = read_csv(path)
    if len(table) == 0:
        raise InvalidCoordinatesError(f"{path.name} has no particles for {frame.name}.")
    return volume, frame, table


def _extract(volume, table: pd.DataFrame, box: int, edge: str, progress) -> Subtomograms:
    sub = extract_subtomograms(volume, table[["z", "y", "x"]].to_numpy(float), box, edge=edge,
                               progress=progress)
    if len(sub.data) < 4:
        raise InvalidSettingsError(f"only {len(sub.data)} particles fit a {box}-voxel box inside "
                                   f"the tomogram ({sub.skipped} too close to the edge).")
    return sub


def run_average(volume, frame: TomogramFrame, table: pd.DataFrame, settings: AverageSettings,
                output: str | os.PathLike, reference: np.ndarray | None = None,
                edge: str = "skip", name: str = "average", progress=None):
    """Extract, average, write; returns (result, subtomograms, written files)."""
    sub = _extract(volume, table, settings.box, edge, progress)
    result = None
    for state in iter_average(sub.data, frame.voxel_size, settings, reference):
        if isinstance(state, AverageResult):
            result = state
        elif progress:
            note = f" - {state.resolution:.1f} A" if state.resolution else ""
            progress(state.step, state.total, f"{state.stage}{note}")
    extra = {"feature": table["feature"].to_numpy()[sub.indices]} if "feature" in table else {}
    written = write_average_result(output, result, frame, sub.origins, name, extra)
    return result, sub, written


def run_classify(volume, frame: TomogramFrame, table: pd.DataFrame, averaging: AverageSettings,
                 settings: ClassifySettings, output: str | os.PathLike, edge: str = "skip",
                 name: str = "class", progress=None):
    """Classify particles that carry orientations (e.g. from ``tomoseg average``)."""
    if not all(c in table for c in ("rot", "tilt", "psi")):
        raise InvalidCoordinatesError("classification needs particles with orientations "
                                      "(rlnAngleRot/Tilt/Psi): run tomoseg average first.")
    sub = _extract(volume, table, averaging.box, edge, progress)
    angles = table[["rot", "tilt", "psi"]].to_numpy(float)[sub.indices]
    consensus = Alignment(relion_matrices(angles), sub.offsets[:, ::-1].copy(), np.zeros(len(angles)))
    result = None
    for state in iter_classify(sub.data, frame.voxel_size, consensus, averaging, settings):
        if isinstance(state, ClassResult):
            result = state
        elif progress:
            progress(state.iteration, state.total,
                     f"classes {state.counts.tolist()}, {state.changed:.0%} moved")
    written = write_class_result(output, result, frame.voxel_size, frame, sub.origins, name)
    return result, sub, written
