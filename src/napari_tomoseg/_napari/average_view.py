"""Averages in a viewer of their own: 3D, as iso-surfaces, centred and zoomed.

A 32-voxel average drawn in the tomogram's viewer sits at the world origin,
a dot in a corner of a 500-nm tomogram; in its own viewer it fills the view.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image

from ..layer_data import UNITS
from .layer_tags import find, layers_with, tag, tag_of


class AverageView:
    def __init__(self, show: bool = True):
        self.show = show
        self.viewer = None

    def _ensure(self):
        if self.viewer is None:
            import napari

            self.viewer = napari.Viewer(title="TomoSeg averages", ndisplay=3, show=self.show)
            self.viewer.window._qt_window.destroyed.connect(self._forget)
        return self.viewer

    def _forget(self, *args) -> None:
        self.viewer = None

    def show_volume(self, volume: np.ndarray, role: str, voxel: float,
                    index: int | None = None) -> Image:
        """Replace the data of the layer tagged ``role`` (and index), or add it and centre."""
        viewer = self._ensure()
        layer = find(viewer, role, **({"index": index} if index is not None else {}))
        if layer is not None:
            layer.data = volume
            layer.iso_threshold = float(np.percentile(volume, 95))
            return layer
        name = role if index is None else f"{role} {index}"
        layer = viewer.add_image(volume, name=name, scale=(voxel,) * 3, units=UNITS,
                                 rendering="iso",
                                 iso_threshold=float(np.percentile(volume, 95)),
                                 colormap="gold", blending="additive")
        tag(layer, role, index=index)
        viewer.reset_view()  # centred on the average, zoomed to fill the view
        return layer

    def keep_classes(self, count: int) -> None:
        """Remove class layers numbered above ``count`` (an earlier run with more classes)."""
        if self.viewer is None:
            return
        for layer in list(layers_with(self.viewer, "class")):
            if (tag_of(layer).get("index") or 0) > count:
                self.viewer.layers.remove(layer)

    def close(self) -> None:
        if self.viewer is not None:
            viewer, self.viewer = self.viewer, None
            viewer.close()
