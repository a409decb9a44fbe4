"""The TomoSeg dock widget: session, features, boxes, training, segmentation, top to bottom.

Each section is a small magicgui container; the logic lives in the core
(training, segmentation, merge) and in ``AnnotationController`` (layers).
Long work runs in napari thread workers that stop when asked, when the
widget is closed or when the viewer closes.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from magicgui.widgets import (CheckBox, ComboBox, Container, FloatSlider, FloatSpinBox, Label,
                              LineEdit, ProgressBar, PushButton, SpinBox)
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info

from ..errors import TomosegError
from ..merge import MergeSettings, merge_slab
from ..nn.inference import iter_segment
from ..nn.model_file import load_model, save_model
from ..nn.training import TrainingSettings, iter_train
from ..session import Session, default_session_folder, open_session
from .annotation import AnnotationController, overlay_name
from .notify import guarded, report_error
from .voxel_size import apply_voxel_size, voxel_size_of
from .tilt_series_size import apply_tilt_series_pixel_size, tilt_series_pixel_size_of
from .loss_plot import LossPlot


def _tomogram_path(layer: Image) -> str | None:
    return (layer.metadata.get("tomoseg") or {}).get("path")


def _voxel_size(layer: Image) -> float:
    return voxel_size_of(layer)


class TomosegWidget(Container):
    """One dock widget for the whole annotate-train-segment loop."""

    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.controller: AnnotationController | None = None
        self.worker = None
        self.stop_event = threading.Event()
        self.models: dict = {}

        # 1 tomogram and session
        self.tomogram = ComboBox(label="Tomogram", choices=self._image_layers)
        self.voxel = FloatSpinBox(label="Voxel size (A)", value=0.0, min=0.0, max=1000.0,
                                  step=0.1, tooltip="0: from the file's header")
        self.tilt_series = FloatSpinBox(
            label="Tilt-series pixel size (A)", value=0.0, min=0.0, max=1000.0, step=0.001,
            tooltip="pixel size of the unbinned tilt series (RELION's rlnTomoTiltSeriesPixelSize),"
                    " written into STAR files of picks; 0: unknown (not written)")
        self.start = PushButton(text="Start / restore session")
        self.session_info = Label(value="Open a tomogram, then start a session.")
        # 2 features
        # choices from a function: napari calls reset_choices() on docked containers
        self.feature = ComboBox(label="Feature", choices=self._feature_names)
        self.new_name = LineEdit(label="Name", value="")
        self.add_feature = PushButton(text="Add feature")
        self.rename_feature = PushButton(text="Rename")
        self.remove_feature = PushButton(text="Remove")
        self.colour = LineEdit(label="Colour", value="")
        self.recolour = PushButton(text="Set colour")
        # 3 boxes
        self.box_size = SpinBox(label="Box size (px)", value=64, min=16, max=512, step=8)
        self.add_positive = PushButton(text="+ positive box at cursor  [b]")
        self.add_negative = PushButton(text="- negative box at cursor  [Shift-B]")
        self.click_places = CheckBox(text="Click places boxes (Shift-click: negative)", value=False)
        self.toggle = PushButton(text="Toggle selected boxes +/-")
        self.counts = Label(value="")
        # 4 training
        self.architecture = ComboBox(label="Network", choices=["unet", "eman2"], value="unet")
        self.steps = SpinBox(label="Max steps", value=1500, min=1, max=100000, step=50,
                             tooltip="training stops earlier when held-out box pixels stop improving")
        self.continue_training = CheckBox(text="Continue from the last model", value=False)
        self.train_button = PushButton(text="Train")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.train_status = Label(value="")
        # 5 segmentation
        self.target = ComboBox(label="Apply to", choices=self._image_layers,
                               tooltip="the session's tomogram, or another open one")
        self.threshold = FloatSlider(label="Threshold", value=0.5, min=0.05, max=0.95, step=0.05,
                                     tooltip="for the feature chosen in section 2")
        self.thresholds: dict[str, float] = {}
        self.artifacts = LineEdit(label="Artifacts", value="carbon")
        self.segment_button = PushButton(text="Segment whole tomogram")
        self.merge_button = PushButton(text="Merge features")
        self.progress = ProgressBar(value=0, max=1, visible=False)

        self.loss_plot = LossPlot()
        self.extend([
            Label(value="<b>1. Tomogram</b>"), self.tomogram, self.voxel, self.tilt_series,
            self.start,
            self.session_info,
            Label(value="<b>2. Features</b>"), self.feature, self.new_name,
            Container(widgets=[self.add_feature, self.rename_feature, self.remove_feature],
                      layout="horizontal", labels=False),
            Container(widgets=[self.colour, self.recolour], layout="horizontal"),
            Label(value="<b>3. Boxes and masks</b> (paint masks in 'tomoseg masks')"),
            self.box_size, self.click_places, self.add_positive, self.add_negative, self.toggle,
            self.counts,
            Label(value="<b>4. Train</b>"), self.architecture, self.steps, self.continue_training,
            Container(widgets=[self.train_button, self.stop_button], layout="horizontal",
                      labels=False),
            self.train_status,
        ])
        self.native.layout().addWidget(self.loss_plot)
        self.extend([Label(value="<b>5. Segment</b>"), self.target, self.threshold, self.artifacts,
                     Container(widgets=[self.segment_button, self.merge_button],
                               layout="horizontal", labels=False), self.progress])

        self.start.changed.connect(self._guard(self.start_session))
        self.voxel.changed.connect(self._guard(
            lambda: apply_voxel_size(self.tomogram.value, self.voxel.value)))
        self.tilt_series.changed.connect(self._guard(self._set_tilt_series_pixel_size))
        self.tomogram.changed.connect(self._show_tilt_series_pixel_size)
        self.feature.changed.connect(self._guard(self._on_feature))
        self.add_feature.changed.connect(self._guard(self._add_feature))
        self.rename_feature.changed.connect(self._guard(self._rename_feature))
        self.remove_feature.changed.connect(self._guard(self._remove_feature))
        self.recolour.changed.connect(self._guard(self._recolour))
        self.box_size.changed.connect(self._guard(self._set_box_size))
        self.add_positive.changed.connect(self._guard(lambda: self.place_box(True)))
        self.add_negative.changed.connect(self._guard(lambda: self.place_box(False)))
        self.toggle.changed.connect(self._guard(self._toggle))
        self.train_button.changed.connect(self._guard(self.start_training))
        self.stop_button.changed.connect(self.stop)
        self.segment_button.changed.connect(self._guard(self.start_segmentation))
        self.merge_button.changed.connect(self._guard(self.merge))
        self.threshold.changed.connect(self._apply_threshold)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(lambda e: (self.tomogram.reset_choices(), self.target.reset_choices()))
        self.viewer.bind_key("b", lambda v: self._guard(lambda: self.place_box(True))(),
                             overwrite=True)
        self.viewer.bind_key("Shift-B", lambda v: self._guard(lambda: self.place_box(False))(),
                             overwrite=True)
        self.viewer.mouse_drag_callbacks.append(self._on_click)
        self._closing = False
        # a default argument, not a closure: Qt may destroy the widget while Python tears
        # down, when closure cells are already cleared (a NameError there aborts the process)
        self.native.destroyed.connect(lambda *_, widget=self: _close_down_quietly(widget))
        try:  # stop workers when the whole viewer closes
            self.viewer.window._qt_window.destroyed.connect(
                lambda *_, widget=self: _close_down_quietly(widget))
        except AttributeError:
            pass

    # helpers --------------------------------------------------------------------
    def _image_layers(self, widget=None):
        return [layer for layer in self.viewer.layers if isinstance(layer, Image)
                and not layer.name.startswith("prediction:") and layer.ndim == 3]

    def _feature_names(self, widget=None) -> list[str]:
        controller = getattr(self, "controller", None)
        return controller.session.feature_names() if controller else []

    def _guard(self, action):
        """Run an action; user-caused errors become a notification, never a crash."""
        return guarded(action, lambda message: show_error(message))

    def _require_session(self) -> AnnotationController:
        if self.controller is None:
            raise TomosegError("start a session first (section 1).")
        return self.controller

    def _refresh(self) -> None:
        c = self.controller
        if c is None:
            return
        names = c.session.feature_names()
        active = c.active  # resetting the choices fires _on_feature: keep the intended one
        self.feature.reset_choices()
        if active in names:
            self.feature.value = active
            c.set_active(active)
        lines = []
        for name in names:
            pos, neg = c.session.counts(name)
            lines.append(f"{name}: {pos} positive, {neg} negative")
        self.counts.value = "\n".join(lines)

    # 1 session ------------------------------------------------------------------
    def start_session(self, folder: str | Path | None = None) -> Session:
        layer = self.tomogram.value
        if layer is None:
            raise TomosegError("open a tomogram first (File > Open, or a sample).")
        path = _tomogram_path(layer)
        if folder is None:
            folder = default_session_folder(path) if path else Path.home() / f"{layer.name}.tomoseg"
        session, message = open_session(folder, path, _voxel_size(layer), layer.data.shape)
        show_info(message)
        folder = session.folder
        self.controller = AnnotationController(self.viewer, layer, session)
        self.models = {}
        for feature, relative in session.models.items():
            try:
                self.models[feature] = load_model(folder / relative)
                self.thresholds[feature] = self.models[feature].threshold
            except TomosegError as exc:
                show_error(f"model of '{feature}' not restored: {exc}")
        self.box_size.value = session.box_size
        # the session's value wins; else the one typed (or carried by the layer) is saved
        known = session.tilt_series_pixel_size or tilt_series_pixel_size_of(layer)
        self.tilt_series.value = known or 0.0
        self._set_tilt_series_pixel_size()
        self.target.reset_choices()
        self.target.value = layer
        self.session_info.value = f"Session folder: {folder}"
        self._refresh()
        return session

    def _set_tilt_series_pixel_size(self, *args) -> None:
        """The typed tilt-series pixel size goes into the tomogram layer's metadata (and so
        into STAR files of picks on it) and into the session of that tomogram."""
        layer = self.tomogram.value
        apply_tilt_series_pixel_size(layer, self.tilt_series.value, self.viewer)
        c = self.controller
        if c is not None and c.image is layer:
            size = float(self.tilt_series.value) or None
            if c.session.tilt_series_pixel_size != size:
                c.session.tilt_series_pixel_size = size
                c.session.save()

    def _show_tilt_series_pixel_size(self, *args) -> None:
        """Another tomogram chosen: show its own value, not the last one's."""
        self.tilt_series.value = tilt_series_pixel_size_of(self.tomogram.value) or 0.0

    # 2 features ----------------------------------------------------------------------
    def _on_feature(self, *args) -> None:
        if self.controller and self.feature.value:
            self.controller.set_active(self.feature.value)
            self.threshold.value = self.thresholds.get(self.feature.value, 0.5)

    def _add_feature(self) -> None:
        c = self._require_session()
        feature = c.session.add_feature(self.new_name.value or f"feature {len(c.session.features) + 1}",
                                        self.colour.value or None)
        c.refresh_colours()
        c.set_active(feature.name)
        self._refresh()

    def _rename_feature(self) -> None:
        c = self._require_session()
        old = self.feature.value
        c.session.rename_feature(old, self.new_name.value)
        if old in self.models:
            self.models[self.new_name.value.strip()] = self.models.pop(old)
        c.active = self.new_name.value.strip()
        c.refresh_colours()
        self._refresh()

    def _remove_feature(self) -> None:
        c = self._require_session()
        name = self.feature.value
        removed = c.session.remove_feature(name)
        self.models.pop(name, None)
        c.active = c.session.features[0].name if c.session.features else None
        c.refresh_colours()
        self._refresh()
        show_info(f"Removed '{name}' and its {removed} boxes.")

    def _recolour(self) -> None:
        c = self._require_session()
        colour = self.colour.value.strip()
        if not (len(colour) == 7 and colour.startswith("#")):
            raise TomosegError("give the colour as #rrggbb, e.g. #f2c94c.")
        c.session.recolour_feature(self.feature.value, colour)
        c.refresh_colours()

    # 3 boxes ---------------------------------------------------------------------------
    def _set_box_size(self, *args) -> None:
        if self.controller:
            self.controller.session.box_size = int(self.box_size.value)
            self.controller.session.save()

    def place_box(self, positive: bool, z=None, y=None, x=None):
        c = self._require_session()
        box = c.place_box(positive, z, y, x)
        self._refresh()
        return box

    def _on_click(self, viewer, event):
        """With 'Click places boxes' ticked, a click drops a box where it lands."""
        if not self.click_places.value or self.controller is None or event.button != 1:
            return
        yield  # wait for the release: a drag (pan) places nothing
        dragged = False
        while event.type == "mouse_move":
            dragged = True
            yield
        if dragged:
            return
        data = self.controller.image.world_to_data(event.position)
        positive = "Shift" not in event.modifiers
        self._guard(lambda: self.place_box(positive, self.controller.current_z(),
                                           float(data[-2]), float(data[-1])))()

    def _toggle(self) -> None:
        self._require_session().toggle_selected()
        self._refresh()

    # 4 training ----------------------------------------------------------------------------
    def start_training(self):
        c = self._require_session()
        if self.worker is not None and self.worker.is_running:
            raise TomosegError("already busy: stop the running job first.")
        c.collect_masks()
        feature = c.active
        layer = c.image
        settings = TrainingSettings(architecture=self.architecture.value, steps=int(self.steps.value))
        start_from = self.models.get(feature) if self.continue_training.value else None
        from ..annotations import check_boxes

        check_boxes(c.session.boxes, feature)
        overlay = c.overlay(feature)
        self.loss_plot.set_values([])
        self.stop_event = threading.Event()
        self._show_running(True, f"training '{feature}'...")

        @thread_worker
        def work():
            yield from iter_train(layer.data, c.session.boxes, _voxel_size(layer), settings,
                                  feature=feature, colour=c.session.feature(feature).colour,
                                  start_from=start_from, preview_z=c.current_z,
                                  stop=self.stop_event)

        state = {"model": None}

        def on_update(update):
            state["model"] = update.model
            if self._closing:
                return
            self.loss_plot.append(update.loss)
            self.train_status.value = f"step {update.step}/{update.total}, loss {update.loss:.4f}"
            if update.preview is not None:
                overlay.data[update.preview_z] = update.preview.astype(np.float16)
                overlay.refresh()

        def on_finished():
            model = state["model"]
            if model is not None:  # saved even when closing: nothing trained is lost
                self.models[feature] = model
                save_model(model, c.session.model_path(feature))
                c.session.register_model(feature)
            if not self._closing:
                if model is not None:
                    self._use_threshold(feature, model)
                    held = model.info.get("held_out")
                    self.train_status.value += (
                        f"  (model saved; held-out Dice {held['dice'] or 0:.2f} at threshold "
                        f"{model.threshold:.2f}, best step {held['step']})" if held
                        else "  (model saved)")
                self._show_running(False)

        self.worker = work()
        self.worker.yielded.connect(on_update)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(on_finished)
        self.worker.start()
        return self.worker

    def close_down(self) -> None:
        """The widget or viewer is going away: stop work, touch no widget afterwards."""
        self._closing = True
        self.stop()

    def stop(self, *args) -> None:
        self.stop_event.set()
        worker = self.worker
        if worker is not None:
            try:
                worker.quit()
            except RuntimeError:  # Qt object already gone at shutdown
                pass

    def _on_error(self, exc: Exception) -> None:
        if self._closing:
            return
        report_error(exc)
        self._show_running(False)

    def _show_running(self, running: bool, message: str = "") -> None:
        self.train_button.enabled = not running
        self.segment_button.enabled = not running
        self.stop_button.enabled = running
        self.progress.visible = running
        if message:
            self.train_status.value = message

    # 5 segmentation ------------------------------------------------------------------------
    def start_segmentation(self, features: list[str] | None = None):
        c = self._require_session()
        if self.worker is not None and self.worker.is_running:
            raise TomosegError("already busy: stop the running job first.")
        features = features or [f for f in c.session.feature_names() if f in self.models]
        if not features:
            raise TomosegError("train a network first (section 4).")
        layer = self.target.value or c.image
        if layer is c.image:
            overlays = {f: c.overlay(f) for f in features}
            jobs = [(f, self.models[f], c.session.segmentation_path(f)) for f in features]
        else:  # another tomogram: its own prediction layers and files
            overlays = {f: self._other_overlay(layer, f) for f in features}
            folder = c.session.folder / "segmentations"
            jobs = [(f, self.models[f], folder / f"{layer.name}_{f}.mrc") for f in features]
        self.stop_event = threading.Event()
        self._show_running(True, f"segmenting {', '.join(features)}...")
        total = layer.data.shape[0] * len(jobs)
        self.progress.max = total
        self.progress.value = 0

        @thread_worker
        def work():
            for index, (feature, model, path) in enumerate(jobs):
                for update in iter_segment(layer.data, model, _voxel_size(layer), path,
                                           origin=tuple(layer.translate), stop=self.stop_event,
                                           overwrite=True):
                    yield feature, index, update

        def on_update(item):
            if self._closing:
                return
            feature, index, update = item
            overlays[feature].data[update.z0:update.z1] = update.probability.astype(np.float16)
            overlays[feature].refresh()
            self.progress.value = index * layer.data.shape[0] + update.done
            self.train_status.value = f"segmenting '{feature}': {update.done}/{update.total} slices"

        self.worker = work()
        self.worker.yielded.connect(on_update)
        self.worker.errored.connect(self._on_error)
        self.worker.finished.connect(lambda: None if self._closing else self._show_running(False))
        self.worker.start()
        return self.worker

    def _other_overlay(self, layer: Image, feature: str) -> Image:
        from .annotation import fading_colormap

        name = f"{overlay_name(feature)} [{layer.name}]"
        if name not in self.viewer.layers:
            self.viewer.add_image(np.zeros(layer.data.shape, np.float16), name=name,
                                  colormap=fading_colormap(
                                      self.controller.session.feature(feature).colour),
                                  blending="additive",
                                  contrast_limits=(self.thresholds.get(feature, 0.5), 1.0),
                                  metadata={"threshold": self.thresholds.get(feature, 0.5)},
                                  scale=layer.scale, translate=layer.translate)
        return self.viewer.layers[name]

    def _use_threshold(self, feature: str, model) -> None:
        """A new model's calibrated threshold becomes the feature's threshold."""
        self.thresholds[feature] = float(model.threshold)
        if self.controller is not None and self.controller.active == feature:
            # the slider's range and 0.05 steps: 0.95 must not become 0.9500000000000001
            self.threshold.value = min(max(round(float(model.threshold) / 0.05) * 5 / 100, 0.05),
                                       0.95)
            self._apply_threshold()

    def _apply_threshold(self, *args) -> None:
        """The slider sets the active feature's threshold (display and merge)."""
        if self.controller is None or not self.controller.active:
            return
        feature = self.controller.active
        self.thresholds[feature] = float(self.threshold.value)
        for layer in self.viewer.layers:
            if layer.name == overlay_name(feature) or layer.name.startswith(overlay_name(feature) + " ["):
                layer.contrast_limits = (float(self.threshold.value), 1.0)
                layer.metadata["threshold"] = float(self.threshold.value)  # Pick's default

    def merge(self):
        c = self._require_session()
        features = [f for f in c.session.feature_names() if overlay_name(f) in self.viewer.layers]
        if not features:
            raise TomosegError("segment first: there is nothing to merge.")
        artifacts = [a.strip() for a in self.artifacts.value.split(",") if a.strip() in features]
        settings = MergeSettings(features=features,
                                 thresholds={f: self.thresholds.get(f, 0.5) for f in features},
                                 artifacts={a: [f for f in features if f not in artifacts]
                                            for a in artifacts})
        probabilities = {f: np.asarray(self.viewer.layers[overlay_name(f)].data, np.float32)
                         for f in features}
        labels = merge_slab(probabilities, settings)
        colours = {0: "transparent", None: "transparent"}
        for f in features:
            colours[settings.label_of(f)] = c.session.feature(f).colour
        from napari.utils.colormaps import DirectLabelColormap

        name = "segmentation (merged)"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = labels
        else:
            self.viewer.add_labels(labels, name=name, scale=c.image.scale, translate=c.image.translate,
                                   colormap=DirectLabelColormap(color_dict=colours), opacity=0.6)
        from ..io.mrc import write_volume

        path = c.session.folder / "segmentations" / "merged.mrc"
        write_volume(path, labels, tuple(c.image.scale), tuple(c.image.translate), overwrite=True)
        show_info(f"Merged segmentation saved to {path}")
        return labels


def _close_down_quietly(widget: "TomosegWidget") -> None:
    """Stop the widget's work when Qt destroys it, also during interpreter shutdown.

    An exception raised from a Qt slot aborts the whole process under PyQt6,
    and at shutdown even the modules the widget uses may be gone already.
    """
    try:
        widget.close_down()
    except Exception:  # noqa: BLE001 - nothing can be reported while the process ends
        pass
