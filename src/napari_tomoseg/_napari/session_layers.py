"""What a session brings back besides boxes and masks: its finished maps and its picks.

A trial on the real *M. pneumoniae* cell picked 510 ribosomes, judged some,
closed the viewer and restored the session: the picks, the judgements and
the prediction layers were gone, although the map was still on disk. Picks
layers tagged with a session are now saved there after every change
(``picks_store``), and a restore shows the session's maps and picks again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.layers import Image, Points
from napari.utils.colormaps.standardize_color import transform_color
from napari.utils.notifications import show_error
from qtpy.QtCore import QTimer

from ..errors import TomosegError
from ..feature_files import was_removed
from ..io.probability_header import stored_threshold
from ..layer_data import ROLE_KEY, frame_from_metadata, hand_added_defaults, points_kwargs
from ..picks_store import (PicksConflictError, SavedPicks, conflict_path, file_stamp,
                           in_session_frame, keep_previous, load_picks, picks_path, save_picks,
                           save_picks_checked)
from ..session_store import read_generation
from .annotation import probability_colormap
from .filament_layers import follow_filaments, restore_filaments
from .layer_tags import INCOMPLETE, has_role, layers_with, tag, tag_of, tagged, tomogram_key
from .notify import quietly

STATUS_COLOURS = {1: "#27ae60", 0: "#eb5757", -1: "#555555"}
SESSION = "session"  # the tag attribute naming the session folder a picks layer saves to
MIN_SCORE = "tomoseg_min_score"
STAMP, CONFLICT = "tomoseg_picks_stamp", "conflict"  # the file as this layer last saw it
KEPT = "tomoseg_conflict_copy"  # where a layer in conflict saves (FEATURE.json.conflict-N)
DIAMETER = "tomoseg_diameter"  # Angstrom, as picked: kept when every point is deleted


def status_colours(status) -> list[str]:
    return [STATUS_COLOURS.get(int(s) if np.isfinite(s) else 0, STATUS_COLOURS[0])
            for s in np.asarray(status, float)]


def add_picks_layer(viewer, picks: SavedPicks, size_px: float, session: Path | None,
                    tomogram: str | None = None) -> Points:
    """A Points layer tagged ``picks`` (feature, the session it saves to, and the id of the
    tomogram layer it lies on: a voxel size typed there rescales it too)."""
    values = picks.values.reset_index(drop=True).copy()
    values["feature"] = picks.feature
    if "status" not in values:
        values["status"] = 0
    table = values.assign(z=picks.points[:, 0], y=picks.points[:, 1], x=picks.points[:, 2])
    kwargs = points_kwargs(table, frame_from_metadata(picks.metadata), f"picks: {picks.feature}")
    kwargs["size"] = float(size_px)
    # tagged before it is added: an open Pick tab takes it up as it appears
    kwargs["metadata"][ROLE_KEY] = tagged("picks", feature=picks.feature, tomogram=tomogram,
                                          **({SESSION: str(session)} if session else {}))
    kwargs["metadata"][MIN_SCORE] = float(picks.min_score)
    kwargs["metadata"][DIAMETER] = picks.diameter or float(size_px) * float(kwargs["scale"][-1])
    layer = viewer.add_points(np.asarray(picks.points, float).reshape(-1, 3), **kwargs)
    layer.border_color = status_colours(values["status"]) if len(values) else []
    if len(values) and "score_norm" in values:  # the score cut holds before Pick is opened
        scores = np.asarray(values["score_norm"], float)
        layer.shown = (scores >= picks.min_score) | np.isnan(scores)
    if session:  # the file as read: a save finding it changed since is another window's
        layer.metadata[STAMP] = file_stamp(picks_path(session, picks.feature))
    layer.events.data.connect(_on_edit)  # kept up to date whether or not Pick is open
    return layer


def _on_edit(event) -> None:
    """A picks layer edited with napari's tools: points added by hand lose the values napari
    copied from the selected pick, and a session's picks are saved once the edit is done."""
    layer = event.source
    action = str(getattr(event, "action", ""))
    if action.endswith("added"):
        unmeasured(layer, getattr(event, "data_indices", ()))
    if not action.endswith("ing"):
        save_or_say(layer)


def follow_feature(viewer, folder: Path, old: str, new: str | None) -> list[Points]:
    """The session's picks layers of feature ``old`` after a rename (``new``: they save under
    the new name) or a removal (None: they no longer save into the session, whose files of
    the feature were set aside); the layers changed."""
    changed = follow_filaments(viewer, folder, old, new)
    for layer in list(layers_with(viewer, "picks", feature=old)):
        attributes = {k: v for k, v in tag_of(layer).items() if k != "role"}
        if Path(attributes.get(SESSION, "")) != Path(folder):
            continue
        if new is None:
            attributes.pop(SESSION)
        else:
            attributes["feature"] = new
            layer.name = layer.name.replace(old, new)
            if "feature" in layer.features:
                layer.features["feature"] = new
            layer.metadata[STAMP] = file_stamp(picks_path(folder, new))  # rewritten by the
            # rename (its name inside), not by another window
        layer.metadata[ROLE_KEY] = tagged("picks", **attributes)
        changed.append(layer)
    return changed


def unmeasured(points: Points, indices) -> None:
    """Points added by hand carry no score, angle or measure, and are not judged: napari
    copies the values (and colour) of the point selected last, e.g. an accepted pick."""
    rows = [i % len(points.data) for i in indices]
    if not rows:
        return
    defaults = hand_added_defaults(points.features.drop(index=rows))
    for column, value in defaults.items():
        if column != "feature":
            points.features.loc[rows, column] = value
    if "feature" in points.features and tag_of(points).get("feature"):  # '' in an empty layer
        points.features.loc[rows, "feature"] = tag_of(points)["feature"]
    colours = np.asarray(points.border_color)
    colours[rows] = transform_color(STATUS_COLOURS[0])[0]
    points.border_color = colours


def save_or_say(layer: Points, **kwargs) -> Path | None:
    """``save_picks_layer``, with a failure shown, not raised into napari's event loop."""
    try:
        return save_picks_layer(layer, **kwargs)
    except PicksConflictError as exc:
        show_error(str(exc))
        return None
    except (OSError, ValueError) as exc:
        show_error(f"picks of '{tag_of(layer).get('feature')}' not saved in their session: "
                   f"{exc}. Export them to keep them.")
        return None


def save_picks_layer(layer: Points, min_score: float | None = None,
                     diameter: float | None = None) -> Path | None:
    """Write a session's picks layer to its session (None for picks of no session)."""
    folder = tag_of(layer).get(SESSION)
    if not folder:
        return None
    if min_score is not None:
        layer.metadata[MIN_SCORE] = float(min_score)
    picks = layer_picks(layer, diameter)
    if layer.metadata.get(STAMP) == CONFLICT:  # said once; later edits go where it said
        return save_picks(folder, picks, Path(layer.metadata[KEPT]))
    try:
        path, layer.metadata[STAMP] = save_picks_checked(folder, picks,
                                                         layer.metadata.get(STAMP))
    except PicksConflictError as exc:
        layer.metadata[STAMP], layer.metadata[KEPT] = CONFLICT, str(exc.kept)
        raise
    return path


def layer_picks(layer: Points, diameter: float | None = None) -> SavedPicks:
    """A picks layer's points, values, frame and score cut, as the session keeps them."""
    values = layer.features.drop(columns=["feature"], errors="ignore")
    metadata = {k: v for k, v in layer.metadata.items() if k == "tomoseg"}
    size = np.asarray(layer.size, float)
    diameter = diameter or layer.metadata.get(DIAMETER) or (
        float(size.flat[0]) * float(layer.scale[-1]) if size.size else None)
    layer.metadata[DIAMETER] = diameter
    return SavedPicks(feature=str(tag_of(layer).get("feature") or "particle"),
                      points=np.asarray(layer.data, float), values=values, metadata=metadata,
                      min_score=float(layer.metadata.get(MIN_SCORE, 0.0)), diameter=diameter)


def discard_picks_layer(viewer, layer: Points) -> Path | None:
    """Remove a picks layer for good: its session's file is set aside first (``keep_previous``,
    ``FEATURE.json.previous``; nothing is deleted), so a restored session no longer brings the
    picks back, as it did after the layer was only deleted. The file set aside, or None (picks
    of no session, or never saved). If setting aside fails, the layer stays."""
    folder = tag_of(layer).get(SESSION)
    feature = str(tag_of(layer).get("feature") or "particle")
    kept = keep_previous(folder, feature) if folder else None
    quietly(lambda: layer.events.data.disconnect(_on_edit))
    viewer.layers.remove(layer)
    return kept


def session_of_map(viewer, probability) -> Path | None:
    """The session folder of the tomogram a probability layer belongs to, or None.

    By the tomogram id in the map's tag (a map the dock computed); else an open tomogram
    of the same shape and name with a session (a map opened from a file).
    """
    key = tag_of(probability).get("tomogram")
    frame = frame_from_metadata(probability.metadata)
    shape = tuple(probability.data.shape)
    for layer in reversed(list(viewer.layers)):
        geometry = (layer.metadata.get("tomoseg") or {}) if isinstance(layer, Image) else {}
        if not geometry.get("session") or layer is probability:
            continue
        if key is not None and layer.metadata.get("tomoseg_layer_id") == key:
            return Path(geometry["session"])
        if key is None and tuple(layer.data.shape) == shape and frame is not None \
                and geometry.get("tomo_name") == frame.name:
            return Path(geometry["session"])
    return None


def session_maps(session) -> dict[str, Path]:
    """The session's finished maps on disk, by feature (``jobs.session_maps`` reads them)."""
    maps = {f: session.segmentation_path(f) for f in session.feature_names()}
    return {f: path for f, path in maps.items() if path.exists()}


def show_restored_map(controller, thresholds: dict[str, float], feature: str,
                      data: np.ndarray) -> None:
    """A map read back into its feature's prediction layer, at the threshold of the model
    that made it (its header), unless one was set by hand: a map kept from before a new
    training was shown, and picked, at the new model's."""
    session = controller.session
    overlay = controller.overlay(feature)
    overlay.data = data
    overlay.metadata.pop(INCOMPLETE, None)  # whole now (a stopped segmentation's mark too)
    path = session.segmentation_path(feature)
    stored = None if feature in session.thresholds else stored_threshold(path)
    threshold = stored if stored is not None else thresholds.get(feature, 0.5)
    overlay.metadata["threshold"] = threshold
    overlay.colormap = probability_colormap(session.feature(feature).colour, threshold)


def restore_session_layers(viewer, controller) -> tuple[list[str], list[str]]:
    """Show the session's picks and filaments: (what came back, what could not); its maps
    come back in a thread (``session_maps``, ``show_restored_map``)."""
    restored, problems = [], []
    session = controller.session
    saved, unreadable = load_picks(session.folder)
    problems += unreadable
    folder = Path(session.folder)
    for picks in saved:
        still = [l for l in layers_with(viewer, "picks", feature=picks.feature)
                 if Path(tag_of(l).get(SESSION, "")) == folder]
        for layer in [l for l in still if l.metadata.get(STAMP) == CONFLICT]:
            viewer.layers.remove(layer)  # it showed this window's picks, kept aside: taking
            still.remove(layer)  # up the file's stamp, its next edit wrote over the other's
            problems.append(f"the picks of '{picks.feature}' are shown as another window "
                            f"saved them; this window's are in "
                            f"{Path(layer.metadata.get(KEPT, '')).name}")
        for layer in [l for l in still
                      if l.metadata.get(STAMP) != file_stamp(picks_path(folder, picks.feature))]:
            # written since this layer saw it (another window, or a header rebind): taking up
            # the new stamp let the layer's older judgements overwrite the file's
            problems += _set_aside_stale(viewer, layer, picks, folder)
            if layer not in viewer.layers:  # else it could not be kept aside: it stays
                still.remove(layer)
        if still:
            continue
        picks = in_session_frame(picks, session, folder)
        frame = frame_from_metadata(picks.metadata)
        if frame is not None and tuple(frame.shape) != controller.shape:
            problems.append(f"the picks of '{picks.feature}' were made on a "
                            f"{' x '.join(map(str, frame.shape))} tomogram, not this one")
            continue
        voxel = frame.voxel_size if frame is not None else float(controller.image.scale[-1])
        size = (picks.diameter or 10.0 * voxel) / voxel
        add_picks_layer(viewer, picks, size, folder, tomogram_key(controller.image))
        restored.append(f"{len(picks.points)} picks of '{picks.feature}'")
    place = {"scale": controller.image.scale, "translate": controller.image.translate,
             "units": controller.image.units}
    shown, unreadable = restore_filaments(viewer, session, controller.shape, place,
                                          tomogram_key(controller.image))
    return restored + shown, problems + unreadable


def _set_aside_stale(viewer, layer: Points, saved: SavedPicks, folder: Path) -> list[str]:
    """Remove an open picks layer whose file changed since it saw it, so the file's picks are
    shown; what the layer holds beyond them (other points or judgements) is kept first in
    ``FEATURE.json.conflict``. A message when something was kept."""
    mine = layer_picks(layer)
    same = (mine.points.shape == saved.points.shape
            and np.allclose(mine.points, saved.points, atol=1e-3)
            and np.array_equal(_statuses(mine), _statuses(saved), equal_nan=True))
    try:  # never over an earlier copy, which may hold another window's judgements
        kept = None if same else save_picks(folder, mine, conflict_path(folder, mine.feature))
    except OSError as exc:  # the layer stays, with its picks; the restore goes on
        return [f"the picks of '{mine.feature}' changed in another window, and this window's "
                f"could not be kept aside ({exc}): their layer stays open, not saved"]
    quietly(lambda: layer.events.data.disconnect(_on_edit))
    viewer.layers.remove(layer)
    return [] if kept is None else [
        f"the picks of '{mine.feature}' changed in another window: they are shown as saved "
        f"there, and this window's are kept in {kept.name}"]


def _statuses(picks: SavedPicks) -> np.ndarray:
    values = picks.values
    return np.asarray(values["status"], float) if "status" in values else np.zeros(len(values))


def is_session_picks(layer) -> bool:
    """Picks a session keeps; never a particle file opened from disk (no scores to judge)."""
    return (has_role(layer, "picks") and bool(tag_of(layer).get(SESSION))
            and "score_norm" in getattr(layer, "features", {}))


def session_picks(viewer):
    """The topmost picks layer a session keeps (restored before the Pick tab was opened)."""
    return next((layer for layer in reversed(list(viewer.layers)) if is_session_picks(layer)),
                None)


def earlier_picks(viewer, feature: str, tomogram: str | None, session,
                  tomo_name: str | None = None):
    """The picks layer new picks of ``feature`` replace: on the same tomogram (or session);
    picks of a map that belongs to none replace those of none of the same tomogram name
    (any such layer did: picking TS_02's map removed TS_01's judged picks)."""
    for layer in reversed(list(viewer.layers)):
        found = tag_of(layer)
        if found.get("role") != "picks" or found.get("feature") != feature:
            continue
        frame = frame_from_metadata(layer.metadata)
        if (tomogram and found.get("tomogram") == tomogram) or (
                session and found.get(SESSION) == str(session)) or (
                not tomogram and not session and not found.get("tomogram")
                and not found.get(SESSION)
                and (frame.name if frame is not None else None) == tomo_name):
            return layer
    return None


def retire_earlier(viewer, layer: Points) -> str:
    """Make way for new picks: remove ``layer``, unless its judgements live nowhere else (no
    session keeps them); then it stays, renamed '(earlier)', and the note says so."""
    judged = "status" in layer.features and np.any(np.asarray(layer.features["status"]) != 0)
    if tag_of(layer).get(SESSION) or not judged:
        quietly(lambda: layer.events.data.disconnect(_on_edit))
        viewer.layers.remove(layer)
        return ""
    layer.name = f"{layer.name} (earlier)"
    tag(layer, "earlier picks", feature=tag_of(layer).get("feature"))
    return (f"; the earlier judged picks stay as '{layer.name}' (File > Save Selected Layers "
            "keeps them)")


def keep_earlier(session, feature: str):
    """(session, file kept, note): the session's earlier picks of ``feature`` are set
    aside before new ones are saved; if that fails the new picks are not saved there."""
    if session is None:
        return None, None, ""
    if _removed_from(session, feature):  # its picks would come back for a new one of the name
        return None, None, (f"; not saved in the session ('{feature}' was removed from it; "
                            "add the feature again to keep its picks there): Export keeps them")
    try:
        return session, keep_previous(session, feature), ""
    except OSError as exc:
        return None, None, (f"; not saved in the session (its earlier picks could not be "
                            f"set aside: {exc}): Export keeps them")


def _removed_from(session: Path, feature: str) -> bool:
    """The session removed ``feature`` (its files set aside) and has none of that name now."""
    if not was_removed(session, feature):
        return False
    try:
        record = read_generation(Path(session))[0]
    except TomosegError:
        return False
    return feature not in {f.get("name") for f in record.get("features", [])}


def single_shot(milliseconds: int, callback, parent) -> QTimer:
    timer = QTimer(parent)  # goes with the widget: it read a deleted slider after a close
    timer.setSingleShot(True)
    timer.setInterval(milliseconds)
    timer.timeout.connect(callback)
    return timer
