"""The TomoSeg dock: every step as a tab; annotate, train, segment and merge as sections.

Pick, Average, Explore and Gallery are the plugin's other widgets, made
when their tab is first opened. Each section is a small container in
``workflow/``; they share the state in ``workflow.state.Workflow`` and the
one job that may run at a time.
Jobs run through ``worker.start_job``, so nothing heavy runs on the GUI
thread, and they stop when asked, when the widget closes or the viewer does.
"""

from __future__ import annotations

from magicgui.widgets import Container, Label
from napari.layers import Points

from ..layer_data import frame_from_metadata
from .dock import LazyTabs
from .notify import quietly
from .warmup import preload_in_background
from .workflow.boxes_panel import BoxesPanel
from .workflow.features_panel import FeaturesPanel
from .workflow.segment_panel import SegmentPanel
from .workflow.session_panel import SessionPanel
from .workflow.state import Workflow
from .workflow.train_panel import TrainPanel

KEYS_HELP = ("<b>Keys</b>: b positive box at the cursor, Shift-B negative box; click the "
             "tomogram to place a box (Shift-click: negative); paint masks in 'tomoseg masks'.")


def _titled(title: str, panel: Container) -> list:
    return [Label(value=f"<b>{title}</b>"), panel]


def _one_line(label: Label) -> None:
    """A label whose text changes often: its length neither widens nor relayouts the dock
    (a relayout of wrapped labels on every progress report stalled the viewer)."""
    from qtpy.QtWidgets import QSizePolicy

    label.native.setWordWrap(False)
    label.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)


def _widget(module: str, name: str, viewer):
    """Another step's widget, imported when its tab is first opened."""
    from importlib import import_module

    return getattr(import_module(f"{__package__}.{module}"), name)(viewer)


class TomosegWidget(Container):
    """One dock widget for the whole annotate-train-segment loop."""

    def __init__(self, napari_viewer):
        super().__init__(labels=False)
        self.viewer = napari_viewer
        self.workflow = workflow = Workflow(napari_viewer)
        self.session_panel = SessionPanel(workflow)
        self.features = FeaturesPanel(workflow)
        self.boxes = BoxesPanel(workflow)
        self.training = TrainPanel(workflow)
        self.segmenting = SegmentPanel(workflow)
        self.status = Label(value="")
        keys_help = Label(value=KEYS_HELP)
        for label in (keys_help, self.session_panel.info, self.training.model_state,
                      self.boxes.counts):
            label.native.setWordWrap(True)  # long lines wrap instead of widening the dock
        for label in (self.status, self.training.status):  # updated at every step: one line
            _one_line(label)  # whose width never relayouts the dock
        annotate = Container(widgets=[
            *_titled("1. Tomogram and session", self.session_panel),
            *_titled("2. Features", self.features),
            *_titled("3. Boxes and masks", self.boxes), keys_help,
            *_titled("4. Train", self.training)], labels=False)
        segment = Container(widgets=_titled("5. Segment and merge", self.segmenting),
                            labels=False)
        self.tabs = LazyTabs()
        self.tabs.add_now("Annotate", annotate)
        self.tabs.add_now("Segment", segment)
        viewer = napari_viewer
        self.tabs.add("Pick", lambda: _widget("picking_widget", "PickingWidget", viewer))
        self.tabs.add("Filaments", lambda: _widget("filaments_widget", "FilamentsWidget", viewer))
        self.tabs.add("Average", lambda: _widget("averaging_widget", "AveragingWidget", viewer))
        self.tabs.add("Explore", lambda: _widget("explore_widget", "ExploreWidget", viewer))
        self.tabs.add("Gallery", lambda: _widget("gallery_widget", "GalleryWidget", viewer))
        self.native.layout().addWidget(self.tabs)
        self.append(self.status)
        self._connect()
        preload_in_background()  # torch's first optimiser would otherwise stall the first Train

    def _connect(self) -> None:
        workflow = self.workflow
        workflow.status = lambda message: setattr(self.status, "value", message)
        workflow.changed += [self.features.refresh, self.boxes.refresh,
                             self.training.show_model_state]
        workflow.session_started.append(self._on_session)
        workflow.busy_changed += [self.training.show_busy, self.segmenting.show_busy]
        self.features.on_active += [self.segmenting.show_feature, self.training.show_model_state]
        self.training.on_trained += [self.segmenting.use_threshold, self.training.show_model_state]
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self._reset_layer_choices)
        # a default argument, not a closure: Qt may destroy the widget while Python tears
        # down, when closure cells are already cleared (a NameError there aborts the process)
        # (and at shutdown even the modules the widget uses may be gone: ``quietly``)
        self.native.destroyed.connect(lambda *_, widget=self: quietly(widget.close_down))
        try:  # stop workers when the whole viewer closes
            self.viewer.window._qt_window.destroyed.connect(
                lambda *_, widget=self: quietly(widget.close_down))
        except AttributeError:
            pass

    def _reset_layer_choices(self, event=None) -> None:
        if event is not None and event.type == "inserted":
            self._adopt_points(event.value)
        if not self.workflow.closing:
            self.session_panel.tomogram.reset_choices()
            self.segmenting.target.reset_choices()

    def _adopt_points(self, layer) -> None:
        """A points layer made by hand while a session is open belongs to its tomogram:
        it is saved on that tomogram's frame (the writer reads the layer alone). One opened
        from a file is not made here: a CSV of another tomogram was claimed and saved under
        this one's name."""
        c = self.workflow.controller
        if c is None or not isinstance(layer, Points) or frame_from_metadata(layer.metadata) \
                or getattr(getattr(layer, "source", None), "path", None):
            return
        if "tomoseg" in c.image.metadata:
            layer.metadata["tomoseg"] = dict(c.image.metadata["tomoseg"])

    def _on_session(self) -> None:
        c = self.workflow.controller
        if c is None:
            return
        self.boxes.box_size.value = c.session.box_size
        self.boxes.bind_session_layers()
        self.segmenting.target.reset_choices()
        self.segmenting.target.value = c.image

    # the actions a script or test drives -----------------------------------------------
    @property
    def controller(self):
        return self.workflow.controller

    @property
    def models(self) -> dict:
        return self.workflow.models

    @property
    def thresholds(self) -> dict:
        return self.workflow.thresholds

    @property
    def tomogram(self):
        return self.session_panel.tomogram

    @property
    def loss_plot(self):
        return self.training.loss_plot

    def start_session(self, folder=None):
        return self.session_panel.start_session(folder)

    def place_box(self, positive: bool, z=None, y=None, x=None):
        return self.boxes.place_box(positive, z, y, x)

    def start_training(self):
        return self.training.start_training()

    def start_segmentation(self, features: list[str] | None = None):
        return self.segmenting.start_segmentation(features)

    def merge(self):
        return self.segmenting.merge()

    def stop(self, *args) -> None:
        self.workflow.stop()

    def close_down(self) -> None:
        """The widget or viewer is going away: stop work, release keys, touch no widget."""
        self.workflow.close_down()
        self.boxes.release()

