"""Pick particles from a probability layer, filter by score, check them one by one, export.

Points carry ``score``, ``score_norm``, ``size`` and ``status`` (1 accepted,
0 not judged, -1 rejected) as layer features. The score slider hides
picks below it (``shown``); QC steps through the picks, centring the view
on each: **.** next, **,** previous, **a** accept, **r** reject. Export
writes the shown, not rejected picks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, FloatSlider, FloatSpinBox,
                              Label, LineEdit, PushButton)
from napari.layers import Image, Labels, Points
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_info

from ..errors import TomosegError
from ..io.particles import TomogramFrame, particle_table, write_csv, write_star
from ..layer_data import clean_tomo_name, frame_from_metadata, frame_metadata, points_kwargs
from ..picking import PickSettings, pick_particles, suggest_score_cut
from .histogram import Histogram
from .notify import guarded, report_error

STATUS_COLOURS = {1: "#27ae60", 0: "#eb5757", -1: "#555555"}


class PickingWidget(Container):
    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.source = ComboBox(label="Probability", choices=self._sources)
        self.feature = LineEdit(label="Feature", value="ribosome")
        self.diameter = FloatSpinBox(label="Diameter (A)", value=250.0, min=10.0, max=5000.0, step=10.0)
        self.threshold = FloatSlider(label="Threshold", value=0.5, min=0.05, max=0.95, step=0.05)
        self.split = CheckBox(text="Split touching particles", value=False)
        self.pick_button = PushButton(text="Pick")
        self.min_score = FloatSlider(label="Min score", value=0.0, min=0.0, max=1.0, step=0.01)
        self.previous = PushButton(text="< previous  [,]")
        self.next = PushButton(text="next >  [.]")
        self.accept = PushButton(text="accept  [a]")
        self.reject = PushButton(text="reject  [r]")
        self.status = Label(value="")
        self.output = FileEdit(label="Export to", mode="w", filter="*.star *.csv",
                               value=Path.home() / "picks.star")
        self.export_button = PushButton(text="Export")
        self.histogram = Histogram()
        self.extend([self.source, self.feature, self.diameter, self.threshold, self.split,
                     self.pick_button, self.min_score])
        self.native.layout().addWidget(self.histogram)
        self.extend([Container(widgets=[self.previous, self.next], layout="horizontal", labels=False),
                     Container(widgets=[self.accept, self.reject], layout="horizontal", labels=False),
                     self.status, self.output, self.export_button])
        self.points: Points | None = None
        self.current = -1
        self.worker = None
        self.pick_button.changed.connect(self._guard(self.pick))
        self.min_score.changed.connect(self._apply_filter)
        self.next.changed.connect(lambda: self.step(1))
        self.previous.changed.connect(lambda: self.step(-1))
        self.accept.changed.connect(lambda: self.judge(1))
        self.reject.changed.connect(lambda: self.judge(-1))
        self.export_button.changed.connect(self._guard(self.export))
        for key, action in ((".", lambda v: self.step(1)), (",", lambda v: self.step(-1)),
                            ("a", lambda v: self.judge(1)), ("r", lambda v: self.judge(-1))):
            self.viewer.bind_key(key, action, overwrite=True)
        self.viewer.layers.events.inserted.connect(lambda e: self.source.reset_choices())
        self.source.changed.connect(self._threshold_from_source)
        self._threshold_from_source()

    def _threshold_from_source(self, *args) -> None:
        """A probability map's calibrated threshold (layer metadata or MRC header) is the default."""
        layer = self.source.value
        if layer is None:
            return
        stored = layer.metadata.get("threshold")
        if stored is None and (layer.metadata.get("tomoseg") or {}).get("path"):
            from ..io.probability_header import stored_threshold

            stored = stored_threshold(layer.metadata["tomoseg"]["path"])
        if stored is not None:
            self.threshold.value = min(max(float(stored), 0.05), 0.95)

    def _sources(self, widget=None):
        return [l for l in self.viewer.layers if isinstance(l, (Image, Labels)) and l.ndim == 3]

    def _guard(self, action):
        return guarded(action)

    # picking ---------------------------------------------------------------------
    def pick(self):
        layer = self.source.value
        if layer is None:
            raise TomosegError("open or compute a probability map first.")
        voxel = float(layer.scale[-1])
        settings = PickSettings(diameter=float(self.diameter.value),
                                threshold=float(self.threshold.value),
                                split_touching=bool(self.split.value))
        data = layer.data if isinstance(layer, Image) else (np.asarray(layer.data) > 0)

        @thread_worker
        def work():
            return pick_particles(np.asarray(data, np.float32), voxel, settings)

        self.worker = work()
        self.worker.returned.connect(lambda table: self.show_picks(table, layer))
        self.worker.errored.connect(report_error)
        self.pick_button.enabled = False
        self.worker.finished.connect(lambda: setattr(self.pick_button, "enabled", True))
        self.worker.start()
        return self.worker

    def show_picks(self, table: pd.DataFrame, layer) -> Points:
        table = table.copy()
        table["feature"] = self.feature.value
        table["status"] = 0
        frame = self._source_frame(layer)
        frame_meta = frame_metadata(frame)
        kwargs = points_kwargs(table, frame, f"picks: {self.feature.value}")
        kwargs["size"] = float(self.diameter.value) / float(layer.scale[-1])
        kwargs["metadata"] = frame_meta
        data = table[["z", "y", "x"]].to_numpy(float)
        name = kwargs["name"]
        if name in self.viewer.layers:
            self.viewer.layers.remove(name)
        self.points = self.viewer.add_points(data, **kwargs)
        self.points.border_color = [STATUS_COLOURS[0]] * len(data)
        self.current = -1
        self._apply_filter()
        self.status.value = f"{len(data)} picks"
        show_info(f"{len(data)} {self.feature.value} picks")
        return self.points

    def _source_frame(self, layer) -> TomogramFrame:
        """The tomogram the probability map belongs to: its name is the file stem, never
        a layer name such as 'prediction: ribosome'; its tilt-series pixel size if known."""
        shape = tuple(layer.data.shape)
        frames = [frame_from_metadata(layer.metadata)]
        frames += [frame_from_metadata(other.metadata) for other in reversed(list(self.viewer.layers))
                   if other._type_string == "image" and other is not layer]
        for frame in frames:
            if frame is not None and tuple(frame.shape) == shape:
                return frame
        return TomogramFrame(clean_tomo_name(layer.name), shape, float(layer.scale[-1]),
                             tuple(layer.translate))

    # filtering and QC ------------------------------------------------------------------
    def _apply_filter(self, *args) -> None:
        if self.points is None or len(self.points.data) == 0:
            self.histogram.set_values([], self.min_score.value)
            return
        scores = np.asarray(self.points.features["score_norm"], float)
        self.points.shown = scores >= float(self.min_score.value)
        suggested = suggest_score_cut(scores)
        self.histogram.set_values(scores, self.min_score.value, suggested)
        hint = f"; suggested score cut {suggested:.2f} (dashed)" if suggested is not None else ""
        self.status.value = f"{int(self.points.shown.sum())} of {len(scores)} picks shown{hint}"

    def _shown_indices(self) -> np.ndarray:
        return np.flatnonzero(self.points.shown) if self.points is not None else np.array([], int)

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
        self.viewer.camera.center = tuple(world[1:])
        self.points.selected_data = {self.current}
        self.status.value = (f"pick {self.current + 1}/{len(self.points.data)}, score "
                             f"{self.points.features['score_norm'][self.current]:.2f}")
        return self.current

    def judge(self, verdict: int) -> None:
        if self.points is None or self.current < 0:
            return
        self.points.features.loc[self.current, "status"] = verdict
        colours = np.asarray(self.points.border_color)
        colours[self.current] = _rgba(STATUS_COLOURS[verdict])
        self.points.border_color = colours
        self.step(1)

    # export -------------------------------------------------------------------------------
    def selected_table(self) -> tuple[pd.DataFrame, TomogramFrame]:
        if self.points is None:
            raise TomosegError("pick first: there are no picks to export.")
        frame = frame_from_metadata(self.points.metadata)
        keep = self.points.shown & (np.asarray(self.points.features["status"]) >= 0)
        features = self.points.features[keep].reset_index(drop=True)
        table = particle_table(self.points.data[keep],
                               **{c: features[c].to_numpy() for c in ("score", "feature")})
        return table, frame

    def export(self) -> Path:
        table, frame = self.selected_table()
        path = Path(self.output.value)
        (write_star if path.suffix.lower() == ".star" else write_csv)(path, table, frame)
        show_info(f"{len(table)} picks written to {path}")
        return path


def _rgba(colour: str) -> np.ndarray:
    return np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)] + [1.0])
