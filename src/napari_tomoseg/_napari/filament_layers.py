"""Points along traced filaments as a layer: its helical columns follow the user's edits,
and the points of a session's map are saved in the session after every edit
(``filaments/FEATURE.json``) and shown again by a restore. Before, closing the viewer lost
the points deleted, moved or added by hand, and a second trace left the edited layer with
nothing to export it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from napari.layers import Points
from napari.utils.notifications import show_error

from ..feature_files import feature_file_stem, filaments_file
from ..filament_points import COLUMNS, as_edited
from ..layer_data import ROLE_KEY, frame_from_metadata
from ..picks_store import SavedPicks, keep_previous, read_saved, save_picks
from .layer_tags import tag, tag_of, tagged

ROLE, EDITED = "filaments", "edited filaments"
SESSION = "session"
TRACED = "tomoseg_traced"  # the points as traced (z y x + COLUMNS): what edits join
DIAMETER = "tomoseg_diameter"


def add_filament_points(viewer, saved: SavedPicks, place: dict, session: Path | None) -> Points:
    """A Points layer of ``saved`` (points in the map's pixels, ``COLUMNS`` as values), one
    colour per filament, placed as ``place`` (scale, translate) says."""
    table = saved.values.reset_index(drop=True)[list(COLUMNS)]
    traced = table.assign(z=saved.points[:, 0], y=saved.points[:, 1], x=saved.points[:, 2])
    voxel = float(place["scale"][-1])
    metadata = {**saved.metadata, TRACED: traced, DIAMETER: saved.diameter,
                ROLE_KEY: tagged(ROLE, feature=saved.feature,
                                 **({SESSION: str(session)} if session else {}))}
    layer = viewer.add_points(
        np.asarray(saved.points, float).reshape(-1, 3), name=f"{saved.feature} filaments",
        **place, size=(saved.diameter or 4 * voxel) / 4 / voxel, features=table,
        metadata=metadata,
        # a colour per filament; none found: napari cannot colour by an empty column
        **({"face_color": "filament", "face_colormap": "turbo"} if len(table) else {}))
    layer.events.data.connect(_on_edit)
    return layer


def _on_edit(event) -> None:
    """Points moved or added by hand join the nearest traced filament (``as_edited``); a
    session's points are saved once the edit is done."""
    layer = event.source
    action = str(getattr(event, "action", ""))
    rows = [i % max(len(layer.data), 1) for i in getattr(event, "data_indices", ())]
    if action.endswith(("added", "changed")) and rows and len(layer.data):
        voxel = float(layer.scale[-1])
        found = as_edited(layer.metadata[TRACED], np.asarray(layer.data)[rows], voxel)
        for column in COLUMNS:
            layer.features.loc[rows, column] = found[column].to_numpy()
    if not action.endswith("ing"):
        save_or_say(layer)


def layer_table(layer: Points) -> pd.DataFrame:
    """The points as they are now (the map's pixels) with their helical columns."""
    table = layer.features[list(COLUMNS)].reset_index(drop=True).copy()
    zyx = np.asarray(layer.data, float).reshape(-1, 3)
    table.insert(0, "x", zyx[:, 2])
    table.insert(0, "y", zyx[:, 1])
    table.insert(0, "z", zyx[:, 0])
    return table


def save_filaments(layer: Points) -> Path | None:
    """Write a session's filament points layer into its session (None: of no session)."""
    folder = tag_of(layer).get(SESSION)
    if not folder or tag_of(layer).get("role") != ROLE:
        return None
    feature = str(tag_of(layer).get("feature"))
    table = layer_table(layer)
    saved = SavedPicks(feature, table[["z", "y", "x"]].to_numpy(float),
                       table[list(COLUMNS)], {"tomoseg": layer.metadata.get("tomoseg")},
                       diameter=layer.metadata.get(DIAMETER))
    return save_picks(folder, saved, filaments_file(folder, feature))


def save_or_say(layer: Points) -> Path | None:
    try:
        return save_filaments(layer)
    except (OSError, ValueError) as exc:
        show_error(f"filaments of '{tag_of(layer).get('feature')}' not saved in their "
                   f"session: {exc}. Export them to keep them.")
        return None


def set_aside_edited(layer: Points) -> Path | None:
    """An edited layer a new trace replaces: it stays in the viewer as '(edited)' and no
    longer saves; its session file is kept as ``FEATURE.json.previous``."""
    folder = tag_of(layer).get(SESSION)
    feature = str(tag_of(layer).get("feature"))
    layer.name = f"{layer.name} (edited)"
    tag(layer, EDITED, feature=feature)
    return keep_previous(folder, feature, filaments_file(folder, feature)) if folder else None


def follow_filaments(viewer, folder: Path, old: str, new: str | None) -> list[Points]:
    """The session's filament layers of feature ``old`` after a rename (they save under
    ``new``, whose file the rename moved) or a removal (None: they no longer save into the
    session, whose files of the feature were set aside); the layers changed."""
    changed = []
    for layer in [l for l in viewer.layers if isinstance(l, Points)
                  and tag_of(l).get("role") == ROLE and tag_of(l).get("feature") == old
                  and Path(tag_of(l).get(SESSION, "")) == Path(folder)]:
        layer.metadata[ROLE_KEY] = tagged(ROLE, feature=new or old,
                                          **({SESSION: str(folder)} if new else {}))
        if new:
            layer.name = layer.name.replace(old, new)
        changed.append(layer)
    return changed


def restore_filaments(viewer, folder: Path, features: list[str], shape: tuple,
                      place: dict) -> tuple[list[str], list[str]]:
    """Show a session's saved filament points again: (what came back, what could not). A file
    is the feature's whose name its file carries (a renamed feature's file moved with it)."""
    restored, problems = [], []
    stems = {feature_file_stem(f): f for f in features}
    for path in sorted((Path(folder) / ROLE).glob("*.json")):
        try:
            saved = read_saved(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"the filaments in {path} ({exc})")
            continue
        saved.feature = stems.get(path.stem, saved.feature)
        if any(tag_of(l).get("role") == ROLE and tag_of(l).get("feature") == saved.feature
               and tag_of(l).get(SESSION) == str(folder) for l in viewer.layers):
            continue  # still open, and saved as it changed
        frame = frame_from_metadata(saved.metadata)
        if frame is not None and tuple(frame.shape) != tuple(shape):
            problems.append(f"the filaments of '{saved.feature}' were traced on a "
                            f"{' x '.join(map(str, frame.shape))} tomogram, not this one")
            continue
        add_filament_points(viewer, saved, place, Path(folder))
        count = len(set(saved.values["filament"])) if len(saved.values) else 0
        restored.append(f"{count} filaments of '{saved.feature}'")
    return restored, problems
