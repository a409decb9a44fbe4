"""Membrane settings on real data: the M. pneumoniae cell against a by-eye trace.

    python benchmarks/bench_mpneumoniae.py [--seeds 3] [--first-seed 0]
        [--variants default nostem] [--edge zeros|mirror] [--out FILE]

Each variant is trained from the same boxes (mpneumoniae.membrane_boxes) with
training seeds 0.. and scored by mpneumoniae.traced_scores at the stored
threshold (and f, their harmonic mean with the traced share, at 0.5 and at its
best threshold, and of what ``merge --min-size membrane=2000`` writes): recall of the
traced membranes, the share of detections near them, the share of the volume above the
threshold. No ground truth: a check that
settings chosen on synthetic cells carry over, not an accuracy figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import mpneumoniae as mp  # noqa: E402
from realistic import emit, provenance, spread  # noqa: E402

from napari_tomoseg.io.mrc import open_volume  # noqa: E402
from napari_tomoseg.jobs import run_job  # noqa: E402
from napari_tomoseg.jobs.merge import merge_maps  # noqa: E402
from napari_tomoseg.merge import MergeSettings  # noqa: E402
from napari_tomoseg.nn.inference import segment  # noqa: E402
from napari_tomoseg.nn.ensemble import members_of  # noqa: E402
from napari_tomoseg.nn.models import EDGES  # noqa: E402
from napari_tomoseg.nn.training import TrainingSettings, train  # noqa: E402
from napari_tomoseg.sample_files import MYCOPLASMA, sample_path  # noqa: E402

VARIANTS = {"default": {}, "nostem": {"parameters": {"stem3d": 0}}}


def run(vol: np.ndarray, settings: dict, seed: int, save: Path | None, name: str,
        edge: str | None = None, positives: str = "one slice",
        unscored: tuple[int, ...] = ()) -> dict:
    boxes = mp.membrane_boxes(vol.shape, positives=positives)
    unscored = tuple(unscored) + tuple({b.z for b in boxes if b.positive})
    start = time.perf_counter()
    model = train(vol, boxes, 20.0, TrainingSettings(**{**settings, "seed": seed}),
                  feature="membrane")
    seconds = time.perf_counter() - start
    if edge:  # the same trained network(s), segmented with other slice sides
        for network in [model.network, *(members_of(model.network) or [])]:
            network.edge = edge
    edge = model.network.edge
    prob = segment(vol, model, 20.0)
    if save:
        save.mkdir(parents=True, exist_ok=True)
        np.save(save / f"{name}_{edge}_{seed}.npy", prob.astype(np.float16))
    sweep = mp.threshold_sweep(prob, unscored)
    stored = mp.with_f(mp.traced_scores(prob > model.threshold, unscored))
    # what merge --min-size membrane=2000 writes: the stored threshold, small pieces dropped
    merged = run_job(merge_maps({"membrane": prob}, MergeSettings(["membrane"], {
        "membrane": model.threshold}, min_sizes={"membrane": 2000.0}), None, 20.0,
        (0.0, 0.0, 0.0))) > 0
    merged = {f"{k}_merged": v for k, v in mp.with_f(mp.traced_scores(merged, unscored)).items()
              if k in ("recall", "near", "f")}
    return {**stored, **merged, "edge": edge, "threshold": model.threshold,
            "f_05": sweep["at_half"]["f"],
            "f_best": sweep["best"]["f"], "best_threshold": sweep["best"]["threshold"],
            "seconds": seconds, "steps": len(model.history)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS),
                        help=f"named ({', '.join(VARIANTS)}) or TrainingSettings as JSON")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--save", type=Path, help="keep the probability maps here (.npy)")
    parser.add_argument("--positives", choices=list(mp.POSITIVES), default="one slice")
    parser.add_argument("--unscored", type=int, nargs="*", default=[],
                        help="traced slices left out of the scores besides the boxes' own "
                        "(to compare with a run whose boxes lie there)")
    parser.add_argument("--edge", choices=EDGES, help="segment with these slice sides, "
                        "whatever the model says (training is the same: it never mirrors)")
    args = parser.parse_args()
    volume, _ = open_volume(sample_path(MYCOPLASMA))
    vol = np.asarray(volume, np.float32)
    lines = [f"# {provenance()}",
             f"# M. pneumoniae (EMPIAR-10499, 20 A), 5 positive boxes on {args.positives} "
             "(slice 64, or 64 and 40) and 25 negatives; scored against membranes traced by eye "
             "(benchmarks/mpneumoniae.py) on the traced slices without boxes"
             f"{' or ' + str(args.unscored) if args.unscored else ''}; mean (range) over seeds "
             f"{args.first_seed}-{args.first_seed + args.seeds - 1}; slice sides: "
             f"{args.edge or 'as the model says (see the rows)'}",
             "| variant | recall of traced membrane | detections near it | f (both) | f at 0.5 | "
             "best f (at threshold) | volume above threshold | stored threshold | train s | "
             "f of what merge writes (recall / near) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in args.variants:
        settings = VARIANTS[name] if name in VARIANTS else json.loads(name)
        rows = [run(vol, settings, seed, args.save, name, args.edge, args.positives,
                    tuple(args.unscored))
                for seed in range(args.first_seed, args.first_seed + args.seeds)]
        for seed, row in enumerate(rows, args.first_seed):
            print(f"  {name} seed {seed}: " + ", ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
                flush=True)
        cell = {k: spread(rows, k, 4 if k == "above" else 2) for k in rows[0] if k != "edge"}
        lines.append(f"| {name}, sides {rows[0]['edge']} | {cell['recall']} | {cell['near']} | "
                     f"{cell['f']} | {cell['f_05']} | {cell['f_best']} "
                     f"(@{cell['best_threshold']}) | {cell['above']} | {cell['threshold']} | "
                     f"{cell['seconds']} | {cell['f_merged']} ({cell['recall_merged']} / "
                     f"{cell['near_merged']}) |")
        print(lines[-1], flush=True)
    emit(lines, args.out)



if __name__ == "__main__":
    main()
