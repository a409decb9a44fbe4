"""Do 3D classes of the picks set the distractors apart? (realistic cells, saved maps)

    python benchmarks/bench_realistic.py --features ribosome --boxes 5 --methods unet \\
        --seeds 3 --first-seed 6 --save MAPS
    python benchmarks/bench_pick_classes.py MAPS --seeds 7 8 [--short]

A structural biologist cleans picks by 3D classification: are the false
picks on ribosome-mass distractors one class? Each map is picked with the
defaults, the picks are averaged (3 iterations) and classified into two
classes (``classify``, 6 iterations, 3 starts), and each class's true and
false picks are counted (true: within half a diameter of a ribosome).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import realistic as rs  # noqa: E402

from napari_tomoseg.averaging.classify import ClassifySettings, classify  # noqa: E402
from napari_tomoseg.averaging.extract import extract_subtomograms  # noqa: E402
from napari_tomoseg.averaging.refine import AverageSettings, average  # noqa: E402
from napari_tomoseg.picking import PickSettings, pick_particles  # noqa: E402


def class_counts(prob: np.ndarray, cell: dict, threshold: float, short: bool) -> list[str]:
    """One row per class: picks, true, false."""
    table = pick_particles(prob, 10.0, PickSettings(diameter=rs.RIBOSOME_DIAMETER_A,
                                                     threshold=threshold))
    zyx = table[["z", "y", "x"]].to_numpy()[:12 if short else None]
    true = np.linalg.norm(zyx[:, None] - cell["particles"][None], axis=-1).min(axis=1) \
        <= rs.RIBOSOME_DIAMETER_A / 20
    sub = extract_subtomograms(cell["tomogram"], zyx, 32, edge="pad")
    consensus = average(sub.data, 10.0, AverageSettings(box=32, iterations=1 if short else 3))
    result = classify(sub.data, 10.0, consensus.alignment, AverageSettings(box=32),
                      ClassifySettings(classes=2, iterations=2 if short else 6,
                                       n_init=1 if short else 3))
    kept = true[sub.indices]
    return [f"{k}: {np.sum(result.classes == k)} picks, {np.sum(kept[result.classes == k])} true, "
            f"{np.sum(~kept[result.classes == k])} false" for k in (1, 2)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("maps", type=Path, help="--save folder of bench_realistic.py")
    parser.add_argument("--seeds", nargs="+", type=int, default=[7, 8])
    parser.add_argument("--short", action="store_true")
    args = parser.parse_args()
    cells = [rs.load_cell(seed, False) for seed in (0, 1)]
    print(f"# {rs.provenance()}\n| training seed | cell | class 1 | class 2 | s |\n|---|---|---|---|---|")
    for seed in args.seeds:
        threshold = float((args.maps / f"ribosome_5_unet_{seed}.threshold").read_text())
        for i, cell in enumerate(cells):
            start = time.perf_counter()
            prob = np.load(args.maps / f"ribosome_5_unet_{seed}_{i}.npy").astype(np.float32)
            rows = class_counts(prob, cell, threshold, args.short)
            print(f"| {seed} | {i} | {' | '.join(rows)} | {time.perf_counter() - start:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
