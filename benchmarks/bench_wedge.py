"""How much of each feature the tilt series images at all: the missing wedge's ceiling.

    python benchmarks/bench_wedge.py [--short] [--maps DIR] [--out FILE]

A tilt series from -60 to +60 degrees about y samples no Fourier component
k with |k_z| > tan(60) |k_x|. A membrane's signal lies along its surface
normal, so membrane whose normal falls in that wedge is not in the
reconstruction (the caps of vesicles, and any surface tilted about x). For
each feature of the realistic cells this prints the share of the label's
surface whose normal lies outside the wedge (imaged), and, for membranes
(sheets, whose every voxel has a normal), the Dice a segmentation reaches
that finds all of the imaged part and nothing else. With ``--maps`` (the
``--save`` folder of bench_realistic.py) each saved map's best Dice is given
against the whole label and against the imaged part (unimaged voxels not
counted), and at the threshold of the first: the recall on the imaged and on the
unimaged membrane and the precision, which separates what the network misses
from what the data lacks.
Normals come from the structure tensor of the smoothed label.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).parent))
import realistic as rs  # noqa: E402


TILT_MAX_DEGREES = 60.0
SHEETS = ("membrane",)  # thin labels: every voxel has a normal; others are scored on their shell


def surface_normals(label: np.ndarray, where: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """Unit normals (z, y, x) at the voxels of ``where``: the structure tensor's main axis."""
    smooth = ndimage.gaussian_filter(label.astype(np.float32), sigma)
    gradient = np.gradient(smooth)
    index = np.nonzero(where)
    tensor = np.zeros((len(index[0]), 3, 3))
    for a in range(3):
        for b in range(a, 3):
            value = ndimage.gaussian_filter(gradient[a] * gradient[b], sigma)[index]
            tensor[:, a, b] = tensor[:, b, a] = value
    return np.linalg.eigh(tensor)[1][:, :, 2]


def imaged(label: np.ndarray, sheet: bool) -> tuple[np.ndarray, np.ndarray]:
    """(voxels whose normal is outside the missing wedge, voxels that have a normal)."""
    label = label > 0
    # a tube or blob cut by the volume's edge has no surface there (border_value=1)
    shell = label & ~ndimage.binary_erosion(label, iterations=2, border_value=1)
    surface = label if sheet else shell
    normal = surface_normals(label, surface)
    angle = np.degrees(np.arctan2(np.abs(normal[:, 0]), np.abs(normal[:, 2])))
    seen = np.zeros_like(label)
    seen[tuple(np.array(np.nonzero(surface))[:, angle <= TILT_MAX_DEGREES])] = True
    return seen, surface


def map_row(name: str, prob: np.ndarray, truth: np.ndarray, seen: np.ndarray) -> str:
    scores = rs.dice_scores(prob, truth)
    whole, threshold = scores["best"], scores["best_threshold"]
    imaged_part = rs.dice_scores(prob, seen, ~(truth & ~seen))["best"]
    found = prob > threshold
    unseen = truth & ~seen
    return (f"| {name} | {whole:.3f} | {imaged_part:.3f} | {threshold:.2f} | "
            f"{(found & seen).sum() / max(seen.sum(), 1):.2f} | "
            f"{(found & unseen).sum() / max(unseen.sum(), 1):.2f} | "
            f"{(found & truth).sum() / max(found.sum(), 1):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--maps", type=Path, help="bench_realistic.py --save folder")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    provenance = rs.provenance()
    cells = [rs.load_cell(seed, args.short) for seed in (0, 1)]
    lines = [f"# Missing-wedge ceiling, {provenance}",
             f"# tilt +-{TILT_MAX_DEGREES:.0f} degrees about y; imaged = surface normal outside "
             "the wedge; ceiling = Dice of finding exactly the imaged part (sheets only)",
             "| feature | cell | imaged share of the surface | ceiling Dice |", "|---|---|---|---|"]
    seen = {}
    for feature in ("membrane", "microtubule", "ribosome"):
        for i, cell in enumerate(cells):
            sheet = feature in SHEETS
            seen[feature, i], surface = imaged(cell["labels"][feature], sheet)
            share = seen[feature, i].sum() / max(surface.sum(), 1)
            ceiling = f"{2 * share / (1 + share):.2f}" if sheet else "-"
            lines.append(f"| {feature} | {i} | {share:.2f} | {ceiling} |")
            print(lines[-1], flush=True)
    if args.maps:
        lines += ["", "| map | best Dice, whole label | best Dice, imaged part | at threshold "
                  "| recall imaged | recall unimaged | precision |", "|---|---|---|---|---|---|---|"]
        for path in sorted(args.maps.glob("membrane_*.npy")):
            i = int(path.stem.rsplit("_", 1)[1])
            truth = cells[i]["labels"]["membrane"] > 0
            prob = np.load(path).astype(np.float32)
            lines.append(map_row(path.stem, prob, truth, seen["membrane", i]))
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    print("\n" + text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
