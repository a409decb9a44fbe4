"""Picking quality and speed on synthetic cells; prints a table.

    python benchmarks/bench_picking.py [--short]

Ribosome picks against the true centres (a match within half the particle
diameter, one-to-one), from the ground-truth label volume (the upper
bound), from the U-Net's segmentation after training on 10 positive /
50 negative boxes and from the classical baseline (random forest on filter
features, same boxes); plus the time to pick a 512x512x128 probability map.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_tomoseg.annotations import boxes_from_truth
from napari_tomoseg.nn.inference import segment
from napari_tomoseg.nn.training import TrainingSettings, train
from napari_tomoseg.picking import PickSettings, match_picks, pick_particles
from napari_tomoseg.synthetic import CellSpec, simulate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--short", action="store_true")
    args = parser.parse_args()
    spec = CellSpec(shape=(64, 256, 256)) if args.short else CellSpec()
    result = simulate(spec, seed=0)
    truth = result.cell.labels["ribosome"]
    centres = result.cell.particles
    radius = 125.0 / spec.voxel_size  # half the 25 nm diameter, in voxels
    rows = []

    def pick_and_score(source: str, prob: np.ndarray) -> None:
        for split in (False, True):
            start = time.perf_counter()
            picks = pick_particles(prob, spec.voxel_size, PickSettings(
                diameter=250.0, edge=0.0, split_touching=split))
            seconds = time.perf_counter() - start
            m = match_picks(picks[["z", "y", "x"]].to_numpy(), centres, radius)
            rows.append((source, "yes" if split else "no", len(picks), m, seconds))

    pick_and_score("ground-truth labels", truth.astype(np.float32))
    boxes = boxes_from_truth(truth, "ribosome", 10, 50, 64, seed=1)
    model = train(result.tomogram, boxes, spec.voxel_size, TrainingSettings(steps=600, members=1))
    pick_and_score("U-Net segmentation (10+/50-)", segment(result.tomogram, model, spec.voxel_size))
    # the classical baseline: a random forest on filter-bank features (benchmarks/baseline_forest.py)
    from baseline_forest import apply_forest, train_forest

    from napari_tomoseg.preprocess import Preprocessor

    pre = Preprocessor(result.tomogram)
    forest = train_forest(pre, boxes)
    pick_and_score("random-forest baseline (10+/50-)", apply_forest(forest, pre))
    z, y, x = spec.shape
    print(f"\nRibosome picking on a synthetic cell {x}x{y}x{z} at {spec.voxel_size} A, "
          f"{len(centres)} true particles, match radius {radius:.1f} px")
    print("| source | split touching | picks | precision | recall | F1 | mean error (px) | s |")
    print("|---|---|---|---|---|---|---|---|")
    for source, split, n, m, seconds in rows:
        print(f"| {source} | {split} | {n} | {m['precision']:.3f} | {m['recall']:.3f} | "
              f"{m['f1']:.3f} | {m['mean_distance']:.2f} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
