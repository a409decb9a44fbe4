"""Write averaging results the field's tools read: MRC maps, FSC table, RELION 5 STAR.

Every output path is checked before the first file is written, so a refusal
(an existing result without ``overwrite``, or an output that is one of the
run's own inputs) never leaves a mix of old and new files.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InvalidSettingsError
from ..io import atomic
from ..io.atomic import atomic_path
from ..io.mrc import write_volume
from ..io.paths import same_file
from ..io.particles import TomogramFrame, particle_table, write_star
from .align import Alignment
from .rotations import relion_angles


Paths = Sequence[str | os.PathLike]


def average_outputs(folder: str | os.PathLike, name: str = "average") -> dict[str, Path]:
    """The files ``write_average_result`` writes, by key."""
    folder = Path(folder)
    return {"average": folder / f"{name}.mrc", "half1": folder / f"{name}_half1.mrc",
            "half2": folder / f"{name}_half2.mrc", "fsc": folder / f"{name}_fsc.csv",
            "particles": folder / f"{name}_particles.star", "settings": folder / f"{name}.json"}


def class_outputs(folder: str | os.PathLike, classes: int, name: str = "class") -> dict[str, Path]:
    """The files ``write_class_result`` writes, by key."""
    folder = Path(folder)
    written = {f"class{c}": folder / f"{name}_{c}.mrc" for c in range(1, classes + 1)}
    return {**written, "particles": folder / f"{name}_particles.star"}


def check_outputs(outputs: Paths, overwrite: bool = False, inputs: Paths = ()) -> None:
    """Refuse before any work: an output that is an input (always), or that exists (unless
    ``overwrite``). The input check also catches a ``--name`` equal to the tomogram's."""
    outputs = [Path(p) for p in outputs]
    for out in outputs:
        for source in (Path(p) for p in inputs if p is not None):
            if same_file(out, source):
                raise InvalidSettingsError(f"the output {out} is an input of this run; "
                                           "choose another --output or --name.")
    existing = [str(p) for p in outputs if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} exist{'s' if len(existing) == 1 else ''}; "
                              "use --overwrite or another --output or --name.")


def aligned_particle_table(origins_zyx: np.ndarray, alignment: Alignment, **columns) -> pd.DataFrame:
    """Refined centres (box centre + found shift) with RELION angles of each particle."""
    zyx = np.asarray(origins_zyx, dtype=float) + np.asarray(alignment.shifts)[:, ::-1]
    angles = relion_angles(alignment.matrices)
    return particle_table(zyx, rot=angles[:, 0], tilt=angles[:, 1], psi=angles[:, 2],
                          alignment_score=alignment.scores, **columns)


def write_fsc_table(path: str | os.PathLike, rows: list[dict]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.6g")
    return path


def write_average_result(folder: str | os.PathLike, result, frame: TomogramFrame,
                         origins_zyx: np.ndarray, name: str = "average",
                         extra_columns: dict | None = None, overwrite: bool = False,
                         inputs: Paths = ()) -> dict[str, Path]:
    """``{name}.mrc``, half maps, ``{name}_fsc.csv``, ``{name}_particles.star``, settings JSON."""
    paths = average_outputs(folder, name)
    check_outputs(paths.values(), overwrite, inputs)
    Path(folder).mkdir(parents=True, exist_ok=True)
    voxel = result.voxel_size
    written = {  # checked above: overwrite here only replaces what the caller allowed
        "average": write_volume(paths["average"], result.average, voxel, overwrite=True),
        "half1": write_volume(paths["half1"], result.half_maps[0], voxel, overwrite=True),
        "half2": write_volume(paths["half2"], result.half_maps[1], voxel, overwrite=True),
        "fsc": write_fsc_table(paths["fsc"], result.fsc_table()),
    }
    table = aligned_particle_table(origins_zyx, result.alignment, half=result.halves,
                                   **(extra_columns or {}))
    written["particles"] = write_star(paths["particles"], table, frame)
    info = {"resolution_angstrom": result.resolution, "voxel_size": voxel,
            "particles": int(len(result.halves)), "settings": asdict(result.settings),
            "history": result.history, **result.report()}
    written["settings"] = atomic.write_text(paths["settings"], json.dumps(info, indent=2))
    return written


def write_class_result(folder: str | os.PathLike, result, voxel_size: float, frame: TomogramFrame,
                       origins_zyx: np.ndarray, name: str = "class", overwrite: bool = False,
                       inputs: Paths = (), extra: dict | None = None) -> dict[str, Path]:
    """One MRC per class (``{name}_1.mrc`` ...) and the particles with their class, and
    ``extra`` columns carried from the input (e.g. ``half``: a later refinement keeps it)."""
    paths = class_outputs(folder, len(result.averages), name)
    check_outputs(paths.values(), overwrite, inputs)
    Path(folder).mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for c, volume in enumerate(result.averages, start=1):
        written[f"class{c}"] = write_volume(paths[f"class{c}"], volume, voxel_size, overwrite=True)
    table = aligned_particle_table(origins_zyx, result.alignment,
                                   **{"class": result.classes, **(extra or {})})
    written["particles"] = write_star(paths["particles"], table, frame)
    return written
