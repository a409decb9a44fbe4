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
        self.setMinimumHeight(100)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("training loss (y) per step (x); lower is better")

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
        left, top, bottom = 46, 6, 18  # room for the axes' numbers
        w, h = self.width() - left - 6, self.height() - top - bottom
        painter.setPen(QColor(110, 110, 110))
        painter.drawLine(left, top, left, top + h)  # y axis: loss
        painter.drawLine(left, top + h, left + w, top + h)  # x axis: step
        painter.setPen(QColor(170, 170, 170))
        painter.drawText(2, top + 10, f"{hi:.3g}")
        painter.drawText(2, top + h, f"{lo:.3g}")
        painter.drawText(left, self.height() - 3, "0")
        painter.drawText(left + w - 40, self.height() - 3, f"step {len(self.values)}")
        points = QPolygonF([QPointF(left + w * i / (len(values) - 1), top + h * (hi - v) / span)
                            for i, v in enumerate(values)])
        painter.setPen(QPen(QColor(86, 204, 242), 1.5))
        painter.drawPolyline(points)
        painter.setPen(QColor(170, 170, 170))
        painter.drawText(left + 6, top + 10, f"loss {self.values[-1]:.4f}")
