"""Picks of a map opened from a file, outside any session, kept beside that file.

Judging the picks of a batch's maps in napari (no annotation session) kept them only in
the viewer: closing it lost every accept and reject. They are saved as a session's are,
in ``MAP.mrc.picks/picks/FEATURE.json`` beside the map (in the user data folder when the
map's folder is read-only), and choosing the map on the Pick tab again shows them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from napari.layers import Points

from ..errors import TomosegError
from ..picks_store import picks_path, read_saved
from .layer_tags import layers_with, tag_of

SUFFIX = ".picks"


def map_path(layer) -> Path | None:
    """The MRC file a map layer was opened from, if it still exists."""
    source = getattr(getattr(layer, "source", None), "path", None)
    path = Path(source) if source else None
    return path if path is not None and path.is_file() else None


def picks_folder(layer) -> Path | None:
    """Where the picks of a map opened from a file are kept (None: a map of no file)."""
    path = map_path(layer)
    if path is None:
        return None
    if os.access(path.parent, os.W_OK):
        return path.with_name(path.name + SUFFIX)
    from platformdirs import user_data_dir

    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    return Path(user_data_dir("napari-tomoseg", appauthor=False)) / "map-picks" / \
        f"{path.name}-{key}{SUFFIX}"


def made_picks_folder(layer) -> Path | None:
    """``picks_folder``, made (new picks are saved into it at once); None when it cannot be."""
    folder = picks_folder(layer)
    try:
        return folder.mkdir(parents=True, exist_ok=True) or folder if folder else None
    except OSError:
        return None  # the picks are not saved: the Pick tab says Export keeps them


def show_saved_picks(viewer, layer, feature: str, add_layer) -> Points | None:
    """The saved picks of ``feature`` on the map ``layer`` as a layer (``add_layer``:
    ``session_layers.add_picks_layer``), unless none were saved, they are open already, the
    map belongs to a session (whose picks count), it was written again since (its picks are
    another map's), or they were made on another grid. Never raises: it runs as a map is
    chosen, and a bad file there must not break the Pick tab."""
    from .session_layers import session_of_map

    try:
        folder = picks_folder(layer)
        path = picks_path(folder, feature) if folder else None
        if path is None or not path.is_file() or session_of_map(viewer, layer) is not None:
            return None
        if map_path(layer).stat().st_mtime_ns > path.stat().st_mtime_ns:
            return None  # e.g. a batch rerun over it: a new Pick keeps these as .previous
        if any(str(tag_of(l).get("session")) == str(folder) for l in
               layers_with(viewer, "picks", feature=feature)):
            return None
        saved = read_saved(path)
        geometry = saved.metadata.get("tomoseg") or {}
        if geometry.get("shape") is not None and tuple(geometry["shape"]) != layer.data.shape:
            return None
        voxel = float(layer.scale[-1])
        size = (saved.diameter or 10.0 * voxel) / voxel
        return add_layer(viewer, saved, size, folder, tag_of(layer).get("tomogram"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, TomosegError):
        return None  # unreadable: a new Pick sets the file aside as .previous
