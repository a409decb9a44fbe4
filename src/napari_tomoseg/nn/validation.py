"""Held-out pixels of the boxes: when to stop training, and what threshold to use.

One quadrant of every box is left out of the loss (``TileBank(holdout=...)``).
Scoring the network on those labelled pixels gives an honest loss for early
stopping and a threshold chosen by Dice there (the lowest within TOLERANCE of
the best, at most CEILING), which is stored with the model, so "above threshold" means
"feature" on data the network did not train on (a 5-box network's best
threshold was 0.97 when 0.5 was assumed).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from .inference import predict_planes
from .tiles import TileBank

THRESHOLDS = np.round(np.arange(0.05, 0.96, 0.05), 2)
# Dice a lower threshold may give up on held-out pixels. Held-out quadrants lie beside trained
# pixels, where the network is surer than elsewhere, and hold 2-6x fewer feature pixels per
# background pixel than a tomogram (50 negative boxes to 5 positive), so their best threshold
# lies above the tomogram's. On the realistic benchmark (3 features x 5/10 boxes x 2 seeds,
# 24 model/tomogram pairs) 0.02 put the stored threshold within 0.1 of the tomogram's best in
# 11 of 24 and lost 0.029 Dice on average; 0.05 did so in 18 of 24 and lost 0.011 (0.04: 19,
# 0.014; 0.1: 12, 0.021). Estimating the tomogram's prevalence from sampled slices
# (adjusted classify-and-count) did worse on membranes (10 of 24, 0.049).
TOLERANCE = 0.05
# The stored threshold never lies above this. Because held-out pixels hold fewer feature
# pixels per background pixel than a tomogram, their Dice can keep rising to the top of the
# grid: 5 of 12 five-box models (seeds 0-5) stored 0.85-0.95 on the realistic benchmark, and
# each did better at 0.8 on the training cell (membrane Dice 0.55-0.58 -> 0.64-0.67,
# ribosome picks F1 0.89-0.92 -> 0.94-0.98) and no worse on the other; see docs/engine.md.
CEILING = 0.8
# The held-out Dice of a handful of boxes is itself uncertain: an interval from resampling the
# boxes (positives and negatives apart, with replacement) says how much, so that a user does
# not read 0.85 from five boxes as a promise about the tomogram.
RESAMPLES = 1000
INTERVAL = (10, 90)  # percentiles


@dataclass(frozen=True)
class HeldOutScore:
    loss: float  # class-balanced cross-entropy on held-out pixels (lower is better)
    dice: float  # best Dice over THRESHOLDS
    threshold: float  # the lowest within TOLERANCE of it, at most CEILING (0.5 without feature)
    dice_at_threshold: float = float("nan")  # what the stored threshold gives there
    interval: tuple[float, float] | None = None  # of dice_at_threshold, over resampled boxes


def score_held_out(network: torch.nn.Module, bank: TileBank,
                   device: torch.device | None = None, rotations: int | None = None) -> HeldOutScore:
    """Score ``network`` on the held-out quadrants of ``bank`` (unrotated tiles).

    ``rotations`` 1 gives the cheap single prediction that early stopping compares;
    None predicts as segmentation will (the kept weights' threshold comes from that).
    """
    was_training = network.training
    network.eval()
    # no mirror: the held-out quadrants lie inside the boxes, a rotation margin (a fifth of
    # the box; real image unless the box meets the tomogram's side, where crop_slice gives
    # zeros) from a tile's side, and mirroring made training 30% slower
    prob = predict_planes(network, bank.images, device, rotations=rotations, mirror=False)
    network.train(was_training)
    held = bank.held_out[:, 0].numpy() > 0.5
    labels = bank.labels[:, 0].numpy() > 0.5
    p = np.clip(prob[held], 1e-6, 1 - 1e-6)
    truth = labels[held]
    if truth.any():
        loss = 0.5 * (-np.log(p[truth]).mean() - np.log(1 - p[~truth]).mean()) \
            if (~truth).any() else -np.log(p[truth]).mean()
    else:
        loss = -np.log(1 - p).mean()
    if not truth.any():
        return HeldOutScore(float(loss), float("nan"), 0.5)
    scores = np.array([_dice(p > t, truth) for t in THRESHOLDS])
    chosen = _chosen_index(scores)
    interval = box_interval(prob > THRESHOLDS[chosen], labels, held, bank.positive)
    return HeldOutScore(float(loss), float(scores.max()), float(THRESHOLDS[chosen]),
                        float(scores[chosen]), interval)


def box_interval(prediction: np.ndarray, truth: np.ndarray, held: np.ndarray,
                 positive: np.ndarray, seed: int = 0) -> tuple[float, float] | None:
    """INTERVAL percentiles of the held-out Dice over boxes resampled with replacement.

    ``prediction``, ``truth`` and ``held`` are (boxes, y, x); positives and negatives are
    drawn apart so every resample keeps the user's mix. None with fewer than two positives.
    """
    axes = (1, 2)
    hits = np.sum(prediction & truth & held, axis=axes).astype(float)
    sizes = np.sum(prediction & held, axis=axes) + np.sum(truth & held, axis=axes).astype(float)
    groups = [np.flatnonzero(positive), np.flatnonzero(~positive)]
    if len(groups[0]) < 2:
        return None
    rng = np.random.default_rng(seed)
    drawn = np.concatenate([rng.choice(g, (RESAMPLES, len(g))) for g in groups if len(g)], axis=1)
    total = sizes[drawn].sum(axis=1)
    dice = np.where(total > 0, 2 * hits[drawn].sum(axis=1) / np.maximum(total, 1), 1.0)
    low, high = np.percentile(dice, INTERVAL)
    return float(low), float(high)


def choose_threshold(scores: np.ndarray) -> float:
    """The lowest of THRESHOLDS whose held-out Dice is within TOLERANCE of the best, at most
    CEILING (see there)."""
    return float(THRESHOLDS[_chosen_index(scores)])


def _chosen_index(scores: np.ndarray) -> int:
    lowest_near_best = int(np.flatnonzero(scores >= np.max(scores) - TOLERANCE)[0])
    return min(lowest_near_best, int(np.searchsorted(THRESHOLDS, CEILING, side="right")) - 1)


def _dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    total = prediction.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * np.logical_and(prediction, truth).sum() / total)


class EarlyStopping:
    """Keeps the best weights by held-out loss; says stop after ``patience`` checks without gain."""

    def __init__(self, patience: int, min_delta: float = 1e-3):
        self.patience = patience
        self.min_delta = min_delta
        self.best: HeldOutScore | None = None
        self.best_step = 0
        self.best_state: dict | None = None
        self.since_best = 0

    def update(self, step: int, score: HeldOutScore, network: torch.nn.Module) -> bool:
        """Record a check; True when training should stop."""
        if self.best is None or score.loss < self.best.loss - self.min_delta:
            self.best, self.best_step, self.since_best = score, step, 0
            self.best_state = copy.deepcopy(network.state_dict())
        else:
            self.since_best += 1
        return self.since_best >= self.patience

    def restore(self, network: torch.nn.Module) -> None:
        if self.best_state is not None:
            network.load_state_dict(self.best_state)


def describe_held_out(info: dict | None, threshold: float, digits: int = 2) -> str | None:
    """'held-out Dice D (10-90% over resampled boxes L-H) at threshold T (best B)', or None.

    The stored threshold lies up to TOLERANCE below the held-out best, so the Dice it gives
    is said first, with its interval over boxes when known; model files from before these
    were recorded give less.
    """
    if not info or info.get("dice") is None:
        return None
    at = info.get("dice_at_threshold")
    if at is None:
        return f"best held-out Dice {info['dice']:.{digits}f}; threshold {threshold:.2f}"
    interval = info.get("interval")
    spread = (f" (10-90% over resampled boxes {interval[0]:.{digits}f}-{interval[1]:.{digits}f})"
              if interval else "")
    return (f"held-out Dice {at:.{digits}f}{spread} at threshold {threshold:.2f} "
            f"(best {info['dice']:.{digits}f})")
