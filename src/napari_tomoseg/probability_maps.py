"""Probability maps as stored on disk: one rule for 0-1 floats and 0-255 integers.

``tomoseg segment --dtype uint8`` stores probabilities as 0-255 (MRC mode
6); float maps hold 0-1. Merge, pick and the widgets read maps through
``probability_scale`` so a map means the same everywhere. The rule is
decided once per volume (not per slab, where a dim slab of a 0-255 map
would pass for 0-1 values).
"""

from __future__ import annotations

import numpy as np


def probability_scale(volume: np.ndarray) -> float:
    """1/255 for a map stored as 0-255, else 1. 0/1 masks of any type stay as they are."""
    values = np.asarray(volume)
    if values.size == 0:
        return 1.0
    return 1.0 / 255.0 if float(values.max()) > 1.0 + 1e-6 else 1.0


def as_probability(volume: np.ndarray, scale: float | None = None) -> np.ndarray:
    """float32 probabilities in [0, 1] (``scale`` from ``probability_scale`` when known)."""
    scale = probability_scale(volume) if scale is None else scale
    prob = np.asarray(volume).astype(np.float32, copy=False)
    return prob * np.float32(scale) if scale != 1.0 else prob
