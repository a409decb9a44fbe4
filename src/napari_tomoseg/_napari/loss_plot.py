"""A tiny live loss curve (QPainter), so the plugin needs no plotting library."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class LossPlot(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.values: list[float] = []
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("training loss per step (lower is better)")

    def set_values(self, values) -> None:
        self.values = [float(v) for v in values]
        self.update()

    def append(self, value: float) -> None:
        self.values.append(float(value))
        if len(self.values) % 5 == 0 or len(self.values) < 5:
            self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        painter.setPen(QColor(170, 170, 170))
        if len(self.values) < 2:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "loss appears here")
            return
        values = np.asarray(self.values)
        if len(values) > 400:  # keep drawing cheap
            values = values[:: len(values) // 400 + 1]
        lo, hi = float(values.min()), float(values.max())
        span = hi - lo or 1.0
        w, h = self.width() - 8, self.height() - 20
        points = QPolygonF([QPointF(4 + w * i / (len(values) - 1), 4 + h * (hi - v) / span)
                            for i, v in enumerate(values)])
        painter.setPen(QPen(QColor(86, 204, 242), 1.5))
        painter.drawPolyline(points)
        painter.setPen(QColor(170, 170, 170))
        painter.drawText(4, self.height() - 4,
                         f"step {len(self.values)}   loss {self.values[-1]:.4f}")
