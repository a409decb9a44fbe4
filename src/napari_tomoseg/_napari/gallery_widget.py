"""A grid of every training box; click one to go to it in the viewer.

Boxes are sorted by how much the network disagrees with them, using the
maps tagged ``probability`` (by feature), whatever their layer names.
"""

from __future__ import annotations


import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton
from napari.layers import Image
from qtpy.QtCore import Qt
from qtpy.QtGui import QIcon, QImage, QPixmap
from qtpy.QtWidgets import QGridLayout, QScrollArea, QToolButton, QWidget

from ..errors import TomosegError
from ..explore.gallery import GalleryItem, gallery_items, sort_items, thumbnail_rgb
from .workflow.state import session_folder_of
from ..session import Session
from .layer_tags import has_role, incomplete_reason, layers_with, tag_of, tomogram_key
from .notify import guarded
from .camera import camera_of

COLUMNS = 4


class GalleryWidget(Container):
    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.tomogram = ComboBox(label="Tomogram", choices=self._images)
        self.folder = FileEdit(label="Session folder", mode="d", value="")
        self.order = ComboBox(label="Sort by", choices=["disagreement", "feature and slice"],
                              value="disagreement")
        self.refresh_button = PushButton(text="Show boxes")
        self.status = Label(value="")
        self.extend([self.tomogram, self.folder, self.order, self.refresh_button, self.status])
        self.grid_host = QWidget()
        self.grid = QGridLayout(self.grid_host)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.grid_host)
        scroll.setMinimumHeight(300)
        self.native.layout().addWidget(scroll)
        self.items: list[GalleryItem] = []
        self.buttons: list[QToolButton] = []
        self.refresh_button.changed.connect(guarded(self.refresh))
        self.order.changed.connect(guarded(self.refresh))
        self.viewer.layers.events.inserted.connect(lambda e: self.tomogram.reset_choices())
        self.viewer.layers.events.removed.connect(lambda e: self.tomogram.reset_choices())

    def _images(self, widget=None):
        return [l for l in self.viewer.layers if isinstance(l, Image) and l.ndim == 3
                and not any(has_role(l, role) for role in ("probability", "average", "class"))]

    def _session(self, layer: Image) -> Session:
        folder = str(self.folder.value or "")
        if not folder or folder == ".":
            folder = session_folder_of(layer)
            if folder is None:
                raise TomosegError("choose the session folder (<tomogram>.tomoseg).")
        session = Session.load(folder)
        shape = tuple(int(s) for s in layer.data.shape)
        if session.shape and tuple(session.shape) != shape:  # boxes cut from the wrong volume
            raise TomosegError(f"the session in {folder} was made on a "
                               f"{' x '.join(map(str, session.shape))} tomogram, not "
                               f"'{layer.name}' ({' x '.join(map(str, shape))}): choose its "
                               "own session folder.")
        return session

    def refresh(self) -> list[GalleryItem]:
        self.items = []  # a failed refresh leaves no grid of the last tomogram behind
        self._fill({}, None)
        self.status.value = ""
        layer = self.tomogram.value
        if layer is None:
            raise TomosegError("open a tomogram first.")
        session = self._session(layer)
        probabilities = {}
        key = tomogram_key(layer)
        for feature in session.feature_names():  # this tomogram's own whole map of each
            found = [c for c in layers_with(self.viewer, "probability", feature=feature)
                     if c.data.shape == layer.data.shape and not incomplete_reason(c)]
            own = [c for c in found if tag_of(c).get("tomogram") == key]  # not a twin's;
            opened = [c for c in found if not tag_of(c).get("tomogram")]  # or one from a file
            if own or opened:
                probabilities[feature] = (own or opened)[-1].data
        by = "disagreement" if self.order.value == "disagreement" else "slice"
        self.items = sort_items(gallery_items(layer.data, session.boxes, probabilities), by)
        colours = {f.name: f.colour for f in session.features}
        self._fill(colours, layer)
        self.status.value = (f"{len(self.items)} boxes"
                             + ("" if probabilities else " (no whole segmentation of this tomogram: not "
                                                  "sorted by disagreement)"))
        return self.items

    def _fill(self, colours: dict, layer: Image) -> None:
        while self.grid.count():
            child = self.grid.takeAt(0).widget()
            if child is not None:
                child.deleteLater()
        self.buttons = []
        for n, item in enumerate(self.items):
            rgb = np.ascontiguousarray(thumbnail_rgb(item, colours.get(item.box.feature, "#ffffff")))
            image = QImage(rgb.data, rgb.shape[1], rgb.shape[0], 3 * rgb.shape[1],
                           QImage.Format.Format_RGB888).copy()
            button = QToolButton()
            pixmap = QPixmap.fromImage(image)
            button.setIcon(QIcon(pixmap))
            button.setIconSize(pixmap.size())
            sign = "+" if item.box.positive else "-"
            extra = f" {item.disagreement:.2f}" if item.disagreement is not None else ""
            button.setText(f"{item.box.feature} {sign} z{item.box.z}{extra}")
            button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextUnderIcon)
            button.clicked.connect(lambda checked=False, i=n: self.go_to(i))
            self.grid.addWidget(button, n // COLUMNS, n % COLUMNS)
            self.buttons.append(button)

    def go_to(self, index: int) -> None:
        """Centre the view on the box and show its slice."""
        layer = self.tomogram.value
        box = self.items[index].box
        world = np.array([box.z, box.y, box.x]) * np.asarray(layer.scale) + np.asarray(layer.translate)
        self.viewer.dims.set_point(0, world[0])
        camera_of(self.viewer).center = tuple(world[1:])
