"""The calibrated threshold travels with a probability map, in its MRC header labels.

``segment`` writes the model's threshold (chosen on held-out pixels) into a
header label; ``pick`` and ``merge`` use it when no threshold is given, so
"above threshold" means the same thing from training to particles.
"""

from __future__ import annotations

import os
import re

import mrcfile


_THRESHOLD_LABEL = "tomoseg probability of {feature}; threshold {threshold:.3f}"
_THRESHOLD_PATTERN = re.compile(r"tomoseg probability of (\S+); threshold ([0-9.]+)")


def threshold_label(feature: str, threshold: float) -> str:
    """An MRC header label carrying the model's calibrated threshold (at most 80 characters)."""
    return _THRESHOLD_LABEL.format(feature=feature[:30], threshold=threshold)


def stored_probability(path: str | os.PathLike) -> tuple[str, float] | None:
    """(feature, threshold) of a probability map written by ``segment``; None for other maps."""
    try:
        with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
            labels = [bytes(lab).decode("ascii", "ignore") for lab in
                      mrc.header.label[:int(mrc.header.nlabl)]]
    except (OSError, ValueError):
        return None
    for text in labels:
        found = _THRESHOLD_PATTERN.search(text)
        if found:
            value = float(found.group(2))
            return (found.group(1), value) if 0 < value < 1 else None
    return None


def stored_threshold(path: str | os.PathLike) -> float | None:
    """The threshold a probability map's model chose on held-out pixels, if its header says."""
    found = stored_probability(path)
    return found[1] if found else None


def map_tomogram_name(path: str | os.PathLike, feature: str | None = None) -> str:
    """The tomogram a probability map was made from: ``segment`` names its maps
    ``<tomogram>_<feature>.mrc``, so rlnTomoName drops the feature its header (else
    ``feature``) names; ``average`` then finds the picks' tomogram."""
    from ..tomogram import tomogram_name

    name = tomogram_name(path)
    stored = stored_probability(path)
    for known in dict.fromkeys(f for f in (stored[0] if stored else None, feature) if f):
        if name.endswith(f"_{known}") and len(name) > len(known) + 1:
            return name[:-len(known) - 1]
    return name
