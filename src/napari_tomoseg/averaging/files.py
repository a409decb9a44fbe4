"""Write averaging results the field's tools read: MRC maps, FSC table, RELION 5 STAR."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic
from ..io.atomic import atomic_path
from ..io.mrc import write_volume
from ..io.particles import TomogramFrame, particle_table, write_star
from .align import Alignment
from .rotations import relion_angles


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
                         extra_columns: dict | None = None) -> dict[str, Path]:
    """``{name}.mrc``, half maps, ``{name}_fsc.csv``, ``{name}_particles.star``, settings JSON."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    voxel = result.voxel_size
    written = {
        "average": write_volume(folder / f"{name}.mrc", result.average, voxel, overwrite=True),
        "half1": write_volume(folder / f"{name}_half1.mrc", result.half_maps[0], voxel, overwrite=True),
        "half2": write_volume(folder / f"{name}_half2.mrc", result.half_maps[1], voxel, overwrite=True),
        "fsc": write_fsc_table(folder / f"{name}_fsc.csv", result.fsc_table()),
    }
    table = aligned_particle_table(origins_zyx, result.alignment, half=result.halves,
                                   **(extra_columns or {}))
    written["particles"] = write_star(folder / f"{name}_particles.star", table, frame)
    info = {"resolution_angstrom": result.resolution, "voxel_size": voxel,
            "particles": int(len(result.halves)), "settings": asdict(result.settings),
            "history": result.history, **result.report()}
    written["settings"] = folder / f"{name}.json"
    atomic.write_text(written["settings"], json.dumps(info, indent=2))
    return written


def write_class_result(folder: str | os.PathLike, result, voxel_size: float, frame: TomogramFrame,
                       origins_zyx: np.ndarray, name: str = "class") -> dict[str, Path]:
    """One MRC per class (``{name}_1.mrc`` ...) and the particles with their class."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    for c, volume in enumerate(result.averages, start=1):
        written[f"class{c}"] = write_volume(folder / f"{name}_{c}.mrc", volume, voxel_size,
                                            overwrite=True)
    table = aligned_particle_table(origins_zyx, result.alignment, **{"class": result.classes})
    written["particles"] = write_star(folder / f"{name}_particles.star", table, frame)
    return written
