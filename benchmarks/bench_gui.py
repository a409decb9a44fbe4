"""Responsiveness of napari while TomoSeg trains and segments; prints a table.

    xvfb-run -a python benchmarks/bench_gui.py [--steps 200]

A QTimer ticking every 10 ms on the GUI thread records the longest gap
between ticks (an event-loop stall) during training and during
segmentation of the shipped synthetic cell; training speed inside the
thread worker is compared with the same training run directly.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import napari
import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from napari_tomoseg._napari.workflow_widget import TomosegWidget
from napari_tomoseg.annotations import boxes_from_truth
from napari_tomoseg.nn.training import TrainingSettings, train


class StallMeter:
    def __init__(self):
        self.last = time.perf_counter()
        self.gaps: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(10)
        self.timer.timeout.connect(self.tick)

    def tick(self):
        now = time.perf_counter()
        self.gaps.append(now - self.last)
        self.last = now

    def start(self):
        self.gaps.clear()
        self.last = time.perf_counter()
        self.timer.start()

    def stop(self) -> tuple[float, float]:
        self.timer.stop()
        gaps = np.asarray(self.gaps[1:]) * 1000
        return float(gaps.max()), float(np.percentile(gaps, 99))


def run_until_done(widget, worker) -> None:
    app = QApplication.instance()
    while worker.is_running or widget.stop_button.enabled:
        app.processEvents()
        time.sleep(0.002)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-tomoseg", "synthetic_cell")
    image = viewer.layers["synthetic_cell"]
    truth = np.asarray(viewer.layers["truth: ribosome"].data)
    widget = TomosegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.tomogram.value = image
    meter = StallMeter()
    with tempfile.TemporaryDirectory() as folder:
        widget.start_session(Path(folder) / "s")
        c = widget.controller
        c.set_active("ribosome")
        boxes = boxes_from_truth(truth, "ribosome", 10, 50, 64, seed=0)
        for box in boxes:
            placed = widget.place_box(box.positive, box.z, box.y, box.x)
            if box.positive:
                c.paint_box_mask(placed, box.mask)
        c.collect_masks()
        settings = TrainingSettings(steps=args.steps)

        start = time.perf_counter()
        train(image.data, c.session.boxes, float(image.scale[-1]), settings, feature="ribosome")
        direct = args.steps / (time.perf_counter() - start)

        widget.steps.value = args.steps
        first_overlay = {}
        meter.start()
        clicked = time.perf_counter()
        worker = widget.start_training()
        worker.yielded.connect(lambda u: first_overlay.setdefault(
            "t", time.perf_counter() - clicked) if u.preview is not None else None)
        run_until_done(widget, worker)
        in_worker = args.steps / (time.perf_counter() - clicked)
        train_stall = meter.stop()

        meter.start()
        start = time.perf_counter()
        run_until_done(widget, widget.start_segmentation())
        segment_s = time.perf_counter() - start
        segment_stall = meter.stop()
    viewer.close()
    shape = image.data.shape
    print(f"\nTomoSeg in napari, synthetic cell {shape[2]}x{shape[1]}x{shape[0]}, unet, "
          f"{args.steps} steps, 10 ms probe timer on the GUI thread")
    print("| measure | value |")
    print("|---|---|")
    print(f"| longest event-loop stall while training (ms) | {train_stall[0]:.0f} |")
    print(f"| 99th percentile tick gap while training (ms) | {train_stall[1]:.0f} |")
    print(f"| longest event-loop stall while segmenting (ms) | {segment_stall[0]:.0f} |")
    print(f"| 99th percentile tick gap while segmenting (ms) | {segment_stall[1]:.0f} |")
    print(f"| training steps/s outside napari | {direct:.2f} |")
    print(f"| training steps/s in the thread worker (click to saved model) | {in_worker:.2f} |")
    print(f"| worker overhead | {100 * (1 - in_worker / direct):.1f}% |")
    print(f"| click Train -> first overlay (s) | {first_overlay.get('t', float('nan')):.2f} |")
    print(f"| segment whole tomogram in the widget (s) | {segment_s:.1f} |")


if __name__ == "__main__":
    main()
