"""Time `tomoseg synth` stage by stage and print a table.

    python benchmarks/bench_synth.py            # default size 128 x 512 x 512 at 10 A
    python benchmarks/bench_synth.py --short    # 48 x 192 x 192, for CI smoke runs
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import numpy as np

from napari_tomoseg import tilt_series as ts
from napari_tomoseg.synthetic import CellSpec, ImagingSpec, generate_cell, write_synthetic
from napari_tomoseg.synthetic.simulate import SyntheticTomogram


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    spec = CellSpec(shape=(48, 192, 192)) if args.short else CellSpec()
    imaging = ImagingSpec()
    rows = []

    start = time.perf_counter()
    cell = generate_cell(spec, args.seed)
    rows.append(("build cell (density + 5 label volumes)", time.perf_counter() - start))

    angles = ts.tilt_angles(imaging.tilt_min, imaging.tilt_max, imaging.tilt_step)
    start = time.perf_counter()
    series = -ts.project(cell.density, angles)
    rows.append((f"project {len(angles)} tilts", time.perf_counter() - start))

    rng = np.random.default_rng(1)
    series += rng.normal(0, np.sqrt(series.var() / imaging.snr), series.shape).astype(np.float32)
    start = time.perf_counter()
    tomogram = ts.weighted_backprojection(series, angles, spec.shape[0])
    rows.append(("weighted back-projection", time.perf_counter() - start))

    result = SyntheticTomogram(tomogram=tomogram, cell=cell, imaging=imaging)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_synthetic(result, folder)
        rows.append(("write MRC + STAR files", time.perf_counter() - start))
    total = sum(seconds for _, seconds in rows)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    z, y, x = spec.shape
    print(f"\ntomoseg synth: {x} x {y} x {z} voxels at {spec.voxel_size} A, "
          f"{len(cell.particles)} ribosomes, seed {args.seed}")
    print(f"| {'stage':42s} | {'seconds':>8s} |")
    print(f"|{'-' * 44}|{'-' * 10}|")
    for name, seconds in rows:
        print(f"| {name:42s} | {seconds:8.2f} |")
    print(f"| {'total':42s} | {total:8.2f} |")
    print(f"peak resident memory: {peak_mb:.0f} MB; "
          f"{np.prod(spec.shape) / total / 1e6:.2f} Mvoxel/s end to end")


if __name__ == "__main__":
    main()
