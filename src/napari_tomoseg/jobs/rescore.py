"""Score picks against a reference (template matching) and write them with their scores."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..averaging.template_scores import TemplateSettings, iter_template_scores, suggested_cut
from ..io.particle_files import check_particle_output, write_particles
from ..io.particles import TomogramFrame
from .progress import Job, Progress


def rescore_job(volume: np.ndarray, frame: TomogramFrame, table: pd.DataFrame,
                reference: np.ndarray, settings: TemplateSettings,
                output: str | os.PathLike | None = None, cut: float | str | None = None,
                overwrite: bool = True) -> Job[tuple[pd.DataFrame, float]]:
    """(the picks with a ``reference_score`` column, the suggested cut).

    ``cut``: None keeps every pick, "auto" drops those below the suggested cut (the
    median less 2 MADs), a number those below it. Written to ``output`` when given (its
    folder made if needed).
    """
    if output is not None:  # before the work: a refused output costs nothing
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        check_particle_output(output, overwrite=overwrite)
    yield Progress(0, 1, "matching orientations")
    work = iter_template_scores(volume, table[["z", "y", "x"]].to_numpy(float), reference,
                                frame.voxel_size, settings)
    try:
        while True:
            done, total = next(work)
            yield Progress(done, total, "matching orientations")
    except StopIteration as finished:
        scores = finished.value
    finally:
        work.close()
    table = table.assign(reference_score=scores)
    suggestion = suggested_cut(scores)
    limit = suggestion if cut == "auto" else cut
    if limit is not None:
        table = table[table["reference_score"] >= float(limit)]
    if output is not None:  # after the last yield: a finished file is never called cancelled
        write_particles(Path(output), table, frame, box_size=reference.shape[0],
                        overwrite=overwrite)
    return table, suggestion
