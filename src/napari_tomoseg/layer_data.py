"""Files -> napari layer-data tuples, as plain functions without napari imports.

A layer-data tuple is ``(data, kwargs, layer_type)``; napari's reader and
sample-data hooks return lists of them. Keeping the conversion here (not
in ``_napari``) lets tests and the CLI check it without a viewer.
The tomogram's geometry travels in ``metadata['tomoseg']`` so that points
and labels written later land on the right voxels.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .io.mrc import MRC_SUFFIXES, open_volume, robust_contrast_limits
from .io.probability_header import is_marked_labels, map_tomogram_name, stored_probability
from .io.particles import (TomogramFrame, read_csv, read_csv_world, read_star,
                           star_tilt_series_pixel_size)
from .features import FEATURE_COLOURS, FEATURES
from .tomogram import tomogram_name  # lives in tomogram.py; still importable from here

LayerData = tuple[object, dict, str]
ROLE_KEY = "tomoseg_role"  # metadata[ROLE_KEY] = {"role": ..., ...}: see _napari.layer_tags
_LABEL_HINTS = ("label", "mask", "seg") + FEATURES


def geometry_metadata(name: str, shape, voxel_size: float, origin, path: str | None = None,
                      tilt_series_pixel_size: float | None = None) -> dict:
    """``metadata['tomoseg']``: the tomogram's geometry and its RELION name (the file stem)."""
    return {"tomoseg": {"tomo_name": name, "shape": [int(s) for s in shape],
                        "voxel_size": float(voxel_size), "origin": [float(o) for o in origin],
                        "path": path,
                        "tilt_series_pixel_size": (float(tilt_series_pixel_size)
                                                   if tilt_series_pixel_size else None)}}


def frame_metadata(frame: TomogramFrame, path: str | None = None) -> dict:
    return geometry_metadata(frame.name, frame.shape, frame.voxel_size, frame.origin, path,
                             frame.tilt_series_pixel_size)


def frame_from_metadata(metadata: dict | None) -> TomogramFrame | None:
    geometry = (metadata or {}).get("tomoseg")
    if not geometry or geometry.get("shape") is None:
        return None
    size = geometry.get("tilt_series_pixel_size")
    return TomogramFrame(name=str(geometry["tomo_name"]), shape=tuple(geometry["shape"]),
                         voxel_size=float(geometry["voxel_size"]),
                         origin=tuple(geometry["origin"]),
                         tilt_series_pixel_size=float(size) if size else None)


def layer_frame(layer) -> TomogramFrame:
    """A tomogram layer's frame: the one its reader recorded (file stem as the name, tilt-series
    pixel size when known) while it matches the data, else one from the layer itself."""
    shape = tuple(int(s) for s in layer.data.shape)
    frame = frame_from_metadata(layer.metadata)
    if frame is not None and tuple(frame.shape) == shape:
        return frame
    return TomogramFrame(clean_tomo_name(layer.name), shape, float(layer.scale[-1]),
                         tuple(float(t) for t in layer.translate))


def clean_tomo_name(name: str) -> str:
    """A tomogram name for rlnTomoName from a napari layer name.

    Layer names such as ``prediction: ribosome`` or ``picks: ribosome [1]``
    describe a layer, not a tomogram: the part before the colon and napari's
    ``[n]`` suffix are dropped, spaces become underscores.
    """
    text = re.sub(r"\s*\[\d+\]$", "", str(name)).strip()
    if ":" in text:
        text = text.split(":", 1)[1].strip()
    return re.sub(r"\s+", "_", text) or "tomogram"


def _looks_like_labels(path: Path, data: np.ndarray) -> bool:
    if data.dtype.kind not in "iub":
        return False
    stem = tomogram_name(path).lower()
    return is_marked_labels(path) or any(stem.endswith(hint) or f"_{hint}" in stem
                                         for hint in _LABEL_HINTS)


# napari draws the scale bar and reads cursor positions in these; every layer the plugin
# makes carries them (napari ignores units altogether while layers disagree)
UNITS = "angstrom"


def volume_layer(path: str | os.PathLike) -> LayerData:
    """An MRC file as an Image layer (or Labels for integer masks) in Angstrom."""
    path = Path(path)
    data, info = open_volume(path)
    name = tomogram_name(path)
    probability = stored_probability(path)
    # picks made on a map belong to the tomogram it was made from (rlnTomoName)
    tomogram = map_tomogram_name(path) if probability is not None else name
    kwargs = {
        "name": name,
        "scale": info.voxel_size,
        "units": UNITS,
        "translate": info.origin,
        "metadata": geometry_metadata(tomogram, info.shape, info.isotropic_voxel_size,
                                      info.origin, str(path.resolve())),
    }
    kwargs["metadata"]["tomoseg"]["voxel_size_in_header"] = info.voxel_size_in_header
    if probability is not None:  # a map from segment: shown and tagged as one
        feature, threshold = probability
        data = _as_unit_probability(data)
        kwargs["metadata"].update({ROLE_KEY: {"role": "probability", "feature": feature},
                                   "threshold": threshold})
        colour = FEATURE_COLOURS.get(feature, "#f2c94c")
        kwargs.update(colormap=probability_colormap_spec(colour, threshold), blending="additive",
                      contrast_limits=(0.0, 1.0))
        return data, kwargs, "image"
    if _looks_like_labels(path, data):
        feature = next((f for f in FEATURES if name.lower().endswith(f)), None)
        if feature:  # napari takes a {label: colour} dict as a direct colormap
            kwargs["colormap"] = {0: "transparent", 1: FEATURE_COLOURS[feature], None: "magenta"}
        # labels are edited (painted) in napari: an in-memory copy, never the file itself
        return np.array(data), kwargs, "labels"
    kwargs.update(colormap="gray", contrast_limits=robust_contrast_limits(data))
    return data, kwargs, "image"


def _as_unit_probability(data: np.ndarray) -> np.ndarray:
    """A map ``segment`` stored as 0-255 integers as float16 0-1 (the same bytes): shown
    against 0-1 contrast limits it was all saturated, and one holding only 0s and 1s (a
    feature the tomogram lacks) was picked as a mask of probability 1."""
    if not np.issubdtype(data.dtype, np.integer):
        return data
    out = np.empty(data.shape, np.float16)
    for z in range(0, data.shape[0], 16):  # slab by slab: no float64 copy of the whole map
        out[z:z + 16] = np.asarray(data[z:z + 16], np.float32) / np.float32(255.0)
    return out


def probability_colormap_spec(colour: str, threshold: float) -> dict:
    """A probability map's colours as napari's colormap fields: the whole probability from
    0 (a first preview of p = 0.3 is visible), dim below ``threshold`` and full above it,
    so the step shows where merge and Pick will cut. Used by the reader and the widgets."""
    rgb = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    t = min(max(float(threshold), 0.01), 0.99)
    return {"colors": [[0, 0, 0, 1], [0.45 * c for c in rgb] + [1], rgb + [1], rgb + [1]],
            "controls": [0.0, t - 0.005, t, 1.0], "name": f"tomoseg {colour} {t:.3f}"}


def tomogram_next_to(path: str | os.PathLike, names: list[str]) -> Path | None:
    """A tomogram called one of ``names`` beside a particle file (or in ../, tomograms/)."""
    folder = Path(path).parent
    places = (folder, folder.parent, folder / "tomograms", folder.parent / "tomograms")
    for name in names:
        for place in places:
            for suffix in MRC_SUFFIXES:
                for candidate in (place / f"{name}{suffix}", place / f"{name}{suffix}.gz"):
                    if candidate.is_file():
                        return candidate
    return None


def frame_for_particles(path: str | os.PathLike) -> TomogramFrame | None:
    """The frame of the tomogram a STAR file's particles belong to, from files alone.

    RELION 5 coordinates are relative to the tomogram centre, so placing them
    needs the tomogram's size: it is read from the header of the tomogram
    named by rlnTomoName next to the file. None when there is none.
    """
    path = Path(path)
    if path.suffix.lower() != ".star":
        return None
    from .io.star import read_star_blocks

    try:
        particles = read_star_blocks(path).get("particles")
        names = sorted(set(particles["rlnTomoName"].astype(str)))
    except Exception:  # unreadable here: read_star gives the clear error later
        return None
    tomogram = tomogram_next_to(path, names)
    if tomogram is None:
        return None
    from .io.mrc import read_header
    from .tomogram import volume_frame

    _, info = read_header(tomogram)
    return volume_frame(info, tomogram_name(tomogram))


def points_kwargs(table: pd.DataFrame, frame: TomogramFrame | None, name: str,
                  voxel_size: float | None = None) -> dict:
    """Points-layer keyword arguments: data in tomogram pixels, scale/translate in Angstrom."""
    extra = table.drop(columns=["z", "y", "x"], errors="ignore").reset_index(drop=True)
    if frame is not None:
        scale = (frame.voxel_size,) * 3
        translate = frame.origin
        metadata = frame_metadata(frame)
    else:
        scale = (voxel_size or 1.0,) * 3
        translate = (0.0, 0.0, 0.0)
        metadata = {}
    feature = str(extra["feature"].iloc[0]) if "feature" in extra and len(extra) else None
    colour = FEATURE_COLOURS.get(feature or "", "#eb5757")
    metadata[ROLE_KEY] = {"role": "picks", **({"feature": feature} if feature else {})}
    diameter_px = 250.0 / scale[0] if feature == "ribosome" else 10.0
    units = UNITS if frame is not None or voxel_size else "pixel"
    return {"name": name, "scale": scale, "units": units, "translate": translate, "features": extra,
            "feature_defaults": hand_added_defaults(extra),
            "metadata": metadata, "size": diameter_px, "face_color": "transparent",
            "border_color": colour, "border_width": 0.1}


def hand_added_defaults(features: pd.DataFrame) -> dict:
    """What a point added by hand carries: no score, angle or measure (NaN), not another
    pick's (napari copies the last row's values, which then were written as measured)."""
    defaults = {}
    for column in features.columns:
        values = features[column]
        if pd.api.types.is_float_dtype(values):
            defaults[column] = np.nan
        elif pd.api.types.is_integer_dtype(values):  # undecided; not measured; else (a half
            defaults[column] = {"status": 0, "size": -1}.get(  # set, a class) the last one's
                column, int(values.iloc[-1]) if len(values) else 1)
        else:  # text (the feature's name): the layer's own
            defaults[column] = values.iloc[-1] if len(values) else ""
    return defaults


def points_layer(path: str | os.PathLike, frame: TomogramFrame | None = None) -> LayerData:
    """A STAR or CSV particle file as a Points layer placed on ``frame``'s voxels."""
    path = Path(path)
    if path.suffix.lower() == ".star":
        table = read_star(path, frame=frame)
        known = star_tilt_series_pixel_size(path, frame.name if frame else None)
        if frame is not None and known and not frame.tilt_series_pixel_size:
            frame = replace(frame, tilt_series_pixel_size=known)  # remembered for writing back
    else:
        table = read_csv(path)
    table = table.drop(columns=["tomo_name"], errors="ignore")
    data = table[["z", "y", "x"]].to_numpy(dtype=float)
    # without a tomogram, a STAR file's pixels are unbinned tilt-series pixels of the size its
    # optics give (then the points sit in Angstrom, over a tomogram opened later); else unknown
    unbinned = known if path.suffix.lower() == ".star" and frame is None else None
    world = read_csv_world(path) if path.suffix.lower() == ".csv" and frame is None else None
    if world is not None:  # our CSV carries Angstrom: placed there, exact over its tomogram
        data, unbinned = world, 1.0  # (z, y, x) Angstrom at scale 1
    return data, points_kwargs(table, frame, path.stem, voxel_size=unbinned), "points"
