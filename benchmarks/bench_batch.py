"""Batch throughput with 1 and 2 local dask workers against one plain process; prints a table.

    python benchmarks/bench_batch.py [--tomograms 6]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_tomoseg.annotations import boxes_from_truth
from napari_tomoseg.batch import BatchSettings, make_client, process_tomogram, run_batch
from napari_tomoseg.io.mrc import write_volume
from napari_tomoseg.nn.model_file import save_model
from napari_tomoseg.nn.training import TrainingSettings, train
from napari_tomoseg.synthetic import CellSpec, simulate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tomograms", type=int, default=6)
    args = parser.parse_args()
    spec = CellSpec(shape=(48, 192, 192))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = []
        for seed in range(args.tomograms):
            result = simulate(spec, seed=seed)
            paths.append(str(write_volume(folder / f"t{seed}.mrc", result.tomogram, 10.0)))
            if seed == 0:
                boxes = boxes_from_truth(result.cell.labels["ribosome"], "ribosome", 10, 50, 64)
                model = train(result.tomogram, boxes, 10.0, TrainingSettings(steps=100, members=1))
                model_path = str(save_model(model, folder / "ribosome.pt"))
        rows = []
        settings = BatchSettings(models=(model_path,), output=str(folder / "plain"),
                                 pick=("ribosome",))
        start = time.perf_counter()
        for path in paths:
            process_tomogram(path, settings)
        plain = time.perf_counter() - start
        rows.append(("one process, no dask", plain))
        for workers in (1, 2):
            client = make_client(workers)
            try:
                client.submit(sum, [1]).result()  # workers up before timing
                settings = BatchSettings(models=(model_path,), output=str(folder / f"w{workers}"),
                                         pick=("ribosome",))
                start = time.perf_counter()
                run_batch(paths, settings, client=client)
                rows.append((f"dask LocalCluster, {workers} worker(s)", time.perf_counter() - start))
            finally:
                client.close()
    print(f"\nBatch of {args.tomograms} synthetic tomograms {spec.shape[2]}x{spec.shape[1]}x"
          f"{spec.shape[0]}: segment (unet), merge, pick ribosomes")
    print("| run | s | tomograms/min | per-task overhead vs one process (s) |")
    print("|---|---|---|---|")
    for name, seconds in rows:
        overhead = (seconds - plain) / args.tomograms if "1 worker" in name else float("nan")
        print(f"| {name} | {seconds:.1f} | {60 * args.tomograms / seconds:.1f} | "
              f"{'' if np.isnan(overhead) else f'{overhead:.2f}'} |")


if __name__ == "__main__":
    main()
