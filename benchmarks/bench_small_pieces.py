"""Membrane Dice after dropping small connected pieces, from saved maps.

    python benchmarks/bench_small_pieces.py MAPS_DIR [MAPS_DIR ...] [--out FILE]

Each MAPS_DIR is a ``bench_realistic.py --features membrane --save`` folder. Every saved
membrane map is thresholded at its model's stored threshold, and its 26-connected pieces
under each size (nm^3; the cells have 10 A voxels) are dropped with
``small_pieces.drop_small_pieces``, the step ``merge`` runs. The table gives Dice against
the whole label (cell 0 outside the boxes is not separated here: the boxes cover under
2% of it) and the change per size; the mean and the lowest change close it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import realistic as rs  # noqa: E402

from napari_tomoseg.metrics import dice  # noqa: E402
from napari_tomoseg.small_pieces import drop_small_pieces, voxels_of  # noqa: E402

SIZES_NM3 = (300, 1000, 2000, 3000, 5000, 10000)


def map_rows(stem: Path, truths: list[np.ndarray]) -> list[tuple[str, int, float, float, list]]:
    """(map name, cell, threshold, Dice as thresholded, change per size) for both cells."""
    threshold = float(Path(f"{stem}.threshold").read_text())
    rows = []
    for i, truth in enumerate(truths):
        mask = (np.load(f"{stem}_{i}.npy") > threshold).astype(np.uint8)
        base = dice(mask > 0, truth)
        changes = []
        for size in SIZES_NM3:
            kept = mask.copy()
            drop_small_pieces(kept, 1, voxels_of(size, 10.0))
            changes.append(dice(kept > 0, truth) - base)
        rows.append((stem.name, i, threshold, base, changes))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("maps", type=Path, nargs="+")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    truths = [rs.load_cell(seed, False)["labels"]["membrane"] > 0 for seed in (0, 1)]
    stems = sorted(Path(str(t)[:-len(".threshold")]) for folder in args.maps
                   for t in folder.glob("membrane_*.threshold"))
    if not stems:
        raise SystemExit("no saved membrane maps (bench_realistic.py --save) in " +
                         ", ".join(map(str, args.maps)))
    rows = [row for stem in stems for row in map_rows(stem, truths)]
    lines = [f"# {rs.provenance()}",
             f"# maps: {', '.join(map(str, args.maps))}; cell generator {rs.generator_digest()}",
             "| map | cell | stored threshold | Dice | " +
             " | ".join(f"change, pieces < {s} nm^3 dropped" for s in SIZES_NM3) + " |",
             "|---|---|---|---|" + "---|" * len(SIZES_NM3)]
    lines += [f"| {name} | {i} | {t:.2f} | {base:.3f} | " +
              " | ".join(f"{c:+.3f}" for c in changes) + " |"
              for name, i, t, base, changes in rows]
    for cell in (0, 1):
        changes = np.array([c for _, i, _, _, c in rows if i == cell])
        base = np.mean([b for _, i, _, b, _ in rows if i == cell])
        spread = " | ".join(f"{m:+.3f} ({lo:+.3f})" for m, lo in
                            zip(changes.mean(0), changes.min(0)))
        lines.append(f"| mean (lowest) | {cell} | | {base:.3f} | {spread} |")
    rs.emit(lines, args.out)


if __name__ == "__main__":
    main()
