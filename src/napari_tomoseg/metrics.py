"""Scores against ground truth: Dice and IoU, optionally only where nobody labelled."""

from __future__ import annotations

import numpy as np


def dice(prediction: np.ndarray, truth: np.ndarray, where: np.ndarray | None = None) -> float:
    p = np.asarray(prediction).astype(bool)
    t = np.asarray(truth).astype(bool)
    if where is not None:
        p, t = p[where], t[where]
    denominator = p.sum() + t.sum()
    return 1.0 if denominator == 0 else float(2 * np.logical_and(p, t).sum() / denominator)


def iou(prediction: np.ndarray, truth: np.ndarray, where: np.ndarray | None = None) -> float:
    p = np.asarray(prediction).astype(bool)
    t = np.asarray(truth).astype(bool)
    if where is not None:
        p, t = p[where], t[where]
    union = np.logical_or(p, t).sum()
    return 1.0 if union == 0 else float(np.logical_and(p, t).sum() / union)


def best_threshold_dice(probability: np.ndarray, truth: np.ndarray,
                        where: np.ndarray | None = None,
                        thresholds=np.linspace(0.1, 0.9, 9)) -> tuple[float, float]:
    """Best Dice over thresholds (for benchmarks: each method at its best operating point)."""
    scores = [(dice(probability > t, truth, where), float(t)) for t in thresholds]
    return max(scores)
