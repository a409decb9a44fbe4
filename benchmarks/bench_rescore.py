"""Picks rescored against a reference (``tomoseg rescore``) on the realistic cells.

    python benchmarks/bench_realistic.py --features ribosome --boxes 5 --methods unet \\
        --seeds 3 --first-seed 6 --box-draws --save MAPS
    python benchmarks/bench_rescore.py MAPS [--seeds 6 7 8] [--out FILE]

Each saved map is picked with the defaults, as bench_realistic scores it (cell 0
against the particles no box painted, cell 1 against all). Its picks are then scored by
``template_scores`` against two references: the true ribosome (what a map from EMDB
stands for) and the average of the same model's picks on cell 0 (what a user has
without one; ``average``, 5 iterations, boxes of ``--box`` voxels). Columns: AUC of the score for
true against false picks, and pick F1 (P/R) before and after the suggested cut.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
import realistic as rs  # noqa: E402

from napari_tomoseg.averaging.extract import extract_subtomograms  # noqa: E402
from napari_tomoseg.averaging.refine import AverageSettings, average  # noqa: E402
from napari_tomoseg.averaging.template_scores import (TemplateSettings, suggested_cut,  # noqa: E402
                                                      template_scores)
from napari_tomoseg.picking import PickSettings, pick_particles  # noqa: E402
from napari_tomoseg.synthetic.ribosome import reference_density  # noqa: E402


def _picks(folder: Path, seed: int, cell: int) -> pd.DataFrame:
    """The saved map's default picks (z y x, score, size, ...), at its stored threshold."""
    stem = folder / f"ribosome_5_unet_{seed}"
    threshold = float((folder / f"ribosome_5_unet_{seed}.threshold").read_text())
    prob = np.load(f"{stem}_{cell}.npy").astype(np.float32)
    return pick_particles(prob, 10.0, PickSettings(diameter=rs.RIBOSOME_DIAMETER_A,
                                                   threshold=threshold))


def _zyx(folder: Path, seed: int, cell: int) -> np.ndarray:
    return _picks(folder, seed, cell)[["z", "y", "x"]].to_numpy()


def _f1(zyx: np.ndarray, cell: dict, boxes, index: int) -> str:
    m = rs.unpainted_pick_scores(zyx, cell, boxes) if index == 0 else rs.pick_scores(zyx, cell)
    return f"{m['f1']:.3f} ({m['precision']:.2f}/{m['recall']:.2f})"


def _auc(true: np.ndarray, scores: np.ndarray) -> float:
    """Probability that a true pick outscores a false one (ties count half)."""
    pos, neg = scores[true], scores[~true]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum())
                 / (len(pos) * len(neg)))


def _own_average(cell: dict, zyx: np.ndarray, box: int) -> tuple[np.ndarray, float]:
    sub = extract_subtomograms(cell["tomogram"], zyx, box, edge="pad")
    result = average(sub.data, 10.0, AverageSettings(box=box, iterations=5))
    return result.average.astype(np.float32), result.resolution


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("maps", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[6, 7, 8])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--box", type=int, default=32,
                        help="voxels of both references")
    parser.add_argument("--mask-radius", type=float,
                        help="voxels (default: TemplateSettings' default)")
    args = parser.parse_args()
    cells = [rs.load_cell(0, False), rs.load_cell(1, False)]
    rows = []
    for seed in args.seeds:  # box seed 1 + seed - 6, as --box-draws from seed 6
        boxes = rs.user_boxes(cells[0], "ribosome", 5, 50, seed=1 + seed - args.seeds[0])
        own, resolution = _own_average(cells[0], _zyx(args.maps, seed, 0), args.box)
        for name, reference in (("true ribosome", reference_density(args.box, 10.0)),
                                (f"own average ({resolution:.0f} A)", own)):
            for i, cell in enumerate(cells):
                zyx = _zyx(args.maps, seed, i)
                start = time.perf_counter()
                scores = template_scores(cell["tomogram"], zyx, reference, 10.0,
                                         TemplateSettings(mask_radius=args.mask_radius))
                took = time.perf_counter() - start
                true = np.linalg.norm(zyx[:, None] - cell["particles"][None], axis=-1).min(1) \
                    <= rs.RIBOSOME_DIAMETER_A / 20
                kept = zyx[scores >= suggested_cut(scores)]
                rows.append([str(seed), name, str(i), f"{_auc(true, scores):.2f}",
                             _f1(zyx, cell, boxes, i), _f1(kept, cell, boxes, i),
                             f"{len(zyx)} -> {len(kept)}", f"{took:.0f}"])
                print(" | ".join(rows[-1]), flush=True)
    lines = [f"# Picks rescored against a reference, {rs.provenance()}; maps {args.maps}; "
             f"cell generator {rs.generator_digest()}; references of {args.box} voxels, mask radius "
             f"{args.mask_radius or 'default'}; otherwise default TemplateSettings (20 degrees, "
             "+-2 voxels, 30 A); cut: median - 2 MADs; F1 on cell 0 against the unpainted "
             "particles",
             "| seed | reference | cell | AUC true/false | F1 (P/R) picks | F1 (P/R) after the "
             "cut | picks | s |", "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    rs.emit(lines, args.out)


if __name__ == "__main__":
    main()
