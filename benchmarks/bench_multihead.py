"""One network for every feature (a shared trunk with one output per feature) against one each.

    python benchmarks/bench_multihead.py [--boxes 5 10] [--seeds 3] [--per-feature 16]
        [--out FILE]

Issue #17 asks whether several features of a tomogram can come from one
pass of a network with a shared trunk. Here one U-Net (the default: context
2, width 16, 3 levels, averaged quarter turns) has one output channel per
feature (ribosome, membrane, microtubule) and trains on the boxes of all
three at once: each step draws ``--per-feature`` tiles from every feature's
boxes, and each output's loss counts only its own feature's tiles (a
membrane box says nothing about ribosomes). Early stopping watches the sum
of the held-out losses; each output keeps its own threshold from its
held-out quadrants. It is then scored on the realistic cells exactly as
bench_realistic.py scores one network per feature (Dice, picks), and the
time of one forward over a 512 x 512 x 128 tomogram's binned slices is
timed for 1 output against 3 (the head is a 1x1 convolution, so the trunk
is the cost). Compare with the unet rows of results/realistic.txt.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
import realistic as rs  # noqa: E402
from bench_realistic import row_cells, score, write_table  # noqa: E402

from napari_tomoseg.nn.inference import predict_planes, segment  # noqa: E402
from napari_tomoseg.nn.model_file import TrainedModel  # noqa: E402
from napari_tomoseg.nn.models import DEFAULT_PARAMETERS, UNet25D, build_model  # noqa: E402
from napari_tomoseg.nn.tiles import TileBank  # noqa: E402
from napari_tomoseg.nn.validation import EarlyStopping, score_held_out  # noqa: E402
from napari_tomoseg.preprocess import Preprocessor, default_preprocessing  # noqa: E402

FEATURES = ("ribosome", "membrane", "microtubule")


class OneOutput(nn.Module):
    """Output ``k`` of a multi-output U-Net, as the single-output network scoring expects."""

    def __init__(self, network: UNet25D, k: int):
        super().__init__()
        self.network, self.k = network, k
        self.rotations = network.rotations
        self.symmetry = getattr(network, "symmetry", "any")
        self.size_multiple = network.size_multiple
        self.receptive_halo = None  # held-out tiles are small: whole planes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x)[:, self.k:self.k + 1]

    probability = staticmethod(torch.sigmoid)


def multi_output_unet(n: int) -> UNet25D:
    network = build_model("unet")
    network.head = nn.Conv2d(network.head.in_channels, n, 1)
    return network


def single_output(network: UNet25D, k: int) -> UNet25D:
    """A plain U-Net whose weights are the trunk and output ``k``: segments like any model."""
    one = copy.deepcopy(network)
    head = nn.Conv2d(network.head.in_channels, 1, 1)
    with torch.no_grad():
        head.weight.copy_(network.head.weight[k:k + 1])
        head.bias.copy_(network.head.bias[k:k + 1])
    one.head = head
    return one.eval()


def held_out_losses(network, banks) -> list:
    return [score_held_out(OneOutput(network, k), bank, rotations=1) for k, bank in enumerate(banks)]


def train_shared(banks, seed: int, per_feature: int, steps: int = 3000, check_every: int = 20,
                 patience: int = 10, min_steps: int = 150):
    """(network, held-out scores of the kept weights, steps, seconds)."""
    torch.manual_seed(seed)
    network = multi_output_unet(len(banks))
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-3)
    stopper = EarlyStopping(patience)
    start = time.perf_counter()
    for step in range(1, steps + 1):
        network.train()
        batches = [bank.batch(rng, per_feature) for bank in banks]
        output = network(torch.cat([b[0] for b in batches]))
        loss = 0.0
        for k, (_, labels, weights) in enumerate(batches):
            part = output[k * per_feature:(k + 1) * per_feature, k:k + 1]
            loss = loss + network.loss(part, labels, weights)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        if step % check_every == 0:
            if step < min(min_steps, steps):  # as iter_train: early checks are noisy
                continue
            scores = held_out_losses(network, banks)
            total = type(scores[0])(sum(s.loss for s in scores), 0.0, 0.5)
            if stopper.update(step, total, network):
                break
    stopper.restore(network)
    network.eval()
    final = [score_held_out(OneOutput(network, k), bank) for k, bank in enumerate(banks)]
    return network, final, step, time.perf_counter() - start


def forward_seconds(n_outputs: int, repeats: int = 2) -> float:
    """One pass over 64 binned 256 x 256 slices (a 512 x 512 x 128 tomogram at binning 2)."""
    torch.manual_seed(0)
    network = multi_output_unet(n_outputs).eval() if n_outputs > 1 else build_model("unet").eval()
    planes = np.random.default_rng(0).normal(size=(64, 5, 256, 256)).astype(np.float32)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(0, 64, 8):
            _ = predict_planes(OneOutput(network, 0) if n_outputs > 1 else network,
                               planes[i:i + 8], rotations=4)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--boxes", nargs="+", type=int, default=[5, 10])
    parser.add_argument("--seeds", type=lambda v: max(1, int(v)), default=3)
    parser.add_argument("--per-feature", type=int, default=16,
                        help="tiles of each feature per step (16: a single network's batch)")
    parser.add_argument("--steps", type=int, default=3000, help="at most (a short smoke run)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    provenance = rs.provenance()
    cells = [rs.load_cell(seed, False) for seed in (0, 1)]
    settings = default_preprocessing(10.0, 64)
    pre = Preprocessor(cells[0]["tomogram"], settings)
    context = DEFAULT_PARAMETERS["unet"]["context"]
    rows = []
    for n_pos in args.boxes:
        boxes = {f: rs.user_boxes(cells[0], f, n_pos, 50) for f in FEATURES}
        runs: dict[str, list] = {f: [] for f in FEATURES}
        seconds = []
        for seed in range(args.seeds):
            banks = [TileBank(pre, boxes[f], context, holdout=0.25, seed=seed) for f in FEATURES]
            network, final, steps, took = train_shared(banks, seed, args.per_feature,
                                                         steps=args.steps)
            seconds.append(took)
            print(f"{n_pos}/50 seed {seed}: {steps} steps in {took:.0f} s, thresholds "
                  f"{[s.threshold for s in final]}", flush=True)
            for k, feature in enumerate(FEATURES):
                model = TrainedModel(network=single_output(network, k), architecture="unet",
                                     parameters=dict(DEFAULT_PARAMETERS["unet"]),
                                     preprocess=settings, voxel_size=10.0, box_size=64,
                                     feature=feature, threshold=final[k].threshold)
                probs = [segment(c["tomogram"], model, 10.0) for c in cells]
                runs[feature].append(score(feature, boxes[feature], cells, probs,
                                           final[k].threshold))
        for feature in FEATURES:
            rows.append([feature, f"{n_pos}/50", f"shared x{len(FEATURES)}",
                         *row_cells(feature, runs[feature]), f"{np.mean(seconds):.0f} (all)"])
            print(" | ".join(rows[-1]), flush=True)
    one, three = forward_seconds(1), forward_seconds(len(FEATURES))
    lines = [f"# Shared trunk, {provenance}",
             f"# realistic cells as in realistic.txt; {args.per_feature} tiles per feature per "
             f"step; {args.seeds} training seed(s) per row: mean (range); train s is for all "
             f"{len(FEATURES)} features together",
             f"# forward over 64 binned 256x256 slices, 4 quarter turns: 1 output {one:.2f} s, "
             f"{len(FEATURES)} outputs {three:.2f} s (one network each: "
             f"{len(FEATURES) * one:.2f} s)"]
    write_table(lines, rows, args.out)


if __name__ == "__main__":
    main()
