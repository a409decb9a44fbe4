"""What else might set false ribosome picks apart, beyond ``tomoseg rescore``'s default cut.

    python benchmarks/bench_rescore_variants.py --maps MAPS:6,7,8 MAPS2:9,10,11 \\
        [--cache FILE] [--out FILE]

For each saved 5/50 map (bench_realistic --save, box draws from box seed 1) the picks of
both cells are scored against the picks' own average (as ``bench_rescore``) and the true
ribosome; per pick the network's score and blob size are kept too (``--cache`` keeps it
all, so a second run only analyses). Then, per score, the AUC of true against false picks
and pick F1 after cuts at the median less 1.5 / 2 / 2.5 / 3 MADs, and at the best cut an
oracle would choose; and, last, a second reference of the false picks a user would reject
(the K best-scored false picks of cell 0, averaged) whose score is subtracted.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import realistic as rs  # noqa: E402
from bench_rescore import _auc, _own_average, _picks  # noqa: E402

from napari_tomoseg.averaging.template_scores import template_scores  # noqa: E402
from napari_tomoseg.synthetic.ribosome import reference_density  # noqa: E402

SPREADS = (1.5, 2.0, 2.5, 3.0)


def _robust_z(x: np.ndarray) -> np.ndarray:
    median = np.median(x)
    mad = np.median(np.abs(x - median)) * 1.4826
    return (x - median) / (mad if mad > 0 else 1.0)


def _cut(x: np.ndarray, spread: float) -> float:
    median = np.median(x)
    return median - spread * np.median(np.abs(x - median))


def collect(maps: list[tuple[Path, list[int]]], cells: list[dict]) -> dict:
    """Per map and cell: picks, their network score and size, both reference scores."""
    out = {}
    for folder, seeds in maps:
        for seed in seeds:
            tables = [_picks(folder, seed, i) for i in (0, 1)]
            picked = [t[["z", "y", "x"]].to_numpy() for t in tables]
            own, _ = _own_average(cells[0], picked[0], 40)
            for i, cell in enumerate(cells):
                zyx = picked[i]
                out[f"{seed}_{i}"] = dict(
                    zyx=zyx, score=tables[i]["score"].to_numpy(), size=tables[i]["size"].to_numpy(),
                    ref=template_scores(cell["tomogram"], zyx, own, 10.0),
                    tru=template_scores(cell["tomogram"], zyx, reference_density(40, 10.0), 10.0),
                    dist=np.linalg.norm(zyx[:, None] - cell["particles"][None], axis=-1).min(1),
                    boxseed=1 + seed - seeds[0])
                print(seed, i, len(zyx), flush=True)
    return out


def analyse(data: dict, cells: list[dict], rejections: int) -> list[str]:
    boxes = {s: rs.user_boxes(cells[0], "ribosome", 5, 50, seed=s) for s in (1, 2, 3)}
    radius = rs.RIBOSOME_DIAMETER_A / 20

    def f1(zyx, i, box_seed):
        return (rs.unpainted_pick_scores(zyx, cells[0], boxes[box_seed]) if i == 0
                else rs.pick_scores(zyx, cells[1]))["f1"]

    variants = {"network score": lambda p: p["score"], "own average": lambda p: p["ref"],
                "true ribosome": lambda p: p["tru"],
                "own average + network (robust z)": lambda p: _robust_z(p["ref"]) + _robust_z(p["score"]),
                "own average + network / 2": lambda p: _robust_z(p["ref"]) + 0.5 * _robust_z(p["score"]),
                "own average + size / 2": lambda p: _robust_z(p["ref"]) + 0.5 * _robust_z(p["size"] * 1.0)}
    lines = ["| score | cell | AUC true/false | F1 at " + " / ".join(f"{k:g}" for k in SPREADS)
             + " MADs | F1 at the oracle's cut |", "|---|---|---|---|---|"]
    for name, score_of in variants.items():
        for i in (0, 1):
            rows = []
            for key, p in sorted(data.items()):
                if int(key.split("_")[1]) != i:
                    continue
                s, zyx = score_of(p), p["zyx"]
                rows.append([_auc(p["dist"] <= radius, s)]
                            + [f1(zyx[s >= _cut(s, k)], i, p["boxseed"]) for k in SPREADS]
                            + [max(f1(zyx[s >= c], i, p["boxseed"]) for c in np.unique(s))])
            mean, low = np.mean(rows, 0), np.min(rows, 0)
            lines.append(f"| {name} | {i} | {mean[0]:.2f} ({low[0]:.2f}) | "
                         + " / ".join(f"{v:.3f}" for v in mean[1:-1])
                         + f" | {mean[-1]:.3f} ({low[-1]:.3f}) |")
    lines += _second_reference(data, cells, rejections, f1, radius)
    print("\n".join(lines), flush=True)
    return lines


def _second_reference(data, cells, rejections, f1, radius) -> list[str]:
    """Own average minus the score against the average of the K rejected false picks."""
    rows = {0: [], 1: []}
    for seed in sorted({int(k.split("_")[0]) for k in data}):
        first = data[f"{seed}_0"]
        false = np.flatnonzero(first["dist"] > radius)
        rejected = false[np.argsort(-first["score"][false])][:rejections]
        negative, _ = _own_average(cells[0], first["zyx"][rejected], 40)
        for i in (0, 1):
            p = data[f"{seed}_{i}"]
            keep = np.ones(len(p["zyx"]), bool)
            if i == 0:
                keep[rejected] = False  # the user's rejections are gone from the list
            zyx, ref = p["zyx"][keep], p["ref"][keep]
            s = ref - template_scores(cells[i]["tomogram"], zyx, negative, 10.0)
            rows[i].append([f1(zyx, i, p["boxseed"]), _auc(p["dist"][keep] <= radius, s),
                            f1(zyx[s >= _cut(s, 2.0)], i, p["boxseed"])])
    lines = [f"Second reference: the average of the {rejections} best-scored false picks of "
             "cell 0 (a user's rejections, removed from cell 0's picks); score = own average "
             "- it", "| cell | F1 of the picks left | AUC | F1 at 2 MADs |", "|---|---|---|---|"]
    for i, r in rows.items():
        m = np.nanmean(np.asarray(r, float), 0)
        lines.append(f"| {i} | {m[0]:.3f} | {m[1]:.2f} | {m[2]:.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--maps", nargs="+", required=True, help="FOLDER:SEED,SEED,...")
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--rejections", type=int, default=7)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    maps = [(Path(m.split(":")[0]), [int(s) for s in m.split(":")[1].split(",")])
            for m in args.maps]
    cells = [rs.load_cell(0, False), rs.load_cell(1, False)]
    if args.cache is not None and args.cache.exists():
        data = np.load(args.cache, allow_pickle=True).item()
    else:
        data = collect(maps, cells)
        if args.cache is not None:
            np.save(args.cache, data, allow_pickle=True)
    head = [f"# Rescore variants, {rs.provenance()}; maps {' '.join(args.maps)}; cell generator "
            f"{rs.generator_digest()}; 40-voxel references, default TemplateSettings; F1 on "
            "cell 0 against the unpainted particles; means over the maps (lowest in brackets)"]
    rs.emit(head + analyse(data, cells, args.rejections), args.out)


if __name__ == "__main__":
    main()
