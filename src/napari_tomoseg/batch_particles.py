"""A batch's last step for one tomogram: pick particles and trace filaments in its maps,
with the jobs the CLI runs (``pick_job``, ``trace_job``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import TomosegError

# degrees about y: the tilt series rescoring assumes unless told (TemplateSettings' own)
DEFAULT_TILT_RANGE = (-60.0, 60.0)


def pick_and_trace(maps: dict, frame, settings, thresholds: dict, out: Path, name: str,
                   result: dict, volume=None, protein_white: dict | None = None
                   ) -> dict[str, pd.DataFrame]:
    """{feature: picks}; outputs and counts go into ``result``. ``settings``: the batch's
    (``pick``, ``diameter``, ``rescore`` {feature: reference} with ``rescore_cut``, and
    ``trace`` {feature: diameter}). Rescoring needs the tomogram (``volume``), and takes its
    contrast from the feature's model (``protein_white``: trained with ``invert``)."""
    from .filaments import FilamentSettings
    from .jobs import run_job
    from .jobs.filaments import trace_job
    from .jobs.pick import pick_job
    from .picking import PickSettings
    from .probability_maps import open_probability

    tables = {}
    for feature in (*settings.pick, *settings.trace):
        if feature not in maps:
            raise TomosegError(f"cannot pick or trace '{feature}': no model for it.")
    for feature in settings.pick:
        pick = PickSettings(diameter=settings.diameter, threshold=thresholds.get(feature, 0.5))
        target = out / f"{name}_{feature}.star"
        # the header rule (0-255 maps of --dtype uint8), as merge reads them: a map whose
        # values end at 1 was read as certain everywhere
        reference = settings.rescore.get(feature)
        tables[feature] = run_job(pick_job(open_probability(maps[feature])[0], frame, pick,
                                           feature, None if reference else target))
        if reference:
            tables[feature], result.setdefault("cuts", {})[feature] = rescore_picks(
                volume, frame, tables[feature], reference, settings.rescore_cut, target,
                white=(protein_white or {}).get(feature, False), tilt_range=settings.tilt_range)
        result["outputs"].append(target.name)
        result["picks"][feature] = int(len(tables[feature]))
    for feature, diameter in settings.trace.items():
        trace = FilamentSettings(diameter=diameter, threshold=thresholds.get(feature, 0.5))
        points, tubes = filament_outputs(name, feature)
        found = run_job(trace_job(open_probability(maps[feature])[0], frame, trace, feature,
                                  out / points, out / tubes, overwrite=True))
        result["outputs"] += [points, tubes]
        result.setdefault("filaments", {})[feature] = len(found.paths)
    return tables


def filament_outputs(name: str, feature: str) -> tuple[str, str]:
    """The file names of a traced feature: its points (STAR) and its tubes (labels)."""
    return f"{name}_{feature}_filaments.star", f"{name}_{feature}_tubes.mrc"


def rescore_picks(volume, frame, table: pd.DataFrame, reference: str, cut, target: Path,
                  white: bool = False, tilt_range: tuple[float, float] = DEFAULT_TILT_RANGE
                  ) -> tuple[pd.DataFrame, float | None]:
    """``rescore_job`` (the CLI's ``tomoseg rescore``) on one tomogram's picks, written to
    ``target``: on the realistic benchmark it lifted the picks of a model reused on another
    tomogram from F1 0.90 to 0.97 (docs/averaging.md). ``white``: the tomogram shows protein
    bright (its model was trained inverted); ``tilt_range``: the tilt series' (degrees about y),
    whose missing wedge the reference is given. (picks, suggested cut or None without picks)."""
    from .averaging.files import open_reference
    from .averaging.template_scores import TemplateSettings
    from .io.particle_files import write_particles
    from .jobs import run_job
    from .jobs.rescore import rescore_job

    reference_map = open_reference(reference, frame.voxel_size)  # refused at another size
    if len(table) == 0:  # nothing to score: the empty file is still the tomogram's answer
        table = table.assign(reference_score=np.zeros(0))
        write_particles(target, table, frame, box_size=reference_map.shape[0])
        return table, None
    return run_job(rescore_job(volume, frame, table, reference_map,
                               TemplateSettings(invert=not white, tilt_min=tilt_range[0],
                                                tilt_max=tilt_range[1]), target, cut))
