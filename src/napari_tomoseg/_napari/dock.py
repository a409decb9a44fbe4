"""Docking that fits a laptop screen: every widget scrolls instead of growing the window.

napari sizes its main window to the sum of the docked widgets' minimum
heights; a tall widget (or several) pushes it past a 768-px screen. Each
plugin widget is therefore docked inside a scroll area, and the TomoSeg
dock holds every step as a tab, made when first opened.
"""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QScrollArea, QTabWidget, QWidget


def scrolled(widget, area: QScrollArea | None = None) -> QScrollArea:
    """``widget`` (magicgui or Qt) in a (new or given) scroll area that keeps it alive."""
    area = area if area is not None else QScrollArea()
    area.setWidgetResizable(True)
    area.setWidget(getattr(widget, "native", widget))
    area.setMinimumHeight(48)
    area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)  # labels wrap
    area.tomoseg_widget = widget  # the Python object (and its callbacks) lives with the area
    return area


class LazyTabs(QTabWidget):
    """Tabs whose pages are made the first time they are shown (no keys bound, no layer
    lists kept up to date, for steps the user has not reached)."""

    def __init__(self):
        super().__init__()
        self.makers: dict[int, Callable[[], object]] = {}
        self.widgets: dict[str, object] = {}
        self.currentChanged.connect(self._make)

    def add(self, title: str, make: Callable[[], object]) -> None:
        index = self.addTab(QWidget(), _escaped(title))
        self.makers[index] = lambda: self._place(index, title, make())

    def add_now(self, title: str, widget) -> None:
        self.addTab(scrolled(widget), _escaped(title))
        self.widgets[title] = widget

    def _place(self, index: int, title: str, widget) -> object:
        self.blockSignals(True)  # replacing the page must not re-enter _make
        current = self.currentIndex()
        self.removeTab(index)
        self.insertTab(index, scrolled(widget), _escaped(title))
        self.setCurrentIndex(current)
        self.blockSignals(False)
        self.widgets[title] = widget
        return widget

    def _make(self, index: int) -> None:
        make = self.makers.pop(index, None)
        if make is not None:
            make()

    def open(self, title: str):
        """Show the tab ``title`` (made now if needed) and return its widget."""
        for index in range(self.count()):
            if self.tabText(index) == _escaped(title):
                self.setCurrentIndex(index)
                self._make(index)
                return self.widgets[title]
        raise KeyError(title)


def _escaped(title: str) -> str:
    """Qt shows '&&' as '&' (a single '&' marks a shortcut)."""
    return title.replace("&", "&&")


class _ScrolledDock(QScrollArea):
    """A plugin widget in a scroll area, for the Plugins menu (napari calls the class with
    ``napari_viewer``; a function would not be given the viewer)."""

    module = ""
    name = ""

    def __init__(self, napari_viewer):
        super().__init__()
        from importlib import import_module

        scrolled(getattr(import_module(f"{__package__}.{self.module}"), self.name)(napari_viewer),
                 self)


class PickingDock(_ScrolledDock):
    module, name = "picking_widget", "PickingWidget"


class FilamentsDock(_ScrolledDock):
    module, name = "filaments_widget", "FilamentsWidget"


class AveragingDock(_ScrolledDock):
    module, name = "averaging_widget", "AveragingWidget"


class ExploreDock(_ScrolledDock):
    module, name = "explore_widget", "ExploreWidget"


class GalleryDock(_ScrolledDock):
    module, name = "gallery_widget", "GalleryWidget"


class SyntheticDock(_ScrolledDock):
    module, name = "synthetic_widget", "SyntheticCellWidget"
