"""Probability maps as stored on disk: one rule for 0-1 floats and 0-255 integers.

``tomoseg segment --dtype uint8`` stores probabilities as 0-255 (MRC mode
6); float maps hold 0-1. Merge, pick and the widgets read maps through
``probability_scale`` so a map means the same everywhere. The rule is
decided once per volume (not per slab, where a dim slab of a 0-255 map
would pass for 0-1 values). Anything else (a tomogram given for a map) is
refused: its densities would pass for probabilities and give wrong picks.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidVolumeError

# float16 rounding, or the overshoot of a map resampled with cubic or Fourier interpolation;
# such values are clipped to [0, 1]. A tomogram's densities lie far beyond it.
_SLACK = 0.05


def check_volume_map(shape: tuple[int, ...], doing: str) -> None:
    """Refuse a map that is not a volume: a one-slice MRC (an image, a projection or a 2D
    prediction) gave 0 picks or 0 filaments without a word, which reads as "none here"."""
    if len(shape) != 3 or shape[0] < 2:
        size = " x ".join(str(n) for n in shape)
        raise InvalidVolumeError(f"{doing} needs a 3D probability map of the tomogram; this one "
                                 f"is {size} voxels" + (" (one slice: an image, not a volume)."
                                                        if len(shape) == 3 else "."))


def _not_probabilities(name: str, low: float, high: float) -> InvalidVolumeError:
    return InvalidVolumeError(
        f"{name} holds values from {low:.3g} to {high:.3g}, not probabilities (0-1, or 0-255 "
        "integers): is it a tomogram? Give a probability map (from tomoseg segment).")


def probability_scale(volume: np.ndarray, name: str = "the probability map") -> float:
    """1/255 for an integer map stored as 0-255, else 1; refuses other values.

    0/1 masks of any type stay as they are; a float map above 1 is not a probability.
    """
    values = np.asarray(volume)
    if values.size == 0:
        return 1.0
    low, high = float(values.min()), float(values.max())
    scale = _scale(values.dtype, low, high, name)
    if low * scale < -_SLACK:  # a tomogram normalised to [-1, 1] is no map
        raise _not_probabilities(name, low, high)
    return scale


def header_scale(path, dtype: np.dtype) -> float | None:
    """1/255 for an integer map that ``segment`` wrote (its header names it a tomoseg
    probability map), else None (the rule below decides). A map of a feature the tomogram
    lacks holds only 0s and 1s there, which the 0/1-mask rule read as probability 1: an
    empty carbon map excluded three quarters of a tomogram from picking."""
    from .io.probability_header import stored_probability

    if np.issubdtype(np.dtype(dtype), np.integer) and stored_probability(path) is not None:
        return 1.0 / 255.0
    return None


def open_probability(path) -> tuple[np.ndarray, object]:
    """(map, header info) of a probability MRC; one ``segment`` stored as 0-255 integers
    comes back as float 0-1 (see ``header_scale``), any other as it is stored."""
    from .io.mrc import open_volume

    volume, info = open_volume(path)
    scale = header_scale(path, volume.dtype)
    return (as_probability(volume, scale) if scale else volume), info


def _scale(dtype: np.dtype, low: float, high: float, name: str) -> float:
    if high <= 1.0 + _SLACK:
        return 1.0
    if np.issubdtype(dtype, np.integer) and high <= 255:
        return 1.0 / 255.0
    raise _not_probabilities(name, low, high)


def as_probability(volume: np.ndarray, scale: float | None = None,
                   name: str = "the probability map") -> np.ndarray:
    """float32 probabilities in [0, 1] (``scale`` from ``probability_scale`` when known).

    Values outside [0, 1] once scaled (a tomogram's negative densities) are refused.
    """
    values = np.asarray(volume)
    if values.size == 0:
        return values.astype(np.float32)
    low, high = float(values.min()), float(values.max())  # one pass, for the scale and the check
    scale = _scale(values.dtype, low, high, name) if scale is None else scale
    if low * scale < -_SLACK or high * scale > 1.0 + _SLACK:
        raise _not_probabilities(name, low, high)
    prob = values.astype(np.float32, copy=False)
    prob = prob * np.float32(scale) if scale != 1.0 else prob
    return np.clip(prob, 0.0, 1.0) if low < 0.0 or high * scale > 1.0 else prob
