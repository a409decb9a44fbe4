"""The napari face on a laptop: window size, first preview, adding a box, stalls; a table.

    xvfb-run -a -s "-screen 0 1366x768x24" python benchmarks/bench_gui.py [--steps 150]
        [--out benchmarks/results/gui.txt]

On the shipped synthetic cell, driven through the real TomoSeg dock:
- the main window's minimum height with every plugin widget docked (and
  every tab of the dock made), against the 768 px of a laptop screen;
- the time from clicking Train to the first preview with non-zero pixels;
- the time to add a box (median over 40, with 10 to 50 boxes placed);
- the longest event-loop stall while training and while segmenting: a
  QTimer ticks every 10 ms on the GUI thread and records the longest gap.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

sys.path.insert(0, str(Path(__file__).parent))
from realistic import provenance  # noqa: E402

from napari_tomoseg.annotations import boxes_from_truth  # noqa: E402

PLUGIN = "napari-tomoseg"
WIDGETS = ["TomoSeg", "Pick particles", "Average particles", "Explore", "Box gallery",
           "Synthetic cell"]


class StallMeter:
    """The longest gap between ticks of a 10-ms timer on the GUI thread."""

    def __init__(self):
        self.gaps: list[float] = []
        self.last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self.tick)

    def tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append(now - self.last)
        self.last = now

    def start(self) -> None:
        self.gaps.clear()
        self.last = time.perf_counter()
        self.timer.start()

    def stop(self) -> tuple[float, float]:
        """(longest gap, longest gap after the first second) in ms: the first draw of a new
        layer compiles its shaders, a one-off that software OpenGL (Xvfb) makes slow."""
        self.timer.stop()
        gaps = np.asarray(self.gaps[1:])
        later = gaps[np.cumsum(gaps) > 1.0]
        return 1000 * float(gaps.max(initial=0)), 1000 * float(later.max(initial=0))


def wait(handle) -> None:
    app = QApplication.instance()
    while handle.is_running:
        app.processEvents()
        time.sleep(0.002)
    for _ in range(20):  # the finishing callbacks
        app.processEvents()


def settle(seconds: float) -> None:
    app, end = QApplication.instance(), time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.005)


def window_height(viewer) -> tuple[int, object]:
    docks = [viewer.window.add_plugin_dock_widget(PLUGIN, name)[1] for name in WIDGETS]
    for title in ("Pick", "Average", "Explore", "Gallery"):
        docks[0].tabs.open(title)
    QApplication.processEvents()
    return viewer.window._qt_window.minimumSizeHint().height(), docks[0]


def box_times(dock, truth: np.ndarray) -> list[float]:
    c = dock.controller
    c.set_active("ribosome")
    dock.boxes.paint_after.value = False  # placing only: the brush switch is timed apart
    times = []
    for box in boxes_from_truth(truth, "ribosome", 10, 40, 64, seed=0):
        start = time.perf_counter()
        placed = dock.place_box(box.positive, box.z, box.y, box.x)
        times.append(time.perf_counter() - start)
        if box.positive:
            c.paint_box_mask(placed, box.mask)
    c.collect_masks()
    return times


def first_preview_s(dock, meter: StallMeter, steps: int) -> tuple[float, tuple]:
    dock.training.steps.value = steps
    overlay = dock.controller.overlay("ribosome")
    seen = {}
    clicked = time.perf_counter()
    overlay.events.set_data.connect(lambda e: seen.setdefault("t", time.perf_counter() - clicked)
                                    if np.any(np.asarray(overlay.data[dock.controller.current_z()]))
                                    else None)
    meter.start()
    wait(dock.start_training())
    return seen.get("t", float("nan")), meter.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    viewer = napari.Viewer(show=True)
    viewer.open_sample(PLUGIN, "synthetic_cell")
    image = viewer.layers["synthetic_cell"]
    truth = np.asarray(viewer.layers["truth: ribosome"].data)
    height, dock = window_height(viewer)
    settle(3.0)  # the dock's background warm-up (torch's lazy imports), while the user reads
    dock.tomogram.value = image
    meter = StallMeter()
    with tempfile.TemporaryDirectory() as folder:
        dock.start_session(Path(folder) / "s")
        viewer.dims.set_point(0, image.translate[0] + image.data.shape[0] // 2 * image.scale[0])
        times = box_times(dock, truth)
        preview_s, train_stall = first_preview_s(dock, meter, args.steps)
        meter.start()
        start = time.perf_counter()
        wait(dock.start_segmentation(["ribosome"]))
        segment_s, segment_stall = time.perf_counter() - start, meter.stop()
    viewer.close()
    shape = image.data.shape
    lines = [f"# {provenance()}",
             f"TomoSeg dock on the synthetic cell {shape[2]}x{shape[1]}x{shape[0]}, unet, "
             f"at most {args.steps} steps",
             "| measure | value | goal |", "|---|---|---|",
             f"| main window minimum height, all 6 widgets and every tab open (px) | {height} | "
             "<= 768 |",
             f"| Train -> first non-empty preview (s) | {preview_s:.2f} | |",
             f"| add a box, median of {len(times)} with 10-50 placed (ms) | "
             f"{1000 * float(np.median(times)):.1f} | < 50 |",
             f"| add a box, slowest (ms) | {1000 * max(times):.1f} | |",
             f"| longest event-loop stall while training (ms) | {train_stall[0]:.0f} | < 100 |",
             f"| same, after the first second (ms) | {train_stall[1]:.0f} | < 100 |",
             f"| longest event-loop stall while segmenting (ms) | {segment_stall[0]:.0f} | < 100 |",
             f"| same, after the first second (ms) | {segment_stall[1]:.0f} | < 100 |",
             f"| segment the whole tomogram in the dock (s) | {segment_s:.1f} | |"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
