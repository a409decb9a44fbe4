"""What the picker refuses before it starts, and how it words what it dropped.

Kept apart from ``picking`` (the algorithm) so that the CLI, the widget and the jobs share
one wording: a pick run that drops candidates says how many and why, since "0 picks" with
no reason reads as "no particles here".
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .errors import InvalidSettingsError

if TYPE_CHECKING:
    from .picking import PickSettings

# above this share of the map over the threshold, picks are not particles
SATURATED_SHARE = 0.5


class MapWarning(UserWarning):
    """The map itself looks wrong for picking (e.g. mostly above the threshold)."""


def warn_if_saturated(prob: np.ndarray, threshold: float) -> float:
    """Warn when most of the map lies above the threshold (an undertrained model, or a
    threshold far too low): the picks then sit on a flat plateau, anywhere. The share."""
    share = float(np.count_nonzero(prob > threshold)) / max(prob.size, 1)
    if share > SATURATED_SHARE:
        warnings.warn(f"{share:.0%} of the map lies above the threshold {threshold:g}: picks "
                      "there are not particles. Is the model trained (its held-out Dice), or "
                      "the threshold too low?", MapWarning, stacklevel=3)
    return share


def dropped_note(table: pd.DataFrame) -> str:
    """What the picker dropped, for the line that reports the picks ('' when nothing)."""
    parts = []
    if table.attrs.get("flat_or_long"):
        parts.append(f"{table.attrs['flat_or_long']} flat or long peaks dropped")
    if table.attrs.get("less_round"):
        parts.append(less_round_text(table.attrs["less_round"]))
    if table.attrs.get("excluded"):
        parts.append(_excluded_text(table.attrs["excluded"]))
    if table.attrs.get("near_edge"):
        parts.append(f"{table.attrs['near_edge']} within the edge distance dropped")
    return f" ({'; '.join(parts)})" if parts else ""


def excluded_note(table: pd.DataFrame) -> str:
    """The excluded artifacts' share of ``dropped_note`` alone (the widget words the rest)."""
    n = table.attrs.get("excluded", 0)
    return f" ({_excluded_text(n)})" if n else ""


def less_round_text(n: int) -> str:
    """The relative roundness cut's drops, in the CLI's and the widget's words."""
    return f"{n} less round than the map's picks dropped"


def _excluded_text(n: int) -> str:
    return f"{n} peak{'s' if n != 1 else ''} on excluded artifacts dropped"


class ShapeWarning(UserWarning):
    """Many candidate peaks failed the roundness test: the particle may be elongated, or
    larger than the diameter given."""


def too_many_dropped(dropped: int, kept: int) -> bool:
    """Whether the shape test dropped more peaks than half the picks it kept (and 3 or more)."""
    return dropped >= 3 and dropped > kept / 2


def report_shape(dropped: int, kept: int, settings: PickSettings) -> int:
    """Warn when the shape test dropped too many peaks (``too_many_dropped``).

    On the realistic benchmark it dropped 0-13 peaks (the carbon edge's) beside 39-74
    picks, for 42 maps; more means the particles themselves may be long (a saturated 2:1 blob scores
    about 0.1).
    """
    if too_many_dropped(dropped, kept):
        warnings.warn(f"{dropped} peaks with a particle's mass were dropped as flat or long "
                      f"(roundness below {settings.min_roundness:g}) beside {kept} picks kept; "
                      f"check the diameter ({settings.diameter:g} A: a particle larger than "
                      "it looks flat at its peak) or, for an elongated particle, set the min "
                      "roundness to 0 (every shape kept).", ShapeWarning, stacklevel=3)
    return dropped


def check_diameter(diameter: float, shape: tuple[int, ...], voxel_size: float,
                   what: str = "particle") -> None:
    """Refuse a particle larger than the volume (none can be in it, and its ball sums never
    end) or under two voxels across (given in pixels or nanometres, not Angstrom); warn when
    it is wider than the thinnest side: a thin slab cuts every particle, and under IMOD's
    placeholder header of 1 A this gave 0 picks without a word."""
    extent, thinnest = max(shape) * voxel_size, min(shape) * voxel_size
    if diameter < 2 * voxel_size:  # a blob under two voxels across: nothing is found, unsaid
        raise InvalidSettingsError(f"the {what} diameter {diameter:g} A is under two voxels "
                                   f"({voxel_size:g} A each); give the diameter in Angstrom.")
    if diameter > extent:
        raise InvalidSettingsError(f"the {what} diameter {diameter:g} A is larger than the "
                                   f"volume ({extent:g} A across); give the diameter in Angstrom.")
    if diameter > thinnest:
        warnings.warn(f"the {what} diameter {diameter:g} A is wider than the volume's thinnest "
                      f"side ({min(shape)} voxels of {voxel_size:g} A = {thinnest:g} A): every "
                      "one is cut by it. Check the diameter, and the voxel size (IMOD writes "
                      "1 A when it knows none; --voxel-size gives the right one).", MapWarning,
                      stacklevel=3)


def check_same_grid(exclude: np.ndarray, shape: tuple[int, ...], name: str = "the excluded "
                    "region") -> None:
    """Refuse an excluded region (an artifact's map) on another grid than the picked map."""
    if tuple(np.shape(exclude)) != tuple(shape):
        raise InvalidSettingsError(f"{name} is {tuple(np.shape(exclude))} voxels, the probability "
                                   f"map {tuple(shape)}: they must share a grid (exclude a map "
                                   "of the same tomogram).")
