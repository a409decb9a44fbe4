"""Pick particles from a probability layer, filter by score, check them one by one, export.

Points carry ``score``, ``score_norm``, ``size`` and ``status`` (1 accepted,
0 not judged, -1 rejected) as layer features. The score slider hides
picks below it (``shown``); QC steps through the picks, centring the view
on each: **.** next, **,** previous, **a** accept, **r** reject. Export
writes the shown, not rejected picks.

Picking is ``jobs.pick.pick_job``, the CLI's, started in a thread; it
writes nothing. Sources are the maps tagged ``probability`` (see
``layer_tags``), so a renamed layer still counts and a tomogram never does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, FloatSlider, FloatSpinBox,
                              Label, LineEdit, PushButton)
from napari.layers import Image, Points
from napari.utils.colormaps.standardize_color import transform_color
from napari.utils.notifications import show_info

from ..errors import TomosegError
from ..io.particle_files import eman2_box_size, write_particles
from ..io.particles import TomogramFrame, particle_table
from ..layer_data import frame_from_metadata, frame_metadata
from ..picking import PickSettings, artifact_region, excluded_note, suggest_score_cut
from .histogram import Histogram
from .confirm import agrees, may_replace
from .layer_tags import tag_of
from .pick_status import describe_pick
from .picking_sources import (check_chosen_map, checked_pick, is_probability, shape_note,
                              snapshot, source_frame, stored_threshold)
from .keys import KeyBindings, release_on_close
from .notify import guarded, quietly, report_error
from .voxel_size import voxel_size_of
from ..picks_store import SavedPicks
from .session_layers import (DIAMETER, MIN_SCORE, STATUS_COLOURS, add_picks_layer,
                             discard_picks_layer,
                             earlier_picks, is_session_picks, keep_earlier, retire_earlier,
                             save_or_say,
                             session_of_map, session_picks, single_shot)
from .map_picks import made_picks_folder, show_saved_picks
from .worker import JobHandle, start_job, stop_or_start
from .camera import camera_of


class PickingWidget(Container):
    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.source = ComboBox(label="Probability", choices=self._sources)
        self.feature = LineEdit(label="Feature", value="ribosome")
        self.diameter = FloatSpinBox(label="Diameter (A)", value=250.0, min=10.0, max=5000.0, step=10.0)
        self.threshold = FloatSlider(label="Threshold", value=0.5, min=0.05, max=0.95, step=0.05)
        self.split = CheckBox(text="Split touching particles", value=False)
        self.exclude = ComboBox(label="Exclude", choices=self._sources, nullable=True, value=None,
                                tooltip="an artifact's map (carbon): no pick where it is above "
                                        "its threshold")
        self.max_blob = FloatSpinBox(label="Max blob", value=0.0, min=0.0, max=1000.0, step=0.5,
                                     tooltip="drop picks in a blob above the threshold larger "
                                             "than this many particle volumes (3: a carbon "
                                             "edge; touching particles form blobs too); 0 keeps "
                                             "all")
        self.min_roundness = FloatSpinBox(
            label="Min roundness", value=PickSettings.min_roundness, min=0.0, max=1.0, step=0.05,
            tooltip="drop peaks flatter or longer than this, e.g. a carbon edge (1 a ball, "
                    "0 a sheet); 0 keeps all shapes")
        self.relative_roundness = FloatSpinBox(
            label="Relative roundness", value=PickSettings.relative_roundness, min=0.0, max=1.0,
            step=0.05, tooltip="also drop peaks less round than this times the picks' median "
                               "roundness (at most 0.25): the odd long look-alike; 0 off")
        self.pick_button = PushButton(text="Pick", tooltip="while picking: Stop")
        self.min_score = FloatSlider(label="Min score", value=0.0, min=0.0, max=1.0, step=0.01)
        self.previous = PushButton(text="< previous  [,]")
        self.next = PushButton(text="next >  [.]")
        self.accept = PushButton(text="accept  [a]")
        self.reject = PushButton(text="reject  [r]")
        self.status = Label(value="")
        self.output = FileEdit(label="Export to", mode="w", filter="*.star *.json *.csv",
                               value=Path.home() / "picks.star")
        self.export_button = PushButton(text="Export")
        self.discard_button = PushButton(text="Discard picks", tooltip=(
            "remove these picks; a session keeps its saved file aside (FEATURE.json.previous)"))
        self.histogram = Histogram()
        self.extend([self.source, self.feature, self.diameter, self.threshold, self.split,
                     self.exclude, self.max_blob, self.min_roundness,
                     self.relative_roundness, self.pick_button,
                     self.min_score])
        self.native.layout().addWidget(self.histogram)
        self.extend([Container(widgets=[self.previous, self.next], layout="horizontal", labels=False),
                     Container(widgets=[self.accept, self.reject], layout="horizontal", labels=False),
                     self.status, self.output,
                     Container(widgets=[self.export_button, self.discard_button],
                               layout="horizontal", labels=False)])
        self.points: Points | None = None
        self.current = -1
        self._save_soon = single_shot(400, self._save, self.native)
        self.handle: JobHandle | None = None
        self._filled_threshold: float | None = None  # the last threshold taken from a map
        self._connect_controls()

    def _connect_controls(self) -> None:
        self.pick_button.changed.connect(guarded(self._pick_or_stop))
        self.min_score.changed.connect(self._apply_filter)
        self.next.changed.connect(lambda: self.step(1))
        self.previous.changed.connect(lambda: self.step(-1))
        self.accept.changed.connect(guarded(lambda: self.judge(1)))
        self.reject.changed.connect(guarded(lambda: self.judge(-1)))
        self.export_button.changed.connect(guarded(self._export_asking))
        self.discard_button.changed.connect(guarded(self._discard_asking))
        # bound on the picks layer too, where napari's own a (select all) would win; keys
        # pressed with nothing to judge say so on the status line, not in a pop-up
        said = lambda line: setattr(self.status, "value", line)  # noqa: E731
        self.keys = KeyBindings(self.viewer, {".": lambda: self.step(1), ",": lambda: self.step(-1),
                                              "a": guarded(lambda: self.judge(1), said),
                                              "r": guarded(lambda: self.judge(-1), said)})
        release_on_close(self, self.keys)
        for choice in (self.source, self.exclude):
            self.viewer.layers.events.inserted.connect(lambda e, c=choice: c.reset_choices())
            self.viewer.layers.events.removed.connect(lambda e, c=choice: c.reset_choices())
        self.source.changed.connect(self._defaults_from_source)
        self._defaults_from_source()
        # a session's picks shown again (before or after this tab was made) are taken up at
        # once; a closed tab stops listening (it took over keys of later layers)
        self._alive = True
        self._unsaved_cut: tuple | None = None  # (layer, score cut) the debounce has not saved
        self.viewer.layers.events.inserted.connect(self._take_up)
        self.native.destroyed.connect(self._closed)
        self._picks()

    def _closed(self, *args) -> None:
        self._alive = False
        quietly(lambda: self.viewer.layers.events.inserted.disconnect(self._take_up))
        if self._unsaved_cut is not None:  # closed within the debounce: the timer went with
            # the widget (and so did the slider to read)
            points, cut = self._unsaved_cut
            save_or_say(points, min_score=cut)

    def _defaults_from_source(self, *args) -> None:
        """The map's feature (its tag) and calibrated threshold (metadata or MRC header)."""
        layer = self.source.value
        if layer is None:
            return
        feature = tag_of(layer).get("feature")
        if feature:
            self.feature.value = str(feature)
        self._filled_feature = self.feature.value  # a rename of the map's feature follows
        self._fill_threshold(layer)
        shown = show_saved_picks(self.viewer, layer, self.feature.value, add_picks_layer)
        if shown is not None and shown is not self.points:  # judged before, on this file
            self._adopt(shown)

    def _fill_threshold(self, layer) -> None:
        """The map's calibrated (or Segment-slider) threshold; remembered, so that a value
        the user typed is told apart from one filled in."""
        stored = stored_threshold(layer)
        if stored is not None:
            self.threshold.value = min(max(float(stored), 0.05), 0.95)
        self._filled_threshold = float(self.threshold.value)

    def _excluded_region(self, layer) -> np.ndarray | None:
        """The chosen artifact map above its own threshold (0.5 without one), or None."""
        artifact = self.exclude.value
        if artifact is None:
            return None
        if artifact is layer:
            raise TomosegError("the map to exclude is the map being picked: choose an "
                               "artifact's map (carbon) or none.")
        return artifact_region(artifact.data, stored_threshold(artifact), layer.data.shape,
                               name=f"'{artifact.name}'")

    def _sources(self, widget=None) -> list[Image]:
        return [l for l in self.viewer.layers if is_probability(l)]

    # picking ---------------------------------------------------------------------
    def _pick_or_stop(self) -> JobHandle | None:
        """The button: Pick, or Stop while picking (a large map takes a minute)."""
        return stop_or_start(self.handle, self.status, self.pick)

    def pick(self) -> JobHandle:
        """Start ``pick_job`` on the chosen map in a thread; the picks become a Points layer."""
        layer = self.source.value
        check_chosen_map(layer, "picking", "pick")
        filled = self._filled_threshold  # the Segment slider may have moved the map's since:
        if filled is not None and abs(self.threshold.value - filled) < 1e-6:  # not typed here
            self._fill_threshold(layer)
        settings = PickSettings(diameter=float(self.diameter.value),
                                threshold=float(self.threshold.value),
                                split_touching=bool(self.split.value),
                                max_blob=float(self.max_blob.value) or None,
                                min_roundness=float(self.min_roundness.value),
                                relative_roundness=float(self.relative_roundness.value))
        named = tag_of(layer).get("feature")
        if named and self.feature.value == getattr(self, "_filled_feature", None):
            self.feature.value = self._filled_feature = str(named)  # renamed since: not typed
        feature = self.feature.value.strip() or "particle"
        voxel_size_of(layer)  # a usable, cubic voxel size, or a message saying what to do
        frame = source_frame(self.viewer, layer)
        exclude = self._excluded_region(layer)
        self.pick_button.text = "Stop"
        self.status.value = f"picking {feature}..."
        self.handle = start_job(
            checked_pick(snapshot(layer.data), frame, settings, feature, exclude),
            on_progress=lambda progress: setattr(self.status, "value", progress.message),
            on_done=lambda table: self.show_picks(table, layer, feature),
            on_error=self._failed, on_cancelled=lambda: setattr(self.status, "value", "stopped"),
            on_finished=lambda: setattr(self.pick_button, "text", "Pick"), owner=self)
        return self.handle

    def _failed(self, exc: BaseException) -> None:
        self.status.value = report_error(exc)

    def show_picks(self, table: pd.DataFrame, layer, feature: str | None = None) -> Points:
        """A Points layer tagged ``picks`` (feature); it replaces that feature's earlier picks.

        Picks of a map of a session's tomogram are saved in the session at once and after
        every judgement or edit (``session_layers``): closing the viewer loses nothing."""
        feature = feature or self.feature.value
        frame = source_frame(self.viewer, layer)
        values = table.drop(columns=["z", "y", "x", "feature"], errors="ignore")
        picks = SavedPicks(feature=feature, points=table[["z", "y", "x"]].to_numpy(float),
                           values=values.assign(status=0), metadata=frame_metadata(frame))
        session, kept, note = keep_earlier(session_of_map(self.viewer, layer)
                                           or made_picks_folder(layer), feature)  # beside its file
        earlier = earlier_picks(self.viewer, feature, tag_of(layer).get("tomogram"), session,
                                frame.name)  # of this tomogram only: another's picks stay
        note += retire_earlier(self.viewer, earlier) if earlier is not None else ""
        size = float(self.diameter.value) / float(layer.scale[-1])
        self._adopt(add_picks_layer(self.viewer, picks, size, session,
                                    tag_of(layer).get("tomogram")))
        saved = self._save()
        n = len(picks.points)
        self.status.value = (f"{n} picks" + shape_note(table.attrs, n)
                             + excluded_note(table) + note
                             + ("" if saved or note else "; not in a session: Export keeps them")
                             + (f"; the earlier picks are kept as {kept.name}" if kept else ""))
        show_info(f"{n} {feature} picks")
        return self.points

    def _adopt(self, points: Points) -> None:
        """Make ``points`` the layer judged and exported (new picks, or a restored session's)."""
        self.points = points
        points.events.data.connect(self._on_points_changed)
        self.current = -1
        size = np.asarray(points.size, float)
        diameter = points.metadata.get(DIAMETER) or (
            float(size.flat[0]) * float(points.scale[-1]) if size.size else None)
        if diameter:  # its particles' size: later saves and EMAN2 boxes use it
            self.diameter.value = float(diameter)
        self.feature.value = str(tag_of(points).get("feature") or self.feature.value)
        self.min_score.value = float(points.metadata.get(MIN_SCORE, 0.0))
        self._apply_filter()
        self.keys.bind(points)

    def _take_up(self, event) -> None:
        """A session's picks shown again while this tab is open are judged here at once (the
        first slider move was undone when they were taken up later)."""
        if self._alive and is_session_picks(getattr(event, "value", None)) \
                and self._picks() is None:
            self._adopt(event.value)

    def _save(self):
        """Keep the picks and their judgements in their session (None: no session)."""
        self._unsaved_cut = None
        if self.points is None or self.points not in self.viewer.layers:
            return None
        # the picks keep the diameter they were picked at: the field may already hold the
        # next pick's (a judgement saved 100 A over 250 A, and EMAN2 boxes shrank)
        return save_or_say(self.points, min_score=float(self.min_score.value))

    # filtering and QC ------------------------------------------------------------------
    def _picks(self) -> Points | None:
        """The picks layer while it is in the viewer (a deleted one is forgotten); a session's
        picks restored before this tab was opened are taken up."""
        if self.points is not None and self.points not in self.viewer.layers:
            self.points, self.current = None, -1
        restored = session_picks(self.viewer) if self.points is None else None
        if restored is not None:
            self._adopt(restored)
        return self.points

    def _on_points_changed(self, event=None) -> None:
        """Points added, moved or deleted by hand: an index no longer names the pick in
        view (accept then judged another particle). The layer saves itself
        (``session_layers``)."""
        self.current = -1

    def _apply_filter(self, *args) -> None:
        if self._picks() is None or len(self.points.data) == 0:
            self.histogram.set_values([], self.min_score.value)
            return
        scores = np.asarray(self.points.features["score_norm"], float)
        # a point added by hand has no score: always shown (and exported)
        self.points.shown = (scores >= float(self.min_score.value)) | np.isnan(scores)
        suggested = suggest_score_cut(scores[np.isfinite(scores)])
        self.histogram.set_values(scores, self.min_score.value, suggested)
        hint = f"; suggested score cut {suggested:.2f} (dashed)" if suggested is not None else ""
        self.status.value = f"{int(self.points.shown.sum())} of {len(scores)} picks shown{hint}"
        if float(self.points.metadata.get(MIN_SCORE, 0.0)) != float(self.min_score.value):
            self._unsaved_cut = (self.points, float(self.min_score.value))
            self._save_soon.start()  # once the slider rests, not at every tick

    def _shown_indices(self) -> np.ndarray:
        return np.flatnonzero(self.points.shown) if self._picks() is not None else np.array([], int)

    def step(self, direction: int) -> int | None:
        visible = self._shown_indices()
        if not len(visible):
            return None
        position = np.searchsorted(visible, self.current)
        if direction > 0:
            position = position + 1 if position < len(visible) and visible[position] == self.current else position
        else:
            position -= 1
        self.current = int(visible[position % len(visible)])
        world = self.points.data_to_world(self.points.data[self.current])
        self.viewer.dims.set_point(0, world[0])
        camera_of(self.viewer).center = tuple(world[1:])
        self.points.selected_data = {self.current}
        self.status.value = describe_pick(self.points.features, self.current,
                                          len(self.points.data))
        return self.current

    def judge(self, verdict: int) -> None:
        if self._picks() is None:
            raise TomosegError("pick first: there are no picks to judge.")
        if self.current < 0:
            raise TomosegError("step to a pick first (next / previous): the picks changed, "
                               "or none is in view.")
        self.points.features.loc[self.current, "status"] = verdict
        colours = np.asarray(self.points.border_color)
        colours[self.current] = transform_color(STATUS_COLOURS[verdict])[0]
        self.points.border_color = colours
        self._save()
        self.step(1)

    # export -------------------------------------------------------------------------------
    def selected_table(self) -> tuple[pd.DataFrame, TomogramFrame]:
        if self._picks() is None:
            raise TomosegError("pick first: there are no picks to export.")
        frame = frame_from_metadata(self.points.metadata)
        keep = self.points.shown & (np.asarray(self.points.features["status"]) >= 0)
        features = self.points.features[keep].reset_index(drop=True)
        table = particle_table(self.points.data[keep],
                               **{c: features[c].to_numpy() for c in ("score", "roundness",
                                                                       "feature") if c in features})
        return table, frame

    def _export_asking(self) -> Path | None:
        """The button: a typed path of an existing file is replaced only when the user says
        so (the browse dialog asks by itself; a typed name replaced files silently)."""
        path = Path(self.output.value)
        what = "the kept picks" + (" (an EMAN2 info file keeps its other keys and classes)"
                                   if path.suffix.lower() == ".json" else "")
        if not may_replace(self.native, [path], what):
            self.status.value = f"not exported: {path.name} kept"
            return None
        return self.export()

    def export(self) -> Path:
        """Write the kept picks in the format the file's suffix names (STAR, EMAN2 JSON, CSV)."""
        table, frame = self.selected_table()
        path = Path(self.output.value)
        diameter = self.points.metadata.get(DIAMETER) or float(self.diameter.value)
        box = eman2_box_size(float(diameter), frame.voxel_size)
        feature = str(table["feature"].iloc[0]) if len(table) else self.feature.value
        write_particles(path, table, frame, box_size=box, feature=feature)
        show_info(f"{len(table)} picks written to {path}")
        return path

    # discard ----------------------------------------------------------------------------
    def _discard_asking(self) -> Path | None:
        """The button: picks and their judgements are work, so it asks first."""
        if self._picks() is None:
            raise TomosegError("there are no picks to discard.")
        feature = tag_of(self.points).get("feature") or self.feature.value
        if not agrees(self.native, "Discard picks?",
                      f"Remove the {len(self.points.data)} picks of '{feature}' and their "
                      "judgements? A session keeps its saved file aside as "
                      f"{feature}.json.previous; nothing is deleted."):
            return None
        return self.discard()

    def discard(self) -> Path | None:
        """Remove the picks layer; a session's saved picks are set aside (not deleted), so a
        restored session no longer shows them. The file set aside, or None."""
        if self._picks() is None:
            raise TomosegError("there are no picks to discard.")
        points, self._unsaved_cut = self.points, None
        self._save_soon.stop()  # a score cut still waiting must not write them back
        kept = discard_picks_layer(self.viewer, points)
        self.points, self.current = None, -1
        self._apply_filter()  # the histogram empties (or shows picks still in the viewer)
        self.status.value = "picks discarded" + (f"; the session kept them as {kept.name}"
                                                 if kept else "")
        return kept
