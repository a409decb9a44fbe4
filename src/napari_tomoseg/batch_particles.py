"""A batch's last step for one tomogram: pick particles and trace filaments in its maps,
with the jobs the CLI runs (``pick_job``, ``trace_job``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import TomosegError


def pick_and_trace(maps: dict, frame, settings, thresholds: dict, out: Path, name: str,
                   result: dict) -> dict[str, pd.DataFrame]:
    """{feature: picks}; outputs and counts go into ``result``. ``settings``: the batch's
    (``pick``, ``diameter`` and ``trace`` {feature: diameter})."""
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
        tables[feature] = run_job(pick_job(open_probability(maps[feature])[0], frame, pick,
                                           feature, target))
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
