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

from ..feature_files import FILAMENTS, feature_file_stem, filaments_file
from ..filament_points import COLUMNS, as_edited
from ..layer_data import ROLE_KEY, frame_from_metadata
from ..errors import TomosegError
from ..picks_store import SavedPicks, in_session_frame, keep_previous, read_saved, save_picks
from .layer_tags import tag, tag_of, tagged

ROLE, EDITED = "filaments", "edited filaments"
SESSION = "session"
TRACED = "tomoseg_traced"  # the points as traced (z y x + COLUMNS): what edits join
DIAMETER = "tomoseg_diameter"


def add_filament_points(viewer, saved: SavedPicks, place: dict, session: Path | None,
                        tomogram: str | None = None) -> Points:
    """A Points layer of ``saved`` (points in the map's pixels, ``COLUMNS`` as values), one
    colour per filament, placed as ``place`` (scale, translate) says; tagged with the
    tomogram layer's id (a voxel size typed there rescales it) and the tomogram's name."""
    table = saved.values.reset_index(drop=True)[list(COLUMNS)]
    traced = table.assign(z=saved.points[:, 0], y=saved.points[:, 1], x=saved.points[:, 2])
    voxel = float(place["scale"][-1])
    metadata = {**saved.metadata, TRACED: traced, DIAMETER: saved.diameter,
                ROLE_KEY: tagged(ROLE, feature=saved.feature, tomogram=tomogram,
                                 tomo=_tomo_name(saved.metadata),
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
        try:
            found = as_edited(layer.metadata[TRACED], np.asarray(layer.data)[rows], voxel)
        except TomosegError as exc:  # no traced point to join (none were found)
            show_error(f"{exc} The point added keeps no filament.")
            return
        for column in COLUMNS:
            layer.features.loc[rows, column] = found[column].to_numpy()
    if not action.endswith("ing"):
        save_or_say(layer)


def _tomo_name(metadata: dict) -> str | None:
    frame = frame_from_metadata(metadata)
    return frame.name if frame is not None else None


def same_tomogram(layer, tomo_name: str | None, tomogram: str | None = None) -> bool:
    """A filaments layer of the tomogram named ``tomo_name`` (and, when both know it, of
    the same tomogram layer): a new trace replaces only those (tracing TS_02 set TS_01's
    edited points aside and stopped saving them)."""
    known = tag_of(layer).get("tomogram")
    return tag_of(layer).get("tomo") == tomo_name and (
        known is None or tomogram is None or known == tomogram)


def rescale_filaments(layer: Points, old: float, new: float) -> None:
    """A typed voxel size: the distances along the filaments (Angstrom) follow it, and a
    session's points are saved with it."""
    if old > 0 and new > 0 and "track_length" in layer.features:
        layer.features["track_length"] = layer.features["track_length"] * (new / old)
        traced = layer.metadata.get(TRACED)
        if traced is not None:
            layer.metadata[TRACED] = traced.assign(
                track_length=traced["track_length"] * (new / old))
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
        attributes = {k: v for k, v in tag_of(layer).items() if k not in ("role", SESSION)}
        attributes["feature"] = new or old
        layer.metadata[ROLE_KEY] = tagged(ROLE, **attributes,
                                          **({SESSION: str(folder)} if new else {}))
        if new:
            layer.name = layer.name.replace(old, new)
        changed.append(layer)
    return changed


def restore_filaments(viewer, session, shape: tuple, place: dict,
                      tomogram: str | None) -> tuple[list[str], list[str]]:
    """Show a session's saved filament points again: (what came back, what could not). A file
    is the feature's whose name its file carries (a renamed feature's file moved with it)."""
    restored, problems = [], []
    folder = Path(session.folder)
    stems = {feature_file_stem(f): f for f in session.feature_names()}
    for path in sorted((folder / FILAMENTS).glob("*.json")):
        try:
            saved = read_saved(path)
            saved.feature = stems.get(path.stem, saved.feature)
            if _still_open(viewer, saved.feature, folder):
                continue  # saved as it changed
            frame = frame_from_metadata(saved.metadata)
            if frame is not None and tuple(frame.shape) != tuple(shape):
                problems.append(f"the filaments of '{saved.feature}' were traced on a "
                                f"{' x '.join(map(str, frame.shape))} tomogram, not this one")
                continue
            in_session_frame(saved, session, folder, path)  # a voxel size typed since
            add_filament_points(viewer, saved, place, folder, tomogram)
        except (OSError, ValueError, KeyError, TypeError, TomosegError) as exc:
            problems.append(f"the filaments in {path} ({exc})")
            continue
        count = len(set(saved.values["filament"])) if len(saved.values) else 0
        restored.append(f"{count} filaments of '{saved.feature}'")
    return restored, problems


def _still_open(viewer, feature: str, folder: Path) -> bool:
    return any(tag_of(l).get("role") == ROLE and tag_of(l).get("feature") == feature
               and tag_of(l).get(SESSION) == str(folder) for l in viewer.layers)
