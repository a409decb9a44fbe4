"""Writer contributions: Image/Labels to MRC, Points to RELION 5 STAR and CSV.

Geometry comes from the layer: voxel size = scale, origin = translate,
and for points the tomogram they were picked on (``metadata['tomoseg']``);
never from the viewer, so a layer saves the same whatever else is open.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
from napari.utils.notifications import show_error, show_info

from ..errors import InvalidCoordinatesError, InvalidVolumeError, TomosegError
from ..io.mrc import write_volume
from ..io.probability_header import LABELS_MARK
from ..io.particles import particle_table, write_csv, write_star
from ..layer_data import frame_from_metadata


def _said(write):
    """napari catches a writer's ValueError (ours subclass it) and shows only "not a valid
    writer": the reason is shown first, so the user learns what to do."""
    @functools.wraps(write)
    def run(path: str, data, attributes: dict) -> list[str]:
        try:
            return write(path, data, attributes)
        except TomosegError as exc:
            show_error(f"Not saved: {exc}")
            raise
    return run


def _write_volume(path: str, data, attributes: dict, labels: tuple[str, ...] = ()) -> list[str]:
    data = np.asarray(data)
    if data.ndim != 3:
        raise InvalidVolumeError(f"only 3D layers can be saved as MRC tomograms "
                                 f"(this one is {data.ndim}D).")
    scale = tuple(float(s) for s in attributes.get("scale", (1.0,) * 3))[-3:]
    translate = tuple(float(t) for t in attributes.get("translate", (0.0,) * 3))[-3:]
    return [str(write_volume(path, data, scale, translate, overwrite=True, labels=labels))]


@_said
def write_image(path: str, data, attributes: dict) -> list[str]:
    return _write_volume(path, data, attributes)


@_said
def write_labels(path: str, data, attributes: dict) -> list[str]:
    return _write_volume(path, data, attributes, labels=(LABELS_MARK,))  # reopens as Labels


def _points_table_and_frame(data, attributes: dict):
    data = np.asarray(data, dtype=float).reshape(-1, 3)
    scale = np.asarray(attributes.get("scale", (1.0,) * 3), dtype=float)[-3:]
    translate = np.asarray(attributes.get("translate", (0.0,) * 3), dtype=float)[-3:]
    frame = frame_from_metadata(attributes.get("metadata"))
    if frame is None:
        raise InvalidCoordinatesError(
            "cannot tell which tomogram these points belong to: add them to a points layer "
            "made by napari-tomoseg (Pick, or a STAR/CSV file opened beside its tomogram), "
            "whose metadata names the tomogram, and save again.")
    world = data * scale + translate
    pixels = frame.world_to_pixel(world)
    features = attributes.get("features")
    columns = {}
    if features is not None and len(features) == len(pixels):
        for name in features.columns:
            columns[str(name)] = np.asarray(features[name])
    keep = _kept(columns, attributes.get("shown"), len(pixels))
    return particle_table(pixels[keep], **{k: v[keep] for k, v in columns.items()}), frame


def _kept(columns: dict, shown, n: int) -> np.ndarray:
    """Picks rejected in QC, or hidden by the score cut, are not written (as Export on the
    Pick tab): saving the layer wrote them all, rejected ones too (a trial)."""
    keep = np.ones(n, bool)
    if "status" in columns:
        status = pd.to_numeric(pd.Series(columns["status"]), errors="coerce").to_numpy()
        keep &= ~(status < 0)  # text ('good', 'bad') is not a judgement of ours: kept
    if shown is not None and len(shown) == n:
        keep &= np.asarray(shown, bool)
    if not keep.all():
        show_info(f"{int((~keep).sum())} of {n} picks rejected or below the score cut were "
                  "left out; the file holds the kept ones.")
    return keep


@_said
def write_points_star(path: str, data, attributes: dict) -> list[str]:
    table, frame = _points_table_and_frame(data, attributes)
    # a file opened from RELION and saved back lost its other columns, blocks and tomograms
    return [str(write_star(Path(path), table, frame, keep_richer=True))]


@_said
def write_points_csv(path: str, data, attributes: dict) -> list[str]:
    table, frame = _points_table_and_frame(data, attributes)
    return [str(write_csv(Path(path), table, frame))]
