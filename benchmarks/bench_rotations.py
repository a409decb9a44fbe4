"""What averaging a network over quarter turns buys, from models bench_realistic.py saved.

    python benchmarks/bench_realistic.py --features membrane --boxes 5 --methods unet \\
        --box-draws --seeds 3 --first-seed 6 --save DIR
    python benchmarks/bench_rotations.py DIR [--feature membrane] [--rotations 1 2 4]
        [--out FILE]

Segmentation averages every U-Net over its ``rotations`` (4 quarter turns by default), at 4x
the work of one prediction. For each saved model (seeds as saved, each with the box draw
bench_realistic gave it) and each number of turns: both cells segmented, the threshold
chosen again on the held-out quadrants with that many turns (as training would store it),
and Dice at it and at the best threshold; seconds of segmenting both cells. Run alone.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
import realistic as rs  # noqa: E402
from bench_realistic import score  # noqa: E402

from napari_tomoseg.nn.ensemble import members_of  # noqa: E402
from napari_tomoseg.nn.inference import segment  # noqa: E402
from napari_tomoseg.nn.model_file import load_model  # noqa: E402
from napari_tomoseg.nn.tiles import tile_bank_for  # noqa: E402
from napari_tomoseg.nn.validation import score_held_out  # noqa: E402
from napari_tomoseg.preprocess import Preprocessor  # noqa: E402


def set_rotations(network: torch.nn.Module, rotations: int) -> None:
    for member in members_of(network) or [network]:
        member.rotations = rotations


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("folder", type=Path)
    parser.add_argument("--feature", default="membrane")
    parser.add_argument("--boxes", type=int, default=5)
    parser.add_argument("--first-box-seed", type=int, default=1)
    parser.add_argument("--rotations", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cells = [rs.load_cell(seed, False) for seed in (0, 1)]
    paths = sorted(args.folder.glob(f"{args.feature}_{args.boxes}_unet_*.pt"))
    if not paths:
        raise SystemExit(f"no saved {args.feature} models in {args.folder} (bench_realistic --save)")
    seeds = [int(p.stem.rsplit("_", 1)[1]) for p in paths]
    lines = [f"# {rs.provenance()}",
             f"# models of {args.folder} ({args.feature}, {args.boxes}/50 boxes, seeds "
             f"{', '.join(map(str, seeds))}, box seeds from {args.first_box_seed}); the threshold "
             "chosen again on the held-out quadrants with each number of turns",
             "| turns | threshold | Dice at it, same / other | best Dice, same / other | "
             "segmenting both cells, s |", "|---|---|---|---|---|"]
    print("\n".join(lines), flush=True)
    for rotations in args.rotations:
        runs, seconds = [], []
        for path, seed in zip(paths, seeds):
            model = load_model(path)
            set_rotations(model.network, rotations)
            boxes = rs.user_boxes(cells[0], args.feature, args.boxes, 50,
                                  seed=args.first_box_seed + seed - seeds[0])
            pre = Preprocessor(cells[0]["tomogram"], model.preprocess)
            bank = tile_bank_for(model.network, pre, boxes, holdout=0.25, seed=seed)
            threshold = score_held_out(model.network.eval(), bank, torch.device("cpu")).threshold
            start = time.perf_counter()
            probs = [segment(c["tomogram"], model, 10.0) for c in cells]
            seconds.append(time.perf_counter() - start)
            runs.append(score(args.feature, boxes, cells, probs, threshold))
            print(f"  seed {seed}, {rotations} turns: " + ", ".join(
                f"{k} {v:.3f}" for k, v in runs[-1].items() if k.startswith(("dice_stored_", "best_"))),
                flush=True)
        lines.append(f"| {rotations} | {rs.spread(runs, 'threshold')} | "
                     f"{rs.spread(runs, 'dice_stored_0')} / {rs.spread(runs, 'dice_stored_1')} | "
                     f"{rs.spread(runs, 'best_0')} / {rs.spread(runs, 'best_1')} | "
                     f"{np.mean(seconds):.0f} |")
        print(lines[-1], flush=True)
    if args.out:
        with args.out.open("a") as handle:
            handle.write("\n".join(lines) + "\n\n")


if __name__ == "__main__":
    main()
