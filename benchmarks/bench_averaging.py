"""Subtomogram averaging against ground truth, and its speed; prints tables.

    python benchmarks/bench_averaging.py [--short]

Quality: a field of randomly oriented synthetic ribosomes (asymmetric,
chiral) imaged from -60 to +60 degrees (3 degree steps), 15 A voxels, 32^3
boxes; the reference-free start and a start from the truth low-passed to
90 A; per-tilt SNR 10 and 2. Then ribosomes picked (from the ground-truth
label volume) in a crowded synthetic cell. Reported: half-map resolution
(FSC 0.143), resolution against the truth (FSC 0.5), detail correlation
with the truth (shells >= 3) and with its mirror image, median angular and
positional error of the particles.
Speed: seconds per global and local iteration for 200 and 1,000 particles.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_tomoseg.averaging import AverageSettings, average, relion_matrices
from napari_tomoseg.averaging.evaluate import compare_to_truth, orientation_errors
from napari_tomoseg.averaging.extract import extract_subtomograms
from napari_tomoseg.averaging.refine import _Prepared, _search
from napari_tomoseg.averaging.volumes import lowpass
from napari_tomoseg.picking import PickSettings, match_picks, pick_particles
from napari_tomoseg.synthetic import CellSpec, ImagingSpec, simulate
from napari_tomoseg.synthetic.particle_field import simulate_particle_field
from napari_tomoseg.synthetic.ribosome import reference_density

BOX, VOXEL = 32, 15.0


def quality_row(label: str, data: np.ndarray, origins: np.ndarray, true_zyx: np.ndarray,
                true_angles: np.ndarray, truth: np.ndarray, start: str, settings: AverageSettings) -> dict:
    reference = None
    if start == "truth@90A":
        reference = lowpass(torch.as_tensor(truth), VOXEL / 90.0).numpy()
    t0 = time.perf_counter()
    result = average(data, VOXEL, settings, reference=reference)
    seconds = time.perf_counter() - t0
    cmp = compare_to_truth(result.average, truth, VOXEL)
    angles, positions = orientation_errors(result.alignment, relion_matrices(true_angles),
                                           cmp.superposition,
                                           origins + result.alignment.shifts[:, ::-1], true_zyx)
    return {"data": label, "start": start, "n": len(data), "half_res": result.resolution,
            "truth_res": cmp.resolution, "detail_r": cmp.correlation,
            "mirror_r": cmp.mirror_correlation, "hand": "ok" if cmp.correct_hand else "WRONG",
            "angle_med": float(np.median(angles)), "within15": float(np.mean(angles < 15)),
            "pos_med": float(np.median(positions)), "seconds": seconds}


def timing_rows(data: np.ndarray, counts: list[int]) -> list[dict]:
    rows = []
    settings = AverageSettings(box=BOX)
    reference = torch.as_tensor(reference_density(BOX, VOXEL))
    for n in counts:
        stack = np.concatenate([data] * int(np.ceil(n / len(data))))[:n]
        prepared = _Prepared(stack, settings, torch.device("cpu"))
        cutoff = settings.start_cutoff(VOXEL)
        t0 = time.perf_counter()
        found = _search(prepared, reference, cutoff, np.arange(n), None, settings.angular_step, 0, None)
        global_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        _search(prepared, reference, 0.3, np.arange(n), found, 5.0, 10.0, None)
        local_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        prepared.reconstruct(np.arange(n), found)
        rows.append({"n": n, "global_20deg_s": global_s, "local_5deg_s": local_s,
                     "reconstruct_s": time.perf_counter() - t0})
    return rows


def classification_row(snr: float, count: int = 80, ribosomes: float = 0.5) -> dict:
    """Two species (ribosome, large subunit alone); consensus from the truth at 90 A."""
    from napari_tomoseg.averaging import ClassifySettings, classify

    field = simulate_particle_field(count, VOXEL, snr=snr, seed=1,
                                    species_fractions={"ribosome": ribosomes,
                                                       "large_subunit": 1 - ribosomes})
    sub = extract_subtomograms(field.tomogram, field.zyx, BOX)
    settings = AverageSettings(box=BOX, iterations=3)
    start = lowpass(torch.as_tensor(reference_density(BOX, VOXEL)), VOXEL / 90.0).numpy()
    consensus = average(sub.data, VOXEL, settings, reference=start)
    t0 = time.perf_counter()
    result = classify(sub.data, VOXEL, consensus.alignment, settings, ClassifySettings(classes=2))
    truth = (field.species[sub.indices] == "ribosome").astype(int)
    predicted = result.classes - 1
    accuracy = max(np.mean(predicted == truth), np.mean(predicted != truth))
    return {"snr": snr, "n": len(sub.data), "ribosomes": ribosomes, "accuracy": float(accuracy),
            "class_sizes": "/".join(map(str, np.bincount(predicted, minlength=2))),
            "seconds": time.perf_counter() - t0}


def print_table(rows: list[dict]) -> None:
    keys = list(rows[0])
    print(" | ".join(f"{k:>10s}" for k in keys))
    for row in rows:
        print(" | ".join(f"{v:10.3g}" if isinstance(v, float) else f"{str(v):>10s}" for v in row.values()))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--short", action="store_true", help="60 particles, one SNR, no cell")
    parser.add_argument("--classify-only", action="store_true",
                        help="only the two-class accuracy (80 particles, SNR 10 and 2)")
    args = parser.parse_args()
    if args.classify_only:
        print("Classification of ribosomes and large subunits, 6 iterations "
              "(accuracy: fraction in the right class)")
        print_table([classification_row(10.0), classification_row(2.0),
                     classification_row(10.0, ribosomes=0.8)])
        return
    count = 60 if args.short else 200
    truth = reference_density(BOX, VOXEL)
    settings = AverageSettings(box=BOX, iterations=5)
    rows = []
    for snr in ((10.0,) if args.short else (10.0, 2.0)):
        field = simulate_particle_field(count, VOXEL, snr=snr, seed=0)
        sub = extract_subtomograms(field.tomogram, field.zyx, BOX)
        for start in ("from data", "truth@90A"):
            rows.append(quality_row(f"field snr {snr:g}", sub.data, sub.origins, field.zyx[sub.indices],
                                    field.angles[sub.indices], truth, start, settings))
            print_table(rows[-1:])
    if not args.short:
        spec = CellSpec(shape=(96, 384, 384), voxel_size=VOXEL, ribosome_density_per_um3=8000.0)
        cell = simulate(spec, ImagingSpec(snr=2.0), seed=1)
        labels = cell.cell.labels["ribosome"].astype(np.float32)
        picks = pick_particles(labels, VOXEL, PickSettings(diameter=250.0, edge=0.0))
        picked = picks[["z", "y", "x"]].to_numpy(float)
        match = match_picks(picked, cell.cell.particles, 125.0 / VOXEL)
        # pair each pick with its true particle for the error measures
        d = np.linalg.norm(picked[:, None] - cell.cell.particles[None], axis=2)
        nearest = d.argmin(axis=1)
        sub = extract_subtomograms(cell.tomogram, picked, BOX)
        idx = nearest[sub.indices]
        print(f"cell: {len(cell.cell.particles)} ribosomes, {len(picked)} picks, F1 {match['f1']:.3f}, "
              f"{len(sub.data)} inside the box margin")
        for start in ("from data", "truth@90A"):
            rows.append(quality_row("cell picks", sub.data, sub.origins, cell.cell.particles[idx],
                                    cell.cell.angles[idx], truth, start, settings))
            print_table(rows[-1:])
    print("\nQuality (resolutions in A; Nyquist 30 A)")
    print_table(rows)
    field = simulate_particle_field(count, VOXEL, snr=10.0, seed=0)
    sub = extract_subtomograms(field.tomogram, field.zyx, BOX)
    print(f"\nSpeed on {torch.get_num_threads()} CPU threads, box {BOX}")
    print_table(timing_rows(sub.data, [60] if args.short else [200, 1000]))


if __name__ == "__main__":
    main()
