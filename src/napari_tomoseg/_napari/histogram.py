"""A small score histogram with the current cut-off marked (QPainter, no plotting library)."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QColor, QPainter
from qtpy.QtWidgets import QSizePolicy, QWidget


class Histogram(QWidget):
    def __init__(self, parent=None, bins: int = 30):
        super().__init__(parent)
        self.bins = bins
        self.counts = np.zeros(bins)
        self.cut = 0.0
        self.suggested: float | None = None  # a cut from the score distribution (dashed)
        self.setMinimumHeight(70)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)

    def set_values(self, values, cut: float = 0.0, suggested: float | None = None) -> None:
        values = np.asarray(values, float)
        self.counts = np.histogram(values, bins=self.bins, range=(0, 1))[0] if values.size \
            else np.zeros(self.bins)
        self.cut = float(cut)
        self.suggested = suggested
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        if not self.counts.any():
            painter.setPen(QColor(170, 170, 170))
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "scores appear here")
            return
        w, h = self.width(), self.height() - 4
        bar = w / self.bins
        top = self.counts.max()
        for i, count in enumerate(self.counts):
            kept = (i + 0.5) / self.bins >= self.cut
            painter.fillRect(int(i * bar) + 1, int(h - h * count / top) + 2, max(int(bar) - 2, 1),
                             int(h * count / top), QColor(235, 87, 87) if kept else QColor(90, 90, 90))
        if self.suggested is not None:
            pen = painter.pen()
            pen.setColor(QColor(200, 200, 200))
            pen.setStyle(Qt.PenStyle.DashLine)
            painter.setPen(pen)
            painter.drawLine(int(self.suggested * w), 0, int(self.suggested * w), self.height())
        painter.setPen(QColor(242, 201, 76))
        painter.drawLine(int(self.cut * w), 0, int(self.cut * w), self.height())
