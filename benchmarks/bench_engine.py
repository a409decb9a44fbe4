"""Accuracy and speed of the CNN engine on synthetic cells; prints tables.

    python benchmarks/bench_engine.py accuracy [--short]   # Dice: unet, eman2, forest
    python benchmarks/bench_engine.py speed [--short]      # preview, convergence, throughput
    python benchmarks/bench_engine.py memory [--short]     # peak RSS segmenting a big tomogram

Boxes are placed as a user would (10 positives centred on the feature with
masks from the truth, 50 negatives where it is absent; 64 px); Dice is
measured at threshold 0.5 on voxels no box covered, and at each method's
best threshold in brackets.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_tomoseg.annotations import boxes_from_truth, training_mask_volume
from napari_tomoseg.metrics import best_threshold_dice, dice
from napari_tomoseg.nn.inference import iter_segment, segment
from napari_tomoseg.nn.training import TrainingSettings, iter_train, train
from napari_tomoseg.preprocess import Preprocessor
from napari_tomoseg.synthetic import CellSpec, simulate

sys.path.insert(0, str(Path(__file__).parent))
FEATURES = ("membrane", "microtubule", "ribosome")
STEPS = {"unet": 600, "eman2": 400}
# membranes lying in the slice plane are invisible (missing wedge); users box where they see them
MAX_FRACTION = {"membrane": 0.3}


def cell(seed: int, short: bool):
    spec = CellSpec(shape=(64, 256, 256)) if short else CellSpec()
    return simulate(spec, seed=seed)


def score(prob, truth, where) -> str:
    best, threshold = best_threshold_dice(prob, truth, where)
    return f"{dice(prob > 0.5, truth, where):.3f} ({best:.3f}@{threshold:.1f})"


def accuracy(short: bool) -> None:
    from baseline_forest import apply_forest, train_forest

    steps = {k: (v // 3 if short else v) for k, v in STEPS.items()}
    train_cell, other_cell = cell(0, short), cell(1, short)
    tomo = train_cell.tomogram
    rows = []
    for feature in FEATURES:
        truth = train_cell.cell.labels[feature]
        for n_pos, n_neg in ((10, 50), (5, 50)):
            boxes = boxes_from_truth(truth, feature, n_pos, n_neg, size=64, seed=1,
                                     max_fraction=MAX_FRACTION.get(feature, 1.0))
            where = ~training_mask_volume(boxes, truth.shape)
            methods = ["unet", "eman2", "forest"] if n_pos == 10 else ["unet", "eman2"]
            for method in methods:
                start = time.perf_counter()
                if method == "forest":
                    pre = Preprocessor(tomo)
                    forest = train_forest(pre, boxes)
                    train_s = time.perf_counter() - start
                    prob = apply_forest(forest, pre)
                    other = apply_forest(forest, Preprocessor(other_cell.tomogram))
                else:
                    # one network per method, as the tables in docs/engine.md compare them
                    model = train(tomo, boxes, 10.0, TrainingSettings(architecture=method,
                                                                      steps=steps[method],
                                                                      members=1))
                    train_s = time.perf_counter() - start
                    prob = segment(tomo, model, 10.0)
                    other = segment(other_cell.tomogram, model, 10.0)
                reuse = score(other, other_cell.cell.labels[feature], None)
                rows.append((feature, f"{n_pos}/{n_neg}", method, score(prob, truth, where), reuse,
                             f"{train_s:.0f}"))
                print(*rows[-1], sep=" | ", flush=True)
    shape = train_cell.tomogram.shape
    print(f"\nDice on synthetic cells {shape[2]}x{shape[1]}x{shape[0]} at 10 A "
          f"(seed 0 train, seed 1 reuse); steps {steps}")
    print("| feature | boxes +/- | method | Dice same tomogram | Dice other tomogram | train s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


def speed(short: bool) -> None:
    train_cell = cell(0, short)
    tomo = train_cell.tomogram
    rows = []
    for feature in ("membrane", "ribosome"):
        truth = train_cell.cell.labels[feature]
        boxes = boxes_from_truth(truth, feature, 10, 50, size=64, seed=1,
                                 max_fraction=MAX_FRACTION.get(feature, 1.0))
        where = ~training_mask_volume(boxes, truth.shape)
        held_out = slice(tomo.shape[0] // 2 - 8, tomo.shape[0] // 2 + 8)
        for arch in ("unet", "eman2"):
            steps = (300 if short else 800) if arch == "unet" else (100 if short else 400)
            every = max(steps // 20, 1)
            start = time.perf_counter()
            first_preview, curve = None, []
            pre = Preprocessor(tomo[held_out])
            for update in iter_train(tomo, boxes, 10.0, TrainingSettings(architecture=arch,
                                                                         steps=steps),
                                     preview_z=tomo.shape[0] // 2):
                if first_preview is None and update.preview is not None:
                    first_preview = time.perf_counter() - start
                if update.step % every == 0:
                    pause = time.perf_counter()
                    prob = segment(tomo[held_out], update.model, 10.0, preprocessor=pre)
                    d = dice(prob > 0.5, truth[held_out], where[held_out])
                    curve.append((update.step, pause - start, d))
                    start += time.perf_counter() - pause  # evaluation is not training time
            final = np.mean([d for _, _, d in curve[-3:]])
            reached = next(t for _, t, d in curve if d >= final - 0.02)
            rows.append((feature, arch, f"{first_preview:.2f}", f"{reached:.1f}",
                         f"{final:.3f}", f"{curve[-1][1] / curve[-1][0]:.3f}"))
            print(*rows[-1], sep=" | ", flush=True)
    print("\nTraining speed on this CPU "
          f"({torch.get_num_threads()} threads), 10 positive / 50 negative boxes")
    print("| feature | network | s to first preview | s to within 0.02 Dice of converged "
          "| converged Dice (16 held-out slices) | s per step |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    throughput(short)


def throughput(short: bool) -> None:
    from napari_tomoseg.nn.model_file import TrainedModel
    from napari_tomoseg.nn.models import build_model
    from napari_tomoseg.preprocess import PreprocessSettings

    shape = (32, 512, 512) if short else (128, 512, 512)
    volume = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    rows = []
    for arch in ("unet", "eman2"):
        model = TrainedModel(build_model(arch).eval(), arch, {}, PreprocessSettings(), 10.0, 64)
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            for _ in iter_segment(volume, model, 10.0, Path(folder) / "p.mrc", batch_slices=4):
                pass
            ours = time.perf_counter() - start
        plain = _plain_pytorch_seconds(model.network, volume[:8]) * shape[0] / 8
        rows.append((arch, f"{ours:.1f}", f"{np.prod(shape) / ours / 1e6:.2f}",
                     f"{plain:.1f}", f"{plain / ours:.2f}"))
    print(f"\nSegmentation of a {shape[2]}x{shape[1]}x{shape[0]} tomogram, one feature "
          "(ours: preprocessing + network + writing float16 MRC; plain: network alone, "
          "default NCHW layout, extrapolated from 8 slices)")
    print("| network | ours s | Mvoxel/s | plain PyTorch s | speed-up |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


@torch.no_grad()
def _plain_pytorch_seconds(network, slices: np.ndarray) -> float:
    network = network.to(memory_format=torch.contiguous_format)
    context = getattr(network, "context", 0)
    start = time.perf_counter()
    for z in range(0, len(slices), 4):
        planes = torch.from_numpy(slices[z:z + 4])[:, None].repeat(1, 2 * context + 1, 1, 1)
        network(planes)
    return time.perf_counter() - start


def memory(short: bool) -> None:
    shape = (64, 1024, 1024) if short else (256, 1024, 1024)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "big.mrc"
        from napari_tomoseg.io.mrc import MrcStream

        rng = np.random.default_rng(0)
        with MrcStream(path, shape, np.float32, 10.0) as out:
            for z in range(0, shape[0], 16):
                out.write(z, rng.normal(size=(min(16, shape[0] - z),) + shape[1:]))
        code = (
            "import resource, sys, time\n"
            "from napari_tomoseg.io.mrc import open_volume\n"
            "from napari_tomoseg.nn.inference import iter_segment\n"
            "from napari_tomoseg.nn.model_file import TrainedModel\n"
            "from napari_tomoseg.nn.models import build_model\n"
            "from napari_tomoseg.preprocess import PreprocessSettings\n"
            "import torch\n"
            "model = TrainedModel(build_model('unet').eval(), 'unet', {}, PreprocessSettings(), 10.0, 64)\n"
            "torch.zeros(1)\n"
            "status = open('/proc/self/status').read()\n"
            "base = int(status.split('VmRSS:')[1].split()[0])  # current, not the import peak\n"
            f"volume, info = open_volume('{path}')\n"
            "t = time.perf_counter()\n"
            f"for _ in iter_segment(volume, model, 10.0, '{folder}/prob.mrc', batch_slices=4): pass\n"
            "status = open('/proc/self/status').read()\n"
            "# VmHWM, not ru_maxrss: ru_maxrss survives exec and would include the parent's\n"
            "# resident size at fork time (the parent has just written the tomogram)\n"
            "peak = int(status.split('VmHWM:')[1].split()[0])\n"
            "print(base / 1024, peak / 1024, time.perf_counter() - t)\n")
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        base, peak, seconds = map(float, out.stdout.split())
    size_gb = np.prod(shape) * 4 / 1e9
    print(f"\nPeak memory segmenting a {shape[2]}x{shape[1]}x{shape[0]} float32 tomogram "
          f"({size_gb:.1f} GB on disk) with the unet, float16 output")
    print("| resident before (MB, model loaded) | peak (MB) | increase (MB) | seconds |")
    print("|---|---|---|---|")
    print(f"| {base:.0f} | {peak:.0f} | {peak - base:.0f} | {seconds:.0f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=("accuracy", "speed", "memory", "throughput"))
    parser.add_argument("--short", action="store_true")
    args = parser.parse_args()
    {"accuracy": accuracy, "speed": speed, "memory": memory,
     "throughput": throughput}[args.what](args.short)
