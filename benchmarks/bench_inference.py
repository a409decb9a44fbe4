"""Seconds per feature and peak memory of segmentation: the eager reference against the fast path.

    python benchmarks/bench_inference.py            # 32 slices of 512x512, scaled to 128
    python benchmarks/bench_inference.py --short    # 8 slices of 512x512 (not written)
    python benchmarks/bench_inference.py --full     # 512x512x128 and 1024x1024x256 in full

Freshly initialised networks (``build_model``; accuracy does not matter for
time), binning 1, so every slice of the given size goes through the network.
Each figure comes from its own process, so its peak RSS is its own:

* reference: the forward as it was at commit c3e0a6d: whole slices, torch.no_grad,
  batches of 4 slices, the network itself (channels_last only for eman2);
* fast: ``predict_planes`` on the frozen copy from ``inference_network``
  (BatchNorm folded, FFT for 15x15 kernels, tiles of DEFAULT_TILE);
* segment: the whole fast path, ``iter_segment`` into an MRC (preprocessing,
  un-binning and writing included), in float32: what a user waits for per feature;
* seg-auto: the same with the default precision (bfloat16 where the CPU has it);
* seg-bin2: the model works at binning 2, as by default for a 10 A tomogram;
* default: seg-bin2 with the default U-Net's 4 averaged quarter turns (eman2: 1).

All rows but the last run one prediction per slice (``rotations`` 1), so
they compare the same work.

``--features`` times all features of one tomogram instead (each feature's
default network and binning: 2, the membrane's 1 with the 3D stem): four models one after the other (apart) against
``jobs.segment.segment_tomogram``, which runs them in one pass and
preprocesses each slice once for all (one-pass).

Reference and fast run in turn in the same call; compare their ratio. The
load average before each run is printed: above ~0.5 the machine was shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
RESULTS = Path(__file__).parent / "results" / "inference.txt"
THREADS: dict[str, str] = {}  # --threads N: OMP_NUM_THREADS for the measured processes


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def _peak_mb() -> float:
    """VmHWM: ru_maxrss survives exec and can report the parent's size (docs/engine.md)."""
    with open("/proc/self/status") as handle:
        line = next(l for l in handle if l.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _model(architecture: str, seed: int = 0, rotations: int | None = None):
    from napari_tomoseg.nn.model_file import TrainedModel
    from napari_tomoseg.nn.models import build_model
    from napari_tomoseg.preprocess import PreprocessSettings

    torch.manual_seed(seed)
    mode = "eman2" if architecture == "eman2" else "slices"
    parameters = {} if rotations is None else {"rotations": rotations}
    return TrainedModel(network=build_model(architecture, parameters).eval(),
                        architecture=architecture, parameters=parameters, preprocess=PreprocessSettings(mode=mode), voxel_size=10.0,
                        box_size=64)


def _reference(network, planes: np.ndarray) -> None:
    """The eager forward of c3e0a6d, batches of 4 whole slices."""
    from torch.nn import functional as F

    with torch.no_grad():
        for i in range(0, len(planes), 4):
            x = torch.from_numpy(planes[i:i + 4])
            if network.channels_last_on_cpu:
                x = x.contiguous(memory_format=torch.channels_last)
            prob = network.probability(network(x))
            F.interpolate(prob, size=x.shape[-2:], mode="bilinear", align_corners=False)


def _fast(network, planes: np.ndarray) -> None:
    from napari_tomoseg.nn.fast_forward import inference_network
    from napari_tomoseg.nn.inference import predict_planes

    fast = inference_network(network, torch.device("cpu"))
    for i in range(0, len(planes), 4):
        predict_planes(fast, planes[i:i + 4], torch.device("cpu"))


SEGMENT_METHODS = {  # method: (precision, binning, rotations; None: the default)
    "segment": ("float32", 1, 1), "seg-auto": ("auto", 1, 1), "seg-bin2": ("auto", 2, 1),
    "default": ("auto", 2, None)}
FEATURE_METHODS = ("apart", "one-pass")
FEATURE_NAMES = ("membrane", "ribosome", "microtubule", "actin")  # membrane: the 3D stem
N_FEATURES = len(FEATURE_NAMES)


def _all_features(data: np.ndarray, method: str) -> None:
    """The four features' default U-Nets at their default binning for 10 A (2; the membrane's
    1, with the 3D stem) over one tomogram: one after the other, or in one pass."""
    from napari_tomoseg.jobs import run_job
    from napari_tomoseg.jobs.segment import SegmentOptions, segment_tomogram
    from napari_tomoseg.nn.inference import iter_segment

    from napari_tomoseg.nn.model_file import TrainedModel
    from napari_tomoseg.nn.models import build_model, default_ensemble, default_parameters
    from napari_tomoseg.preprocess import default_preprocessing

    models = []
    for index, feature in enumerate(FEATURE_NAMES):  # each with its default network(s)
        torch.manual_seed(index)
        parameters = default_parameters("unet", feature)
        ensemble = default_ensemble("unet", feature)  # ribosomes, microtubules: three
        parameters = {**parameters, "members": ensemble[0]} if ensemble else parameters
        models.append(TrainedModel(network=build_model("unet", parameters).eval(),
                                   architecture="unet", parameters=parameters,
                                   preprocess=default_preprocessing(10.0, 64, feature=feature),
                                   voxel_size=10.0, box_size=64, feature=feature))
    with tempfile.TemporaryDirectory() as folder:
        outputs = [Path(folder) / f"{m.feature}.mrc" for m in models]
        if method == "apart":
            for model, output in zip(models, outputs):
                for _ in iter_segment(data, model, 10.0, output, device="cpu"):
                    pass
        else:
            run_job(segment_tomogram(data, 10.0, (0.0, 0.0, 0.0), models, outputs,
                                     SegmentOptions(device="cpu")))


def one(architecture: str, shape: tuple[int, int, int], method: str) -> dict:
    """Time one method in this process; peak RSS above what the input data holds."""
    rotations = SEGMENT_METHODS[method][2] if method in SEGMENT_METHODS else 1
    model = _model(architecture, rotations=rotations)
    rng = np.random.default_rng(0)
    if method in SEGMENT_METHODS or method in FEATURE_METHODS:
        data = rng.standard_normal(size=shape, dtype=np.float32)  # no float64 copy in the peak
    else:  # preprocessed planes: the network's input, (slices, channels, y, x) in [-1, 1]
        channels = 2 * model.network.context + 1
        data = rng.random((shape[0], channels) + shape[1:], dtype=np.float32)
        data = np.subtract(np.multiply(data, 2, out=data), 1, out=data)
    if network_warm := method in ("reference", "fast"):  # primitive creation is start-up
        (_reference if method == "reference" else _fast)(model.network, data[:1])
    before = _rss_mb()
    start = time.perf_counter()
    if method in FEATURE_METHODS:
        _all_features(data, method)
    elif method in SEGMENT_METHODS:
        from dataclasses import replace

        from napari_tomoseg.nn.inference import iter_segment

        precision, binning, _ = SEGMENT_METHODS[method]
        model.preprocess = replace(model.preprocess, binning=binning)
        with tempfile.TemporaryDirectory() as folder:
            for _ in iter_segment(data, model, 10.0, Path(folder) / "p.mrc", device="cpu",
                                  precision=precision):
                pass
    else:
        (_reference if method == "reference" else _fast)(model.network, data)
    seconds = time.perf_counter() - start
    peak = _peak_mb()
    return {"seconds": seconds, "peak_mb": peak, "before_mb": before, "warm": network_warm}


def _run(architecture: str, shape, method: str) -> dict:
    load = os.getloadavg()[0]
    command = [sys.executable, __file__, "--one", architecture, "x".join(map(str, shape)), method]
    out = subprocess.run(command, capture_output=True, text=True, check=True,
                         env={**os.environ, **THREADS}).stdout
    return {**json.loads(out.strip().splitlines()[-1]), "load": load}


def table(shapes) -> str:
    """Rows per network and size; s/feature scaled from the slices measured to the target depth."""
    lines = ["network  size (measured z)    method     s/feature  speed-up  peak RSS MB (beyond data)"
             "  load",
             "-------  -------------------  ---------  ---------  --------  -------------------------"
             "  ----"]
    for shape, depth in shapes:
        for architecture in ("unet", "eman2"):
            methods = ("reference", "fast", "segment", "seg-auto", "seg-bin2", "default")
            results = {m: _run(architecture, shape, m) for m in methods}
            ref = results["reference"]["seconds"]
            size = f"{shape[2]}x{shape[1]}x{depth} ({shape[0]})"
            for method, r in results.items():
                ratio = f"{ref / r['seconds']:.2f}x" if method != "reference" else "1"
                lines.append(f"{architecture:7}  {size:19}  "
                             f"{method:9}  {r['seconds'] * depth / shape[0]:9.1f}  {ratio:>8}  "
                             f"{r['peak_mb']:6.0f} ({r['peak_mb'] - r['before_mb']:5.0f})"
                             f"{'':13}  {r['load']:.1f}")
                print(lines[-1], flush=True)
    return "\n".join(lines)


def features_table(shape, depth: int) -> str:
    """All features of one tomogram: apart against one pass, in turn, same call."""
    lines = [f"{N_FEATURES} default U-Nets, bin 2  size (measured z)    method     s for all  "
             "speed-up  peak RSS MB (beyond data)  load",
             "-------------------  -------------------  ---------  ---------  --------  "
             "-------------------------  ----"]
    results = {m: _run("unet", shape, m) for m in FEATURE_METHODS}
    apart = results["apart"]["seconds"]
    size = f"{shape[2]}x{shape[1]}x{depth} ({shape[0]})"
    for method, r in results.items():
        lines.append(f"{'':19}  {size:19}  {method:9}  {r['seconds'] * depth / shape[0]:9.1f}  "
                     f"{apart / r['seconds']:7.2f}x  {r['peak_mb']:6.0f} "
                     f"({r['peak_mb'] - r['before_mb']:5.0f}){'':13}  {r['load']:.1f}")
        print(lines[-1], flush=True)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--features", action="store_true",
                        help=f"all {N_FEATURES} features of one tomogram: apart vs one pass")
    parser.add_argument("--one", nargs=3, metavar=("ARCH", "ZxYxX", "METHOD"))
    args = parser.parse_args()
    if args.threads:
        THREADS["OMP_NUM_THREADS"] = str(args.threads)
    if args.one:
        architecture, size, method = args.one
        print(json.dumps(one(architecture, tuple(int(v) for v in size.split("x")), method)))
        return
    from realistic import provenance

    shapes = [((8 if args.short else 32, 512, 512), 128)]
    if args.full:
        shapes = [((128, 512, 512), 128), ((256, 1024, 1024), 256)]
    text = features_table(*shapes[0]) if args.features else table(shapes)
    header = (f"# bench_inference.py{' --short' if args.short else ''}"
              f"{' --full' if args.full else ''}{' --features' * args.features}{f' --threads {args.threads}' * bool(args.threads)}"
              f"\n# {provenance()}\n"
              f"# load average at the end: {os.getloadavg()[0]:.1f}\n")
    print(header)
    if not args.short:
        RESULTS.parent.mkdir(exist_ok=True)
        with open(RESULTS, "a") as handle:  # runs accumulate: busy and quiet ones side by side
            handle.write(header + text + "\n\n")


if __name__ == "__main__":
    main()
