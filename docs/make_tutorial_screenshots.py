"""Screenshots of the real TomoSeg dock for README.md and docs/tutorial.md (run under Xvfb).

    xvfb-run -a -s "-screen 0 1366x768x24" .venv/bin/python docs/make_tutorial_screenshots.py

Opens napari as ``tomoseg launch`` does (the shipped synthetic cell, its truth
hidden, the TomoSeg dock on its first tab) in a 1366x768 window, then walks
the README's "First minutes in napari", one screenshot of the whole window
per step, into docs/images/:

1. ``tutorial_1_launch.png``  the first view;
2. ``tutorial_2_box.png``     a session started, boxes placed, the brush on the masks;
3. ``tutorial_3_training.png`` training, with the live preview and the loss curve;
4. ``tutorial_4_segment.png`` the Segment tab after segmenting and merging;
5. ``tutorial_5_pick.png``    the Pick tab with picks, some accepted or rejected;
6. ``tutorial_6_average.png`` the Average tab with the FSC plot.

Where the user would use the mouse (placing boxes, painting masks) the script
takes boxes and masks from the sample's hidden truth layers
(``annotations.boxes_from_truth``). Training is capped at 150 steps and the
average is at most 24 particles, 2 iterations, so the whole run takes a few minutes on
two CPU cores (``OMP_NUM_THREADS=2``). The session lives in a temporary folder.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from qtpy.QtCore import QPoint
from qtpy.QtWidgets import QApplication

from napari_tomoseg._napari.launch import launch
from napari_tomoseg.annotations import boxes_from_truth

IMAGES = Path(__file__).resolve().parent / "images"
WIDTH, HEIGHT = 1366, 768
TRAIN_STEPS = 150


def pump(seconds: float = 0.3) -> None:
    """Let Qt draw (and deliver worker signals) for ``seconds``."""
    app = QApplication.instance()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def wait_for(handle, until=None, timeout: float = 900.0) -> None:
    """Run the event loop until the job ends (or ``until()`` holds)."""
    app = QApplication.instance()
    end = time.perf_counter() + timeout
    while handle.is_running and not (until is not None and until()):
        if time.perf_counter() > end:
            raise TimeoutError("job did not finish in time")
        app.processEvents()
        time.sleep(0.01)
    pump(0.5)  # the job's finishing callbacks and a redraw


def shot(window, name: str) -> None:
    """The whole main window as a PNG."""
    pump(0.5)
    path = IMAGES / name
    window.grab().save(str(path), "PNG")
    small(path)
    print("saved", path, flush=True)


def small(path: Path) -> None:
    """128 colours, no dithering: half the bytes, and a screenshot still reads the same."""
    from PIL import Image

    picture = Image.open(path).convert("RGB")
    picture.quantize(colors=128, method=Image.Quantize.MEDIANCUT,
                     dither=Image.Dither.NONE).save(path, optimize=True)


def show_section(dock, tab: int, panel) -> None:
    """Open tab ``tab`` of the dock and scroll it to ``panel``."""
    dock.tabs.setCurrentIndex(tab)
    area = dock.tabs.widget(tab)
    pump(0.2)
    top = panel.native.mapTo(area.widget(), QPoint(0, 0)).y()
    area.verticalScrollBar().setValue(max(top - 40, 0))  # the section's title in view
    area.horizontalScrollBar().setValue(0)


def widen_dock(window, dock, width: int) -> None:
    """Drag the dock's splitter to ``width`` px, as a user would on a laptop screen."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QDockWidget

    parent = dock.native
    while parent is not None and not isinstance(parent, QDockWidget):
        parent = parent.parent()
    if parent is not None:
        window.resizeDocks([parent], [width], Qt.Orientation.Horizontal)


def camera(viewer):
    """napari >= 0.9 keeps the camera on the scene (viewer.camera is deprecated there)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def go_to(viewer, layer, z: int, y: float | None = None, x: float | None = None,
          zoom: float | None = None) -> None:
    """Show slice ``z`` of ``layer``, centred on (y, x) if given."""
    viewer.dims.set_point(0, layer.translate[0] + z * layer.scale[0])
    if y is not None:
        camera(viewer).center = (layer.translate[1] + y * layer.scale[1],
                                layer.translate[2] + x * layer.scale[2])
    if zoom is not None:
        camera(viewer).zoom = zoom


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    viewer = launch(sample="synthetic", run=False, show=True)
    window = viewer.window._qt_window
    window.resize(WIDTH, HEIGHT)
    window.move(0, 0)
    pump(1.0)
    dock = next(w for name, w in viewer.window.dock_widgets.items() if name.startswith("TomoSeg"))
    print("dock content needs", dock.tabs.widget(0).widget().minimumSizeHint().width(),
          "px; shown", dock.tabs.widget(0).viewport().width(), "px", flush=True)
    widen_dock(window, dock, 470)
    image = dock.tomogram.value
    truths = {f: np.asarray(viewer.layers[f"truth: {f}"].data) for f in ("ribosome", "membrane")}
    shape = image.data.shape
    z = shape[0] // 2
    go_to(viewer, image, z)
    # 1. the first view: the tomogram, the truth hidden, the dock on "Annotate"
    shot(window, "tutorial_1_launch.png")

    with tempfile.TemporaryDirectory() as tmp:
        # 2. Start / restore session, then boxes: negatives (Shift-B), positives (b) painted
        dock.session_panel.folder.value = Path(tmp) / "synthetic_cell.tomoseg"
        dock.start_session()
        c = dock.controller
        c.set_active("ribosome")
        dock.features.refresh()
        boxes = boxes_from_truth(truths["ribosome"], "ribosome", 10, 40, 64, seed=3)
        # the last positive placed is on the slice in view: its brush stays selected
        positives = sorted((b for b in boxes if b.positive), key=lambda b: -abs(b.z - z))
        negatives = [b for b in boxes if not b.positive]
        for box in negatives + positives[:-1]:
            placed = dock.place_box(box.positive, box.z, box.y, box.x)
            if box.positive:
                c.paint_box_mask(placed, box.mask)
        last = positives[-1]
        placed = dock.place_box(True, last.z, last.y, last.x)  # selects the brush
        c.paint_box_mask(placed, np.where(np.arange(last.mask.shape[1]) < last.mask.shape[1] // 2,
                                          last.mask, 0))  # half painted, as while painting
        c.collect_masks()
        go_to(viewer, image, last.z, last.y, last.x, zoom=camera(viewer).zoom * 2.5)
        show_section(dock, 0, dock.boxes)
        shot(window, "tutorial_2_box.png")
        c.paint_box_mask(placed, last.mask)
        c.collect_masks()

        # 3. Train, screenshot mid-way through the second of the ribosome's three networks:
        # live preview, the first network's loss curve and the second's, steps/s
        dock.training.steps.value = TRAIN_STEPS
        viewer.layers.selection.active = image
        handle = dock.start_training()
        wait_for(handle, until=lambda: len(dock.loss_plot.curves()) >= 2
                 and len(dock.loss_plot.curves()[-1]) >= TRAIN_STEPS // 2)
        show_section(dock, 0, dock.training)
        shot(window, "tutorial_3_training.png")
        wait_for(handle)

        # membrane too, for the merge (no screenshot)
        c.set_active("membrane")
        dock.features.refresh()
        for box in boxes_from_truth(truths["membrane"], "membrane", 8, 24, 64, seed=4):
            placed = dock.place_box(box.positive, box.z, box.y, box.x)
            if box.positive:
                c.paint_box_mask(placed, box.mask)
        c.collect_masks()
        wait_for(dock.start_training())
        c.set_active("ribosome")
        dock.features.refresh()

        # 4. Segment tab: segment every trained feature, merge
        dock.tabs.setCurrentIndex(1)  # Segment
        wait_for(dock.start_segmentation())
        wait_for(dock.merge())
        for layer in (c.masks_layer, c.boxes_layer):
            layer.visible = False
        for layer in viewer.layers:
            if layer.name.startswith("prediction"):
                layer.visible = False
        viewer.layers.selection.active = image
        go_to(viewer, image, z)
        viewer.reset_view()
        shot(window, "tutorial_4_segment.png")
        viewer.layers["segmentation (merged)"].visible = False

        # 5. Pick tab: pick from the ribosome map, step through a few (., a, r)
        pick = dock.tabs.open("Pick")
        pick.source.value = viewer.layers["prediction: ribosome"]
        wait_for(pick.pick())
        pick.step(1)  # the key "." (next)
        for verdict in (1, 1, -1, 1):  # keys a, a, r, a: each one moves on to the next
            pick.judge(verdict)
        camera(viewer).zoom *= 2.0
        shot(window, "tutorial_5_pick.png")

        # 6. Average tab: a few of the best picks, two iterations
        points = pick.points
        scores = np.sort(np.asarray(points.features["score_norm"], float))[::-1]
        pick.min_score.value = float(scores[min(23, len(scores) - 1)])
        average = dock.tabs.open("Average")
        average.particles.value = points
        # a 64-slice tomogram: pad at the edge, or half the picks are skipped; with only ~9
        # particles, or 1 iteration, the average came out blank (constant) in 2026-11
        average.edge.value = "pad"
        average.iterations.value = 2
        average.angular_step.value = 30.0
        average.output.value = Path(tmp) / "averages"
        wait_for(average.run())
        shot(window, "tutorial_6_average.png")
        dock.stop()
        average.average_view.close()
    viewer.close()


if __name__ == "__main__":
    main()
