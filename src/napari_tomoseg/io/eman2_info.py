"""EMAN2 (>= 2.9) tomogram info JSON: picks as ``boxes_3d`` with named classes.

EMAN2 finds a tomogram's picks only in its ``info/<tomogram>_info.json``, which also
holds the tilt alignment (``tlt_params``, ``tlt_file``), defocus and more. Its boxer
(cryoem/eman2 programs/e2spt_boxer.py, EMTomoBoxer.SaveJson) opens that file as a
persistent dict and sets only ``boxes_3d`` and ``class_list``, converting with the
file's own ``apix_unbin``. We write the same way: an existing file keeps every other
key and the boxes of every other class; our feature's class is replaced. (A first
version rebuilt the file from the picks alone and deleted the tilt alignment.)

Each box is ``[x, y, z, source, score, class index]``; with ``apix_unbin`` the
coordinates are ``(p - N // 2) * apix / apix_unbin`` (centred, unbinned pixels) and a
class's ``boxsize`` is ``round(box * apix / apix_unbin)``; without it, this tomogram's
pixels, uncentred. Class indices are 0-based; our ``class`` column is RELION's
1-based ``rlnClassNumber``, so reading adds 1.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InvalidCoordinatesError
from .atomic import write_text
from .particles import AXES, CoordinateWarning, TomogramFrame, check_coordinates, particle_table


def eman2_centre(frame: TomogramFrame) -> np.ndarray:
    """EMAN2's image centre: voxel N // 2 (RELION's centred coordinates use N / 2)."""
    return np.asarray(frame.shape, dtype=float) // 2


def _cropped(frame: TomogramFrame) -> bool:
    """A header origin that is neither 0 nor EMAN2's own (its MRC writer stores start indices
    of -n // 2, read as that many voxels: mrcio.cpp), on some axis: maybe a crop."""
    origin = np.asarray(frame.origin, float)
    centred = -(np.asarray(frame.shape) // 2) * frame.voxel_size
    off = np.minimum(np.abs(origin), np.abs(origin - centred))
    return bool(np.any(off > 0.5 * frame.voxel_size))


def _origin_text(frame: TomogramFrame) -> str:
    z, y, x = (float(o) for o in frame.origin)
    return f"(x {x:g}, y {y:g}, z {z:g})"


def _existing(path: Path) -> dict:
    """The info file already at ``path`` (empty if none); one we cannot read is refused,
    never replaced: it may hold a tilt alignment."""
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InvalidCoordinatesError(f"{path.name} exists and is not JSON ({exc}); it is not "
                                      "replaced: write the picks to another file.") from exc
    if not isinstance(record, dict):
        raise InvalidCoordinatesError(f"{path.name} exists and is not an EMAN2 info file (a "
                                      "JSON object); it is not replaced.")
    return record


def _class_names(record: dict) -> dict[int, str]:
    """``class_list`` as {index: name}; older EMAN2 stored a bare name per class."""
    names = {}
    for key, value in (record.get("class_list") or {}).items():
        name = value if isinstance(value, str) else (value or {}).get("name", key)
        names[int(key)] = str(name)
    return names


def _unbinned_size(record: dict, frame: TomogramFrame, given: float | None, name: str):
    """The file's ``apix_unbin`` wins, as in EMAN2's boxer; a different one given is said."""
    ours = given or frame.tilt_series_pixel_size
    theirs = record.get("apix_unbin")
    if theirs:
        if ours and abs(float(theirs) - float(ours)) > 0.01 * float(theirs):
            warnings.warn(f"{name}: its apix_unbin {float(theirs):g} A differs from the "
                          f"tilt-series pixel size {float(ours):g} A; boxes are written with "
                          "the file's, as EMAN2 reads them.", CoordinateWarning, stacklevel=3)
        return float(theirs)
    return float(ours) if ours else None


def write_eman2_json(path: str | os.PathLike, table: pd.DataFrame, frame: TomogramFrame,
                     box_size: int, unbinned_voxel_size: float | None = None,
                     feature: str = "particle") -> Path:
    """Write ``table`` as class ``feature`` of the info file at ``path``, keeping the rest.

    ``box_size`` is in voxels of this tomogram."""
    path = Path(path)
    check_coordinates(table, f"the {feature} picks")
    record = _existing(path)
    names = _class_names(record)
    used = set(names) | {int(b[5]) for b in record.get("boxes_3d") or [] if len(b) > 5}
    index = next((i for i, n in names.items() if n == feature), max(used, default=-1) + 1)
    kept = [b for b in record.get("boxes_3d") or [] if not (len(b) > 5 and int(b[5]) == index)]
    if kept and not record.get("apix_unbin"):  # their boxes are this tomogram's pixels:
        unbinned = None  # an apix_unbin added would move and rescale every one of them
        warnings.warn(f"{path.name}: its boxes are in this tomogram's pixels (no apix_unbin), "
                      "so ours are written the same way.", CoordinateWarning, stacklevel=2)
    else:
        unbinned = _unbinned_size(record, frame, unbinned_voxel_size, path.name)
        if not unbinned:
            warnings.warn(f"{path.name}: the tilt-series pixel size is unknown: boxes written "
                          "in this tomogram's pixels without apix_unbin.", CoordinateWarning,
                          stacklevel=2)
    if not record.get("tlt_params"):  # e2spt_extract reads tlt_params and tlt_file at once
        warnings.warn(f"{path.name} has no tilt alignment (tlt_params, tlt_file): EMAN2 can "
                      "show these boxes, but e2spt_extract needs the tomogram's own info file "
                      "(info/<tomogram>_info.json of the EMAN2 project that reconstructed it): "
                      "write into that one.", CoordinateWarning, stacklevel=2)
    elif _cropped(frame):
        warnings.warn(f"{path.name}: e2spt_extract places boxes by the centre of its own "
                      "reconstruction, but this tomogram's header origin is "
                      f"{_origin_text(frame)} A, so it may be a crop of another volume (e.g. "
                      "trimvol): its picks would be extracted off by as much as the crop moved "
                      "the centre. Pick on the tomogram EMAN2 reconstructed.", CoordinateWarning,
                      stacklevel=2)
    zyx = table[list(AXES)].to_numpy(dtype=float)
    if unbinned:
        scale = frame.voxel_size / unbinned
        zyx = (zyx - eman2_centre(frame)) * scale
        size = int(np.round(box_size * scale))
    else:
        size = int(box_size)
    scores = table["score"].to_numpy(float) if "score" in table else np.zeros(len(table))
    ours = [[float(x), float(y), float(z), "tomoseg",
             float(score) if math.isfinite(score) else 0.0, index]
            for (z, y, x), score in zip(zyx, scores)]
    classes = dict(record.get("class_list") or {})
    classes[str(index)] = {"boxsize": size, "name": feature}
    record.update({"boxes_3d": kept + ours, "class_list": classes})
    if unbinned:
        record["apix_unbin"] = float(unbinned)
    write_text(path, json.dumps(record, indent=1))
    return path


def read_eman2_json(path: str | os.PathLike, frame: TomogramFrame) -> pd.DataFrame:
    """Boxes of an EMAN2 info JSON placed on ``frame``'s pixels, with their class (1-based)
    and its name as ``feature``."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        boxes = record["boxes_3d"]
        unbinned = record.get("apix_unbin")
        xyz = np.array([b[:3] for b in boxes], dtype=float).reshape(-1, 3)
        names = _class_names(record)
        index = [int(b[5]) if len(b) > 5 else 0 for b in boxes]
        scores = [float(b[4]) if len(b) > 4 else 0.0 for b in boxes]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InvalidCoordinatesError(f"{path.name} is not an EMAN2 info file with boxes_3d "
                                      f"({exc}).") from exc
    if unbinned:  # centred, unbinned pixels
        zyx = xyz[:, ::-1] * float(unbinned) / frame.voxel_size + eman2_centre(frame)
    else:  # this tomogram's pixels
        zyx = xyz[:, ::-1]
    table = particle_table(zyx, score=scores, **{"class": np.asarray(index, int) + 1})
    table["feature"] = [names.get(i, str(i)) for i in index]
    check_coordinates(table, path.name)
    return table
