"""Write averaging results the field's tools read: MRC maps, FSC table, RELION 5 STAR.

Every output path is checked before the first file is written, so a refusal
(an existing result without ``overwrite``, or an output that is one of the
run's own inputs) never leaves a mix of old and new files.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from dataclasses import asdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InvalidSettingsError
from ..io import atomic
from ..io.atomic import atomic_path
from ..io.mrc import write_volume
from ..io.paths import checked_name, same_file
from ..io.particles import TomogramFrame, particle_table, write_star
from .align import Alignment
from .rotations import relion_angles


Paths = Sequence[str | os.PathLike]


def average_outputs(folder: str | os.PathLike, name: str = "average") -> dict[str, Path]:
    """The files ``write_average_result`` writes, by key."""
    folder, name = Path(folder), checked_name(name, "average")
    return {"average": folder / f"{name}.mrc", "half1": folder / f"{name}_half1.mrc",
            "half2": folder / f"{name}_half2.mrc", "fsc": folder / f"{name}_fsc.csv",
            "particles": folder / f"{name}_particles.star", "settings": folder / f"{name}.json"}


def class_outputs(folder: str | os.PathLike, classes: int, name: str = "class") -> dict[str, Path]:
    """The files ``write_class_result`` writes, by key."""
    folder, name = Path(folder), checked_name(name, "average")
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
    table = aligned_particle_table(origins_zyx, result.alignment, half=result.halves,
                                   **(extra_columns or {}))
    info = {"resolution_angstrom": result.resolution, "voxel_size": voxel,
            "particles": int(len(result.halves)), "settings": asdict(result.settings),
            "history": result.history, **result.report()}
    with atomic.files_together(paths) as tmp:  # checked above: only what the caller allowed
        write_volume(tmp["average"], result.average, voxel, overwrite=True)
        write_volume(tmp["half1"], result.half_maps[0], voxel, overwrite=True)
        write_volume(tmp["half2"], result.half_maps[1], voxel, overwrite=True)
        write_fsc_table(tmp["fsc"], result.fsc_table())
        write_star(tmp["particles"], table, frame)
        atomic.write_text(tmp["settings"], json.dumps(info, indent=2))
    return dict(paths)


def write_class_result(folder: str | os.PathLike, result, voxel_size: float, frame: TomogramFrame,
                       origins_zyx: np.ndarray, name: str = "class", overwrite: bool = False,
                       inputs: Paths = (), extra: dict | None = None) -> dict[str, Path]:
    """One MRC per class (``{name}_1.mrc`` ...) and the particles with their class, and
    ``extra`` columns carried from the input (e.g. ``half``: a later refinement keeps it)."""
    paths = class_outputs(folder, len(result.averages), name)
    stale = stale_class_files(folder, len(result.averages), name)
    check_outputs([*paths.values(), *stale], overwrite, inputs)
    Path(folder).mkdir(parents=True, exist_ok=True)
    table = aligned_particle_table(origins_zyx, result.alignment,
                                   **{"class": result.classes, **(extra or {})})
    with atomic.files_together(paths) as tmp:
        for c, volume in enumerate(result.averages, start=1):
            write_volume(tmp[f"class{c}"], volume, voxel_size, overwrite=True)
        write_star(tmp["particles"], table, frame)
    for path in stale:  # an earlier run's classes beyond this one's count: not of this STAR
        path.unlink(missing_ok=True)
    return dict(paths)


def stale_class_files(folder: str | os.PathLike, classes: int, name: str = "class") -> list[Path]:
    """``{name}_N.mrc`` of an earlier classification with more classes than ``classes``:
    left beside the new STAR, class 3 of three read as part of a two-class result."""
    pattern = re.compile(rf"^{re.escape(name)}_(\d+)\.mrc$")
    found = []
    for path in sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []:
        match = pattern.match(path.name)
        if match and int(match[1]) > classes:  # also beyond a gap: class_4 without class_3
            found.append(path)
    return found


def open_reference(path: str | os.PathLike, voxel_size: float) -> np.ndarray:
    """A reference map for averaging, refused when its header gives another voxel size than
    the tomogram's: only its box was checked, and a 4 A RELION map of the same box as a
    10 A tomogram was used at 2.5x the particle's size without a word."""
    from ..io.mrc import open_volume

    volume, info = open_volume(path)
    theirs = info.isotropic_voxel_size if info.voxel_size_in_header else None
    if theirs == 1.0:  # a header never set (IMOD's and many programs' default): unknown
        warnings.warn(f"{Path(path).name} says 1 A per voxel, most likely an unset header: "
                      f"taken at the tomogram's {voxel_size:g} A.", stacklevel=2)
        theirs = None
    if theirs is not None and abs(theirs - voxel_size) > 0.01 * voxel_size:
        raise InvalidSettingsError(
            f"{Path(path).name} has {theirs:g} A voxels and the tomogram {voxel_size:g} A: "
            f"resample the reference to {voxel_size:g} A (e.g. relion_image_handler "
            f"--rescale_angpix {voxel_size:g} --new_box N), or set its header if it is "
            "already at that size.")
    return np.asarray(volume, dtype=np.float32)
