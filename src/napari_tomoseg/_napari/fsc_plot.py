"""A tiny FSC curve (QPainter) with the 0.143 line and the resolution."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QPointF, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget


class FscPlot(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.fsc: np.ndarray | None = None
        self.label = ""
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("FSC between the half maps; resolution where it crosses 0.143")

    def set_curve(self, fsc, label: str = "") -> None:
        self.fsc = None if fsc is None else np.asarray(fsc, float)
        self.label = label
        self.update()

    def paintEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor(38, 41, 48))
        painter.setPen(QColor(170, 170, 170))
        if self.fsc is None or len(self.fsc) < 2:
            painter.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "FSC appears here")
            return
        w, h = self.width() - 8, self.height() - 22

        def point(i: float, value: float) -> QPointF:
            return QPointF(4 + w * i / (len(self.fsc) - 1), 4 + h * (1 - (value + 0.1) / 1.1))

        painter.setPen(QPen(QColor(120, 120, 120), 1, Qt.PenStyle.DashLine))
        painter.drawLine(point(0, 0.143), point(len(self.fsc) - 1, 0.143))
        painter.setPen(QPen(QColor(242, 153, 74), 1.5))
        painter.drawPolyline(QPolygonF([point(i, float(np.clip(v, -0.1, 1.0)))
                                        for i, v in enumerate(self.fsc)]))
        painter.setPen(QColor(170, 170, 170))
        painter.drawText(4, self.height() - 4, self.label)
