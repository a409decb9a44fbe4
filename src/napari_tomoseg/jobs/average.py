"""Subtomogram averaging and classification of picked particles, outputs on disk."""

from __future__ import annotations

import os
from contextlib import closing

import numpy as np
import pandas as pd

from ..averaging.align import Alignment
from ..averaging.classify import ClassifySettings, ClassResult, iter_classify
from ..averaging.extract import Subtomograms
from ..averaging.files import (Paths, average_outputs, check_outputs, class_outputs,
                               stale_class_files, write_average_result, write_class_result)
from ..averaging.pipeline import extract_particles
from ..averaging.refine import AverageResult, AverageSettings, iter_average
from ..averaging.rotations import relion_matrices
from ..errors import InvalidCoordinatesError
from ..io.particles import TomogramFrame
from .progress import Job, Progress, raise_if_stopped


def _stoppable(*_) -> None:
    """Extraction's progress callback: Stop is heard every 50 boxes (thousands of boxes
    from a lazily read tomogram take minutes, and Stop waited for all of them)."""
    raise_if_stopped()


def average_job(volume: np.ndarray, frame: TomogramFrame, table: pd.DataFrame,
                settings: AverageSettings, output: str | os.PathLike,
                reference: np.ndarray | None = None, edge: str = "skip",
                name: str = "average", overwrite: bool = True,
                inputs: Paths = ()) -> Job[tuple[AverageResult, Subtomograms, dict]]:
    """(result, subtomograms, written files). Progress payloads are the
    ``IterationState``s (current maps, resolution) for live display.

    The outputs are checked before any work (see ``check_outputs``): existing
    ones are replaced only with ``overwrite``, the files in ``inputs`` never.
    """
    check_outputs(average_outputs(output, name).values(), overwrite, inputs)
    yield Progress(0, 1, "extracting particles")
    sub = extract_particles(volume, table, settings.box, edge, progress=_stoppable,
                            min_distance=settings.min_distance)
    result = None
    halves = table["half"].to_numpy()[sub.indices] if "half" in table else None  # kept
    states = iter_average(sub.data, frame.voxel_size, settings, reference,
                          should_stop=raise_if_stopped, halves=halves)
    with closing(states):
        for state in states:
            if isinstance(state, AverageResult):
                result = state
                continue
            note = f" - {state.resolution:.1f} A" if state.resolution else ""
            yield Progress(state.step, state.total, f"{state.stage}{note}", payload=state)
    extra = {"feature": table["feature"].to_numpy()[sub.indices]} if "feature" in table else {}
    written = write_average_result(output, result, frame, sub.origins, name, extra,
                                   overwrite, inputs)
    return result, sub, written


def classify_job(volume: np.ndarray, frame: TomogramFrame, table: pd.DataFrame,
                 averaging: AverageSettings, settings: ClassifySettings,
                 output: str | os.PathLike, edge: str = "skip",
                 name: str = "class", overwrite: bool = True,
                 inputs: Paths = ()) -> Job[tuple[ClassResult, Subtomograms, dict]]:
    """Classify particles that carry orientations (e.g. from ``average_job``).

    Outputs are checked before any work, as in ``average_job``.
    """
    if not all(c in table for c in ("rot", "tilt", "psi")):
        raise InvalidCoordinatesError("classification needs particles with orientations "
                                      "(rlnAngleRot/Tilt/Psi): run tomoseg average first.")
    check_outputs([*class_outputs(output, settings.classes, name).values(),
                   *stale_class_files(output, settings.classes, name)], overwrite, inputs)
    yield Progress(0, 1, "extracting particles")
    sub = extract_particles(volume, table, averaging.box, edge, progress=_stoppable,
                            min_distance=averaging.min_distance)
    angles = table[["rot", "tilt", "psi"]].to_numpy(float)[sub.indices]
    if not np.isfinite(angles).all():  # e.g. points added by hand to an average's layer
        raise InvalidCoordinatesError(
            f"{int((~np.isfinite(angles).all(axis=1)).sum())} particles have no orientation "
            "(added by hand?): average them first, or remove them.")
    consensus = Alignment(relion_matrices(angles), sub.offsets[:, ::-1].copy(),
                          np.zeros(len(angles)))
    result = None
    states = iter_classify(sub.data, frame.voxel_size, consensus, averaging, settings,
                           should_stop=raise_if_stopped)
    with closing(states):
        for state in states:
            if isinstance(state, ClassResult):
                result = state
                continue
            yield Progress(state.iteration, state.total,
                           f"classes {state.counts.tolist()}, {state.changed:.0%} moved",
                           payload=state)
    extra = {c: table[c].to_numpy()[sub.indices] for c in ("half", "feature") if c in table}
    written = write_class_result(output, result, frame.voxel_size, frame, sub.origins, name,
                                 overwrite, inputs, extra)
    return result, sub, written
