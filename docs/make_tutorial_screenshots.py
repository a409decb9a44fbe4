"""Screenshots of the real TomoSeg widgets for docs/tutorial.md (run under Xvfb).

    xvfb-run -a -s "-screen 0 1600x1000x24" python docs/make_tutorial_screenshots.py

Opens the shipped synthetic cell, starts a session, places boxes and
paints masks (from the ground truth, standing in for the user's brush),
trains the ribosome and membrane networks, segments, merges, and saves a
screenshot of the whole window after each stage into docs/images/.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import napari
import numpy as np
from qtpy.QtWidgets import QApplication

from napari_tomoseg._napari.workflow_widget import TomosegWidget
from napari_tomoseg.annotations import boxes_from_truth

IMAGES = Path(__file__).resolve().parent / "images"
PLUGIN = "napari-tomoseg"


def wait_for(widget, worker) -> None:
    """Let Qt run until the worker and its finishing callbacks are done."""
    import time

    app = QApplication.instance()
    while worker.is_running or widget.stop_button.enabled:
        app.processEvents()
        time.sleep(0.01)


def shot(viewer, name: str) -> None:
    QApplication.instance().processEvents()
    image = viewer.screenshot(canvas_only=False, flash=False)
    from skimage.io import imsave

    imsave(IMAGES / name, image, check_contrast=False)
    print("saved", IMAGES / name)


def main() -> None:
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.open_sample(PLUGIN, "synthetic_cell")
    image = viewer.layers["synthetic_cell"]
    truths = {f: np.asarray(viewer.layers[f"truth: {f}"].data) for f in ("membrane", "ribosome")}
    for layer in list(viewer.layers):
        if layer.name.startswith("truth"):
            viewer.layers.remove(layer)
    widget = TomosegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="TomoSeg", area="right")
    widget.tomogram.value = image
    z = image.data.shape[0] // 2
    viewer.dims.set_point(0, image.translate[0] + z * image.scale[0])
    with tempfile.TemporaryDirectory() as folder:
        widget.start_session(Path(folder) / "session")
        c = widget.controller
        for feature, n_pos in (("ribosome", 10), ("membrane", 10)):
            c.set_active(feature)
            boxes = boxes_from_truth(truths[feature], feature, n_pos, 50, 64, seed=3)
            # put two positives on the slice in view so the screenshot shows them
            boxes = sorted(boxes, key=lambda b: (abs(b.z - z) > 2, b.z))
            for box in boxes:
                placed = widget.place_box(box.positive, box.z, box.y, box.x)
                if box.positive:
                    c.paint_box_mask(placed, box.mask)
            c.collect_masks()
        shot(viewer, "tutorial_1_boxes.png")
        for feature in ("ribosome", "membrane"):
            c.set_active(feature)
            widget._refresh()
            widget.steps.value = 300
            wait_for(widget, widget.start_training())
        shot(viewer, "tutorial_2_training.png")
        wait_for(widget, widget.start_segmentation())
        widget.merge()
        for feature in ("ribosome", "membrane"):
            viewer.layers[f"prediction: {feature}"].visible = False
        viewer.layers["tomoseg masks"].visible = False
        viewer.layers["tomoseg boxes"].visible = False
        shot(viewer, "tutorial_3_merged.png")
    viewer.close()


if __name__ == "__main__":
    main()
