"""The default accuracy benchmark: realistic cells, user-like boxes, reuse on a second cell.

    python benchmarks/bench_realistic.py [--short] [--features ribosome ...]
        [--boxes 5 10] [--methods unet eman2 forest] [--seeds 3]
        [--settings '{"parameters": {"stem3d": 16, "context": 4}}'] [--out FILE]

See realistic.py for the data. Per feature and box set, each method is
trained on cell 0 and applied to cell 0 (scored on voxels no box covered)
and to cell 1 (reuse, scored everywhere; on cell 0 picks are scored against the
particles no positive box painted). Columns: Dice at 0.5, Dice at the
model's stored threshold, best Dice over thresholds (and where it lies);
for ribosomes, picks by ``pick_particles`` with default settings (the
model's stored threshold) scored as precision / recall / F1 within half a
diameter of the true centres; for microtubules and actin, Dice of the tubes
``trace_filaments`` draws around the centre lines it finds in the map (at
the stored threshold, 25 and 7 nm across); for membranes, Dice of what ``merge
--min-size membrane=2000`` writes (the stored threshold, pieces under 2000 nm^3 dropped).
The forest is the ilastik recipe
(baseline_forest.py) with the same boxes and the same picker. With
``--correct`` each network gets later rounds (``--rounds``, 2 by default) as a
user would give them: 5 positives on the largest missed stretches a user can
see and 10 negatives on the largest false detections in cell 0
(``realistic.correction_boxes``), training continued (``--round2 fresh``: a
new network on all boxes); cell 0 is then scored outside all boxes so far. One
training seed moves a row by up to ~0.1 Dice, so decide with ``--seeds 3``:
each row then gives the mean over seeds and their range (the boxes stay).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import realistic as rs  # noqa: E402

from napari_tomoseg.features import FILAMENT_DIAMETERS  # noqa: E402
from napari_tomoseg.filaments import FilamentSettings, trace_filaments  # noqa: E402
from napari_tomoseg.jobs import run_job  # noqa: E402
from napari_tomoseg.jobs.merge import merge_maps  # noqa: E402
from napari_tomoseg.merge import MergeSettings  # noqa: E402
from napari_tomoseg.metrics import dice  # noqa: E402
from napari_tomoseg.nn.ensemble_training import iter_train_members  # noqa: E402
from napari_tomoseg.nn.inference import segment  # noqa: E402
from napari_tomoseg.nn.model_file import save_model  # noqa: E402
from napari_tomoseg.nn.training import TrainingSettings  # noqa: E402
from napari_tomoseg.picking import PickSettings, pick_particles  # noqa: E402
from napari_tomoseg.preprocess import Preprocessor  # noqa: E402

# merge --min-size per feature, as docs/engine.md ("Small pieces of membrane") suggests
MIN_SIZES_NM3 = {"membrane": 2000.0}


def run_method(method: str, cells, boxes, feature: str, binning: int | None = None,
               intensity: float | None = None, start_from=None, seed: int = 0,
               settings: dict | None = None) -> tuple[list, float, float]:
    """(probability maps for each cell, stored threshold, training seconds)."""
    start = time.perf_counter()
    if method == "forest":
        from baseline_forest import apply_forest, train_forest

        forest = train_forest(Preprocessor(cells[0]["tomogram"]), boxes, seed=seed)
        seconds = time.perf_counter() - start
        maps = [apply_forest(forest, Preprocessor(c["tomogram"])) for c in cells]
        # its threshold: the best on the training cell's unboxed voxels, an oracle no user
        # has (at 0.5 its picks kept precision 1.0 and lost recall): the baseline at its best
        where = rs.held_out(boxes, maps[0].shape)
        oracle = rs.dice_scores(maps[0], cells[0]["labels"][feature], where)["best_threshold"]
        return maps, float(oracle), seconds
    from napari_tomoseg.preprocess import PreprocessSettings

    tomogram = cells[0]["tomogram"]
    first_preview, curve, model = None, [], None
    extra = {} if intensity is None else {"intensity_augment": intensity}
    extra = {**extra, **(settings or {}), "seed": seed}
    for update in iter_train_members(tomogram, boxes, 10.0,
                                     TrainingSettings(architecture=method, **extra),
                             preprocess=PreprocessSettings(binning=binning) if binning else None,
                             preview_z=tomogram.shape[0] // 2, start_from=start_from):
        model = update.model
        if first_preview is None and update.preview is not None:
            first_preview = time.perf_counter() - start
        if update.held_out is not None:
            curve.append((time.perf_counter() - start, update.held_out.dice))
    seconds = time.perf_counter() - start
    # the curve's own best: the kept model's Dice is of another kind (four averaged
    # rotations, weights chosen by loss), so 'within 0.02' of it was not a like comparison
    best = max((d for _, d in curve if d == d), default=0.0)
    good = next((t for t, d in curve if d >= best - 0.02), seconds)
    print(f"  {method}: first preview after {first_preview:.1f} s; held-out Dice (single "
          f"predictions) within 0.02 of its best ({best:.3f}) after {good:.0f} s", flush=True)
    threshold = float(getattr(model, "threshold", 0.5) or 0.5)
    steps = len(model.history)
    print(f"  {method}: {steps} steps in {seconds:.0f} s, binning {model.preprocess.binning}, "
          f"stored threshold {threshold:.2f}, held-out {model.info.get('held_out')}", flush=True)
    run_method.last_model = model  # for a correction round (--correct)
    return [segment(c["tomogram"], model, 10.0) for c in cells], threshold, seconds


def saved_maps(folder: Path, feature: str, n_pos: int, method: str, seed: int
               ) -> tuple[list, float, float]:
    """What ``--save`` kept of one training: (maps of both cells, stored threshold, nan)."""
    stem = f"{feature}_{n_pos}_{method}_{seed}"
    if not (folder / f"{stem}.threshold").is_file():
        raise SystemExit(f"{folder} holds no maps of {stem} (saved with --save?)")
    maps = [np.load(folder / f"{stem}_{i}.npy").astype(np.float32) for i in (0, 1)]
    return maps, float((folder / f"{stem}.threshold").read_text()), float("nan")


def check_saved_shapes(maps: list, cells: list) -> None:
    if any(m.shape != c["tomogram"].shape for m, c in zip(maps, cells)):
        raise SystemExit("the saved maps are of other cells (--short, or another generator?)")


def score(feature: str, boxes, cells, probs, threshold: float) -> dict[str, float]:
    """Numbers of one trained method: per cell Dice at 0.5, at the stored threshold, the best
    and where it lies; for ribosomes the picks' F1, precision and recall."""
    out: dict[str, float] = {}
    for i, (cell, prob) in enumerate(zip(cells, probs)):
        where = rs.held_out(boxes, prob.shape) if i == 0 else None
        d = rs.dice_scores(prob, cell["labels"][feature], where, threshold)
        out.update({f"dice_05_{i}": d["dice_05"], f"dice_stored_{i}": d["dice_stored"],
                    f"best_{i}": d["best"], f"best_threshold_{i}": d["best_threshold"]})
        if feature == "ribosome":
            picks = pick_particles(prob, 10.0, PickSettings(diameter=rs.RIBOSOME_DIAMETER_A,
                                                            threshold=threshold))
            zyx = picks[["z", "y", "x"]].to_numpy()
            m = (rs.unpainted_pick_scores(zyx, cell, boxes) if i == 0  # painted ones aside,
                 else rs.pick_scores(zyx, cell))  # as Dice leaves the painted voxels out
            out.update({f"f1_{i}": m["f1"], f"precision_{i}": m["precision"],
                        f"recall_{i}": m["recall"]})
        if feature in FILAMENT_DIAMETERS:  # traced as tubes of their diameter (filaments.py)
            tubes = trace_filaments(prob, 10.0, FilamentSettings(
                diameter=FILAMENT_DIAMETERS[feature], threshold=threshold,
                **getattr(score, "trace", {}))).tubes
            out[f"tubes_{i}"] = dice(tubes, cell["labels"][feature], where)
        if feature in MIN_SIZES_NM3:  # what merge --min-size writes: small pieces dropped
            merged = run_job(merge_maps({feature: prob}, MergeSettings([feature], {
                feature: threshold}, min_sizes={feature: MIN_SIZES_NM3[feature]}), None, 10.0,
                (0.0, 0.0, 0.0)))
            out[f"merged_{i}"] = dice(merged > 0, cell["labels"][feature], where)
    out["threshold"] = threshold
    return out


def correction_rounds(args, method: str, cells, boxes, feature: str, seed: int, probs,
                      threshold: float, took: float) -> list[tuple[dict, float, list]]:
    """Rounds 2.. of a user's loop after round 1 gave ``probs``: per round (scores, seconds of
    training so far, [(positives, negatives) added in each round so far])."""
    rounds, added = [], []
    for k in range(args.rounds - 1):
        extra = (rs.rejection_boxes(probs[0], cells[0], boxes, threshold)
                 if args.correct == "picks" else
                 rs.correction_boxes(probs[0], cells[0]["labels"][feature], feature, boxes,
                                     threshold, seed=2 + k))
        boxes = boxes + extra
        added.append((sum(b.positive for b in extra), sum(not b.positive for b in extra)))
        probs, threshold, more = run_method(
            method, cells, boxes, feature, args.binning, args.intensity,
            start_from=run_method.last_model if args.round2 == "continue" else None,
            seed=seed, settings=args.settings)
        took += more
        rounds.append((score(feature, boxes, cells, probs, threshold), took, list(added)))
        print(f"  seed {seed}, round {k + 2}: " + ", ".join(
            f"{name} {v:.3f}" for name, v in rounds[-1][0].items()
            if name.startswith(("f1_", "dice_stored_", "tubes_", "merged_"))), flush=True)
    return rounds


def row_cells(feature: str, runs: list[dict]) -> list[str]:
    out = []
    for i in (0, 1):
        out.append(f"{rs.spread(runs, f'dice_05_{i}')} / {rs.spread(runs, f'dice_stored_{i}')} / "
                   f"{rs.spread(runs, f'best_{i}')}@{rs.spread(runs, f'best_threshold_{i}')}")
    for i in (0, 1):
        out.append(f"{rs.spread(runs, f'f1_{i}')} ({rs.spread(runs, f'precision_{i}')}/"
                   f"{rs.spread(runs, f'recall_{i}')})" if feature == "ribosome" else
                   f"tubes {rs.spread(runs, f'tubes_{i}')}" if feature in FILAMENT_DIAMETERS
                   else f"merged {rs.spread(runs, f'merged_{i}')}" if f"merged_{i}" in runs[0]
                   else "-")
    return out + [rs.spread(runs, "threshold")]



def _default_members() -> str:
    """What a model of each feature holds unless --settings says (nn.models.FEATURE_ENSEMBLES),
    so a table says whether its rows are ensembles."""
    from napari_tomoseg.nn.models import FEATURE_ENSEMBLES

    own = ", ".join(f"{name} {n}, each with patience {patience}" for name, (n, patience) in
                    FEATURE_ENSEMBLES["unet"].items())
    return f"unet: {own}; the rest 1" if own else "1"

def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--features", nargs="+", default=["ribosome", "membrane", "microtubule"])
    parser.add_argument("--boxes", nargs="+", type=int, default=[5, 10])
    parser.add_argument("--methods", nargs="+", default=["unet", "forest"])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--binning", type=int, help="default: the training default (auto)")
    parser.add_argument("--save", type=Path,
                        help="keep the probability maps (.npy) and the models (.pt) here")
    parser.add_argument("--correct", nargs="?", const="stretches", choices=["stretches", "picks"],
                        help="add a row per network after one correction round, continued: "
                             "'stretches' (5 positives on missed stretches, 10 negatives on false "
                             "detections) or 'picks' (ribosomes: the 10 best false picks "
                             "rejected, as in the Pick widget)")
    parser.add_argument("--round2", choices=["continue", "fresh"], default="continue",
                        help="with --correct: each later round continues the round before's "
                             "network (as the widget's 'Continue from the last model'), or "
                             "trains a fresh one on all boxes")
    parser.add_argument("--rounds", type=int, default=2,
                        help="with --correct: rounds in all (round 1 the user's first boxes)")
    parser.add_argument("--intensity", type=float, help="intensity augmentation (default: the "
                        "training default)")
    parser.add_argument("--seeds", type=lambda v: max(1, int(v)), default=1,
                        help="training seeds per row (the boxes stay; a 'seed' in "
                             "--settings is replaced); rows give the mean and the range")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds run from here (so more seeds can be added to a run)")
    parser.add_argument("--settings", type=json.loads, default=None,
                        help='extra TrainingSettings as JSON, e.g. \'{"batch_size": 32}\'')
    parser.add_argument("--from-maps", type=Path, metavar="DIR",
                        help="score the maps an earlier --save kept in DIR instead of training "
                             "(same features, boxes, methods and seeds; train s reads nan)")
    parser.add_argument("--trace", type=json.loads, default={},
                        help='FilamentSettings for the tubes, e.g. \'{"contrast": 0.4}\'')
    parser.add_argument("--box-draws", action="store_true",
                        help="each training seed gets its own draw of boxes (box seeds 1, 2, "
                             "...): a row's range then holds the user's box lottery too")
    parser.add_argument("--first-box-seed", type=int, default=1,
                        help="with --box-draws: the first seed's box seed (others follow)")
    parser.add_argument("--negatives-in-cell", action="store_true",
                        help="negative boxes only on the cell's slices, none in the ice around it")
    args = parser.parse_args()
    rs.NEGATIVES_IN_CELL = args.negatives_in_cell
    score.trace = args.trace
    if args.from_maps and (args.save or args.correct):
        parser.error("--from-maps scores saved maps: it trains nothing to --save or --correct")
    if args.correct == "picks" and args.features != ["ribosome"]:
        parser.error("--correct picks rejects false ribosome picks: give --features ribosome")
    if "forest" in args.methods and importlib.util.find_spec("sklearn") is None:
        parser.error("the forest baseline needs scikit-learn: .venv/bin/python -m pip install "
                     "-e '.[bench]' (or leave 'forest' out of --methods)")
    provenance = rs.provenance()  # the code that runs, not what is checked out at the end
    cells = [rs.load_cell(seed, args.short) for seed in (0, 1)]
    rows = []
    for feature in args.features:
        for n_pos in args.boxes:
            boxes = rs.user_boxes(cells[0], feature, n_pos, 50)
            for method in args.methods:
                runs, later, seconds = [], [], []
                for seed in range(args.first_seed, args.first_seed + args.seeds):
                    if args.box_draws:  # another user's boxes with each training seed
                        boxes = rs.user_boxes(cells[0], feature, n_pos, 50,
                                              seed=args.first_box_seed + seed - args.first_seed)
                    if args.from_maps:  # scored again, not trained: picking or tracing changed
                        probs, threshold, took = saved_maps(args.from_maps, feature, n_pos,
                                                            method, seed)
                        check_saved_shapes(probs, cells)
                    else:
                        probs, threshold, took = run_method(
                            method, cells, boxes, feature, args.binning, args.intensity,
                            seed=seed, settings=args.settings)
                    seconds.append(took)
                    runs.append(score(feature, boxes, cells, probs, threshold))
                    print(f"  seed {seed}: " + ", ".join(  # for paired comparisons of settings
                        f"{k} {v:.3f}" for k, v in runs[-1].items()
                        if k.startswith(("f1_", "dice_stored_", "tubes_", "merged_"))), flush=True)
                    if args.save:
                        args.save.mkdir(parents=True, exist_ok=True)
                        for i, prob in enumerate(probs):
                            np.save(args.save / f"{feature}_{n_pos}_{method}_{seed}_{i}.npy",
                                    prob.astype(np.float16))
                        stem = f"{feature}_{n_pos}_{method}_{seed}"
                        (args.save / f"{stem}.threshold").write_text(f"{threshold}\n")
                        if method != "forest":  # for later looks (rotations, thresholds)
                            save_model(run_method.last_model, args.save / f"{stem}.pt")
                    if args.correct and method != "forest":
                        later.append(correction_rounds(args, method, cells, boxes, feature,
                                                       seed, probs, threshold, took))
                rows.append([feature, f"{n_pos}/50", method, *row_cells(feature, runs),
                             f"{np.mean(seconds):.0f}"])
                print(" | ".join(rows[-1]), flush=True)
                for k, rounds in enumerate(zip(*later)):  # round k + 2 of every seed
                    added = "".join(f" +{n}/{m}" for n, m in rounds[0][2])
                    rows.append([feature, f"{n_pos}/50{added}",
                                 f"{method}, round {k + 2} ({args.round2})",
                                 *row_cells(feature, [r[0] for r in rounds]),
                                 f"{np.mean([r[1] for r in rounds]):.0f}"])
                    print(" | ".join(rows[-1]), flush=True)
    shape = cells[0]["tomogram"].shape
    lines = [f"# Realistic benchmark, {provenance}",
             f"# cells {shape[2]}x{shape[1]}x{shape[0]} at 10 A ({rs.ICE_MARGIN_NM[args.short]:g} "
             f"nm of empty ice above and below the cell), SNR {rs.IMAGING.snr} per tilt, "
             f"CTF {rs.IMAGING.defocus_um} um phase-flipped, {len(cells[0]['particles'])} / "
             f"{len(cells[1]['particles'])} ribosomes; seed 0 trains, seed 1 is reuse"
             + (f"; intensity augmentation {args.intensity}" if args.intensity is not None
                else "")
             + (f"; settings {json.dumps(args.settings)}" if args.settings else "")
             + (f"; maps from {args.from_maps} (trained earlier, scored by this commit)"
                if args.from_maps else "")
             + (f"; tracing {json.dumps(args.trace)}" if args.trace else "")
             + ("; negatives only on the cell's slices" if args.negatives_in_cell else "")
             + (f"; {args.rounds} rounds, later ones {args.round2} with boxes on "
                + ("missed stretches a user sees and false detections" if args.correct ==
                   "stretches" else "the best false picks, rejected") if args.correct else "")
             + (f"; each seed with its own draw of boxes (box seed {args.first_box_seed} + "
                "seed - first seed)"
                if args.box_draws else "; one draw of boxes (box seed 1) for every seed")
             + ("" if "members" in (args.settings or {}) else
                f"; networks per model: the feature's default ({_default_members()})")
             + f"; {args.seeds} training seed(s) per row (from {args.first_seed}): mean (range)"
             + f"; cell generator {rs.generator_digest()}; forest at its best threshold on "
               "cell 0 (an oracle); picks on cell 0 scored against the unpainted particles"]
    write_table(lines, rows, args.out)


def write_table(comments: list[str], rows: list[list[str]], out: Path | None) -> None:
    """Print the results table under its comment lines, and write it to ``out`` if given."""
    lines = comments + [
        "| feature | boxes +/- | method | Dice @0.5 / @stored / best same | "
        "Dice @0.5 / @stored / best other | pick F1 (P/R), tubes or merged Dice same | "
        "pick F1 (P/R), tubes or merged Dice other "
        "| stored threshold | train s |",
        "|---|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    text = "\n".join(lines)
    print("\n" + text)
    if out:
        out.write_text(text + "\n")


if __name__ == "__main__":
    main()
