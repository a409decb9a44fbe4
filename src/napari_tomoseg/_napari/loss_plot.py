"""A tiny live loss curve (QPainter), so the plugin needs no plotting library."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class LossPlot(QWidget):
    """Training loss per step; an ensemble's networks as curves drawn over each other.

    Each network has its own curve (a continued ensemble's network k goes on with curve k),
    so three networks read as three comparable curves, not one sawtooth three times long;
    ``values`` is all of them one after another.
    """

    def __init__(self, parent=None):
        super().__init__(parent)
        self._curves: list[list[float]] = [[]]
        self.latest = 0  # the curve of the network in training
        self.setMinimumHeight(100)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("training loss (y) per step (x); lower is better. An ensemble's "
                        "networks are drawn over each other, the one in training brightest")

    @property
    def values(self) -> list[float]:
        return [v for curve in self._curves for v in curve]

    def set_values(self, values) -> None:
        """One network's losses."""
        self.set_curves([values])

    def set_curves(self, curves) -> None:
        """Each network's losses (network k's go on with curve k)."""
        self._curves = [[float(v) for v in c] for c in curves] or [[]]
        self.latest = len(self._curves) - 1
        self.update()

    def append(self, value: float, network: int | None = None) -> None:
        """One step's loss, of network ``network`` (from 0) of an ensemble."""
        if network is not None:
            self._curves += [[] for _ in range(network + 1 - len(self._curves))]
            self.latest = network
        curve = self._curves[self.latest]
        curve.append(float(value))
        if len(curve) % 5 == 0 or len(curve) < 5:
            self.update()

    def curves(self) -> list[np.ndarray]:
        return [np.asarray(c) for c in self._curves if c]

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        painter.setPen(QColor(170, 170, 170))
        values = np.asarray(self.values)
        if len(values) < 2:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "loss appears here")
            return
        lo, hi = float(values.min()), float(values.max())
        span = hi - lo or 1.0
        steps = max(len(c) for c in self._curves)
        latest = self._curves[self.latest] or next(c for c in self._curves[::-1] if c)
        left, top, bottom = 46, 6, 18  # room for the axes' numbers
        w, h = self.width() - left - 6, self.height() - top - bottom
        painter.setPen(QColor(110, 110, 110))
        painter.drawLine(left, top, left, top + h)  # y axis: loss
        painter.drawLine(left, top + h, left + w, top + h)  # x axis: step
        painter.setPen(QColor(170, 170, 170))
        painter.drawText(2, top + 10, f"{hi:.3g}")
        painter.drawText(2, top + h, f"{lo:.3g}")
        painter.drawText(left, self.height() - 3, "0")
        painter.drawText(left + w - 40, self.height() - 3, f"step {len(latest)}")
        for k, curve in enumerate(self._curves):
            x = range(0, len(curve), len(curve) // 400 + 1)  # keep drawing cheap
            points = QPolygonF([QPointF(left + w * i / max(steps - 1, 1),
                                        top + h * (hi - curve[i]) / span) for i in x])
            bright = curve is latest
            painter.setPen(QPen(QColor(86, 204, 242) if bright else QColor(70, 110, 130),
                                1.5 if bright else 1.0))
            painter.drawPolyline(points)
        painter.setPen(QColor(170, 170, 170))
        network = f", network {self.latest + 1}" if sum(map(bool, self._curves)) > 1 else ""
        painter.drawText(left + 6, top + 10, f"loss {latest[-1]:.4f}{network}")
