"""XZ and YZ slabs through the mouse cursor, beside napari's XY view.

Both follow one cursor: moving the mouse over the tomogram updates the
side views (the slabs through the cursor's y and x), and their cross-hairs
mark the cursor's position. They use the Explore widget's slab thickness
and filters; nothing of the tomogram is changed.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QImage, QPixmap
from qtpy.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from ..explore.display import DisplaySettings, SlabCache


def _to_pixmap(plane: np.ndarray, limits: tuple[float, float], cross: tuple[int, int],
               width: int) -> QPixmap:
    lo, hi = limits
    grey = (np.clip((plane - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    row, column = cross
    rgb[np.clip(row, 0, rgb.shape[0] - 1), :] = (242, 201, 76)
    rgb[:, np.clip(column, 0, rgb.shape[1] - 1)] = (242, 201, 76)
    rgb = np.ascontiguousarray(rgb)
    image = QImage(rgb.data, rgb.shape[1], rgb.shape[0], 3 * rgb.shape[1],
                   QImage.Format.Format_RGB888).copy()
    return QPixmap.fromImage(image).scaledToWidth(width, Qt.TransformationMode.SmoothTransformation)


class OrthoViews(QWidget):
    """Two labels showing the XZ slab at the cursor's y and the YZ slab at its x."""

    def __init__(self, viewer, layer, settings: DisplaySettings, width: int = 320):
        super().__init__()
        self.viewer, self.layer, self.settings, self.width_px = viewer, layer, settings, width
        self.cache = SlabCache(layer.data, float(layer.scale[-1]), size=16)
        self.xz, self.yz = QLabel(), QLabel()
        self.caption = QLabel("move the mouse over the tomogram")
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        row.addWidget(self.xz)
        row.addWidget(self.yz)
        layout.addLayout(row)
        layout.addWidget(self.caption)
        self.position: tuple[int, int, int] | None = None
        viewer.cursor.events.position.connect(self._on_cursor)

    def voxel_at(self, world) -> tuple[int, int, int]:
        zyx = (np.asarray(world[-3:]) - np.asarray(self.layer.translate)) / np.asarray(self.layer.scale)
        return tuple(int(np.clip(round(v), 0, n - 1)) for v, n in zip(zyx, self.layer.data.shape))

    def _on_cursor(self, event=None) -> None:
        position = self.viewer.cursor.position
        if len(position) >= 3 and self.layer.data is not None:
            self.show_at(self.voxel_at(position))

    def show_at(self, zyx: tuple[int, int, int]) -> None:
        if zyx == self.position:
            return
        self.position = zyx
        z, y, x = zyx
        xz, limits = self.cache.get(1, y, self.settings)  # (z, x)
        yz, _ = self.cache.get(2, x, self.settings)  # (z, y)
        self.xz.setPixmap(_to_pixmap(xz, limits, (z, x), self.width_px))
        self.yz.setPixmap(_to_pixmap(yz, limits, (z, y), self.width_px))
        self.caption.setText(f"XZ at y {y}, YZ at x {x}; cursor z {z}")

    def close_views(self) -> None:
        self.viewer.cursor.events.position.disconnect(self._on_cursor)
