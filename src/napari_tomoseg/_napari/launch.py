"""Open napari ready to work: the TomoSeg dock in front on its first tab, a tomogram
loaded (a sample's truth layers hidden)."""

from __future__ import annotations

import napari

PLUGIN = "napari-tomoseg"
SAMPLES = {"synthetic": "synthetic_cell", "mpneumoniae": "mpneumoniae"}


def launch(files: list[str] | None = None, sample: str = "synthetic", run: bool = True,
           show: bool = True) -> napari.Viewer:
    viewer = napari.Viewer(title="napari-tomoseg", show=show)
    if files:
        viewer.open(files, plugin=PLUGIN)
    elif sample in SAMPLES:
        viewer.open_sample(PLUGIN, SAMPLES[sample])
    viewer.window.add_plugin_dock_widget(PLUGIN, "Synthetic cell", tabify=True)
    _, dock = viewer.window.add_plugin_dock_widget(PLUGIN, "TomoSeg", tabify=True)  # in front
    images = dock.tomogram.choices
    if images:  # the tomogram just opened, ready for "Start / restore session"
        dock.tomogram.value = images[0]
    if run:
        napari.run()
    return viewer
