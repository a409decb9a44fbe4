"""The napari face on a laptop screen: every widget open, nothing grows past 1366x768."""

from __future__ import annotations

import pytest

napari = pytest.importorskip("napari")

PLUGIN = "napari-tomoseg"
WIDGETS = ["TomoSeg", "Pick particles", "Average particles", "Explore", "Box gallery",
           "Synthetic cell"]


def test_every_widget_open_fits_a_laptop_screen(make_napari_viewer, qtbot):
    from qtpy.QtWidgets import QApplication

    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "synthetic_cell")
    window = viewer.window._qt_window
    docks = [viewer.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in WIDGETS]
    tomoseg = docks[0]
    for title in ("Pick", "Average", "Explore", "Gallery"):  # every tab made and shown
        assert tomoseg.tabs.open(title) is not None
    QApplication.processEvents()
    assert window.minimumSizeHint().height() <= 768
    window.resize(1366, 768)
    QApplication.processEvents()
    assert window.height() <= 768 and window.width() <= 1366
    # the standalone widgets are the real ones, inside scroll areas
    assert type(docks[1].tomoseg_widget).__name__ == "PickingWidget"


def test_launch_opens_on_the_first_tab_with_the_truth_hidden(make_napari_viewer, monkeypatch):
    from napari_tomoseg._napari import launch as launch_module
    from napari_tomoseg._napari.layer_tags import has_role

    monkeypatch.setattr(launch_module.napari, "Viewer", lambda **kw: make_napari_viewer())
    viewer = launch_module.launch(sample="synthetic", run=False)
    truth = [layer for layer in viewer.layers if has_role(layer, "truth")]
    assert len(truth) >= 4 and not any(layer.visible for layer in truth)
    widget = next(w for name, w in viewer.window.dock_widgets.items() if name.startswith("TomoSeg"))
    assert widget.tabs.currentIndex() == 0  # Annotate & train
    assert widget.tomogram.value is viewer.layers["synthetic_cell"]
