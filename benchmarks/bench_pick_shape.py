"""Picks against the shape test: F1 of ribosome picks for several ``min_roundness`` cuts.

    python benchmarks/bench_realistic.py --features ribosome --methods unet forest \
        --seeds 3 --save MAPS
    python benchmarks/bench_pick_shape.py MAPS [MAPS2 ...] [--cuts 0 0.1 0.15 0.2] [--out FILE]

Re-picks the probability maps that ``bench_realistic.py --save`` kept (with each
model's stored threshold, saved beside them), so the picker's settings can be
compared on the same trained models without training again. Rows: method, boxes and
cell (0 trained on, 1 reuse); mean F1 over seeds (range), precision and recall. Below
the table, where true ribosomes' roundness lies (the cut must stay under it).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import realistic as rs  # noqa: E402

from napari_tomoseg.picking import PickSettings, pick_particles  # noqa: E402

NAME = re.compile(r"ribosome_(\d+)_(\w+?)_(\d+)_(\d)\.npy$")


def maps_in(folders: list[Path]) -> list[tuple[str, int, int, int, Path, float]]:
    """(method, positives, seed, cell, map, stored threshold) of every saved ribosome map."""
    found = []
    for folder in folders:
        for path in sorted(folder.glob("ribosome_*.npy")):
            match = NAME.search(path.name)
            if not match:
                continue
            n, method, seed, cell = match.groups()
            threshold = path.with_name(f"ribosome_{n}_{method}_{seed}.threshold")
            if not threshold.exists():
                print(f"skipped {path.name}: no stored threshold beside it")
                continue
            found.append((method, int(n), int(seed), int(cell), path,
                          float(threshold.read_text())))
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--cuts", nargs="+", type=float, default=[0.0, 0.1, 0.15, 0.2])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cells = [rs.load_cell(seed, short=False) for seed in (0, 1)]
    radius = rs.RIBOSOME_DIAMETER_A / 2 / 10.0
    scores: dict[tuple, list[dict]] = {}
    true_round: dict[int, list[float]] = {0: [], 1: []}
    for method, n, seed, cell, path, threshold in maps_in(args.folders):
        prob = np.load(path).astype(np.float32)
        every = pick_particles(prob, 10.0, PickSettings(diameter=rs.RIBOSOME_DIAMETER_A,
                                                        threshold=threshold, min_roundness=0.0))
        zyx = every[["z", "y", "x"]].to_numpy()
        truth = cells[cell]["particles"]
        if method == "unet" and len(zyx):
            near = np.min(np.linalg.norm(zyx[:, None] - truth[None], axis=2), axis=1) <= radius
            true_round[cell] += list(every["roundness"].to_numpy()[near])
        for cut in args.cuts:  # picked again: the cut acts before non-maximum suppression
            kept = pick_particles(prob, 10.0, PickSettings(
                diameter=rs.RIBOSOME_DIAMETER_A, threshold=threshold, min_roundness=cut,
                relative_roundness=0.0))  # the absolute cut alone, as results/pick_shape.txt
            scores.setdefault((method, n, cell, cut), []).append(
                rs.pick_scores(kept[["z", "y", "x"]].to_numpy(), cells[cell]))
    lines = [f"# {rs.provenance()}", f"# maps: {', '.join(str(f) for f in args.folders)}",
             "| method | boxes +/- | cell | min roundness | F1 (range) | precision | recall "
             "| seeds |", "|---|---|---|---|---|---|---|---|"]
    for (method, n, cell, cut), runs in sorted(scores.items()):
        f1 = [r["f1"] for r in runs]
        lines.append(f"| {method} | {n}/50 | {cell} | {cut:g} | {np.mean(f1):.3f} "
                     f"({min(f1):.2f}-{max(f1):.2f}) | {np.mean([r['precision'] for r in runs]):.2f} "
                     f"| {np.mean([r['recall'] for r in runs]):.2f} | {len(runs)} |")
    for cell, values in true_round.items():
        if values:
            q = np.quantile(values, [0, 0.01, 0.05, 0.5])
            lines.append(f"# true ribosomes' roundness, cell {cell} ({len(values)} picks): min "
                         f"{q[0]:.2f}, 1% {q[1]:.2f}, 5% {q[2]:.2f}, median {q[3]:.2f}")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
