"""A tiny live loss curve (QPainter), so the plugin needs no plotting library."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class LossPlot(QWidget):
    """Training loss per step; an ensemble's networks as curves drawn over each other.

    ``values`` holds every loss in order and ``starts`` where each network's curve begins,
    so three networks read as three comparable curves, not one sawtooth three times long.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self.values: list[float] = []
        self.starts: list[int] = [0]
        self.setMinimumHeight(100)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("training loss (y) per step (x); lower is better. An ensemble's "
                        "networks are drawn over each other, the one in training brightest")

    def set_values(self, values, starts=(0,)) -> None:
        self.values = [float(v) for v in values]
        self.starts = sorted({0, *(int(s) for s in starts if 0 < int(s) < len(self.values))})
        self.update()

    def new_curve(self) -> None:
        """The next losses are another network's (of an ensemble): a curve of their own."""
        if self.values and self.starts[-1] != len(self.values):
            self.starts.append(len(self.values))
            self.update()

    def append(self, value: float) -> None:
        self.values.append(float(value))
        if len(self.values) % 5 == 0 or len(self.values) < 5:
            self.update()

    def curves(self) -> list[np.ndarray]:
        ends = self.starts[1:] + [len(self.values)]
        return [np.asarray(self.values[a:b]) for a, b in zip(self.starts, ends) if b > a]

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        painter.setPen(QColor(170, 170, 170))
        curves = self.curves()
        if len(self.values) < 2:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "loss appears here")
            return
        values = np.asarray(self.values)
        lo, hi = float(values.min()), float(values.max())
        span = hi - lo or 1.0
        steps = max(len(c) for c in curves)
        left, top, bottom = 46, 6, 18  # room for the axes' numbers
        w, h = self.width() - left - 6, self.height() - top - bottom
        painter.setPen(QColor(110, 110, 110))
        painter.drawLine(left, top, left, top + h)  # y axis: loss
        painter.drawLine(left, top + h, left + w, top + h)  # x axis: step
        painter.setPen(QColor(170, 170, 170))
        painter.drawText(2, top + 10, f"{hi:.3g}")
        painter.drawText(2, top + h, f"{lo:.3g}")
        painter.drawText(left, self.height() - 3, "0")
        painter.drawText(left + w - 40, self.height() - 3, f"step {len(curves[-1])}")
        for k, curve in enumerate(curves):
            stride = len(curve) // 400 + 1  # keep drawing cheap
            x = np.arange(0, len(curve), stride)
            points = QPolygonF([QPointF(left + w * i / max(steps - 1, 1),
                                        top + h * (hi - curve[i]) / span) for i in x])
            latest = k == len(curves) - 1
            painter.setPen(QPen(QColor(86, 204, 242) if latest else QColor(70, 110, 130),
                                1.5 if latest else 1.0))
            painter.drawPolyline(points)
        painter.setPen(QColor(170, 170, 170))
        network = f", network {len(curves)}" if len(curves) > 1 else ""
        painter.drawText(left + 6, top + 10, f"loss {self.values[-1]:.4f}{network}")
