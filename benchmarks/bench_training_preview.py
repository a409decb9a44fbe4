"""What the live preview costs a training on a tomogram of a real size; a table.

    python benchmarks/bench_training_preview.py [--size 928] [--steps 40] [--shares 0.2]
        [--feature membrane] [--out benchmarks/results/training_preview.txt]

The realistic cell 0 (realistic.py) tiled in y and x to ``--size`` pixels, its first 64
slices, with the benchmark's 5 / 50 user-like boxes: the widget previews the whole slice in
view, and a slice of a real tomogram is 4-16x the benchmark cell's. Each row trains
``--steps`` steps (no early stop) with the default network for ``--feature`` and a
preview every 2 s: first by the rule before session 13 (2 s from the start of the last
preview, so a preview that takes longer follows every step), then with the previews limited
to each share of the training's time (``training_preview.PREVIEW_SHARE``). The last
preview, of the weights kept, averages the network's rotations and is in every row. Run
alone: another torch job on 2 cores slows both.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import realistic as rs  # noqa: E402

from napari_tomoseg.nn import training, training_preview  # noqa: E402
from napari_tomoseg.nn.training import TrainingSettings, iter_train  # noqa: E402


class TimedPreviewer(training_preview.Previewer):
    """The previewer, timed; ``old``: the rule before previews had a share (start to start)."""

    old = False
    seconds = 0.0

    def __call__(self, network, elapsed, force, final=False):
        started = time.perf_counter()
        image, z = super().__call__(network, elapsed, force, final)
        if image is not None and self.old:
            self.next_at = elapsed + self.every
        TimedPreviewer.seconds += time.perf_counter() - started
        return image, z


training.Previewer = TimedPreviewer


def tiled_cell(size: int, slices: int = 64) -> tuple[np.ndarray, list]:
    cell = rs.load_cell(0, False)
    tomogram = cell["tomogram"]
    middle = tomogram.shape[0] // 2
    part = tomogram[middle - slices // 2: middle + slices // 2]
    reps = -(-size // part.shape[1])
    volume = np.ascontiguousarray(np.tile(part, (1, reps, reps))[:, :size, :size])
    return volume, cell


def run(volume: np.ndarray, boxes: list, steps: int, share: float | None) -> dict:
    """One training; ``share`` None: the rule before session 13."""
    TimedPreviewer.old, TimedPreviewer.seconds = share is None, 0.0
    training_preview.PREVIEW_SHARE = share or 1.0
    settings = TrainingSettings(steps=steps, min_steps=steps + 1, seed=6)
    start = time.perf_counter()
    previews, first = 0, None
    for update in iter_train(volume, boxes, 10.0, settings, preview_z=volume.shape[0] // 2):
        if update.preview is not None:
            previews += 1
            first = first if first is not None else time.perf_counter() - start
    return {"seconds": time.perf_counter() - start, "previews": previews, "first": first,
            "previewing": TimedPreviewer.seconds}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=928)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.2])
    parser.add_argument("--feature", default="membrane")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    volume, cell = tiled_cell(args.size)
    first = cell["tomogram"].shape[0] // 2 - volume.shape[0] // 2  # the slab's first slice
    boxes = [replace(b, z=b.z - first) for b in rs.user_boxes(cell, args.feature, 5, 50, seed=1)
             if 8 <= b.z - first < volume.shape[0] - 8]  # the boxes on the slab's slices
    lines = [f"# {rs.provenance()}",
             f"# {args.feature}, default network and binning, {len(boxes)} boxes, "
             f"{volume.shape[0]} x {args.size} x {args.size} voxels at 10 A, {args.steps} "
             "steps, preview every 2 s of the whole middle slice",
             "| previews | training s | s per step | previews | s previewing | first preview s |",
             "|---|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for share in [None, *args.shares]:
        r = run(volume, boxes, args.steps, share)
        rule = "every 2 s, start to start (before)" if share is None else f"at most {share:g} of the time"
        lines.append(f"| {rule} | {r['seconds']:.0f} | {r['seconds'] / args.steps:.2f} | "
                     f"{r['previews']} | {r['previewing']:.0f} | {r['first']:.1f} |")
        print(lines[-1], flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with args.out.open("a") as handle:
            handle.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
