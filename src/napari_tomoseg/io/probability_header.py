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
_THRESHOLD_PATTERN = re.compile(r"tomoseg probability of (.+?); threshold ([0-9.]+)")
_TOMOGRAM_LABEL = "tomoseg tomogram "
_MORE_LABEL = "tomoseg tomogram+ "  # the name goes on: long names span labels
LABEL_LENGTH = 80  # characters of one MRC header label
NAME_LABELS = 4  # at most, of the 10 an MRC header has: names of up to 248 characters


def threshold_label(feature: str, threshold: float) -> str:
    """An MRC header label carrying the model's calibrated threshold (at most 80 characters)."""
    return _THRESHOLD_LABEL.format(feature=feature[:30], threshold=threshold)


def tomogram_labels(name: str) -> tuple[str, ...]:
    """Header labels naming the tomogram a map was made from; none when the name is not
    printable ASCII or longer than NAME_LABELS labels hold (a cut name would be a wrong one:
    the file name is used then)."""
    room = LABEL_LENGTH - len(_MORE_LABEL)
    if not name or not name.isascii() or not name.isprintable() or name.strip() != name \
            or len(name) > room * NAME_LABELS:
        return ()
    parts = [name[i:i + room] for i in range(0, len(name), room)]
    return (_TOMOGRAM_LABEL + parts[0], *(_MORE_LABEL + part for part in parts[1:]))


def _labels(path: str | os.PathLike) -> list[str]:
    try:
        with mrcfile.open(path, mode="r", header_only=True, permissive=True) as mrc:
            return [bytes(lab).decode("ascii", "ignore").rstrip(" \x00") for lab in
                    mrc.header.label[:int(mrc.header.nlabl)]]
    except (OSError, ValueError):
        return []


LABELS_MARK = "tomoseg label volume"  # a Labels layer saved as MRC reopens as Labels


_LEGEND = "tomoseg labels: "
LEGEND_LABELS = 8  # of the 10 an MRC header has: the mark and the 'which label is what'


def legend_labels(names: dict[int, str]) -> tuple[str, ...]:
    """Header labels saying which feature each label value is ("1=ribosome; 2=membrane"):
    IMOD, Amira or EMAN2 showed numbers whose meaning changed with the order of the
    models. None when the legend does not fit or a name cannot be told apart in it."""
    entries = [f"{value}={name}" for value, name in sorted(names.items())]
    if any(not e.isascii() or not e.isprintable() or ";" in e for e in entries):
        return ()
    lines, line = [], ""
    for entry in entries:
        candidate = f"{line}; {entry}" if line else entry
        if len(_LEGEND) + len(candidate) <= LABEL_LENGTH:
            line = candidate
            continue
        if not line or len(_LEGEND) + len(entry) > LABEL_LENGTH:
            return ()
        lines.append(line)
        line = entry
    lines.append(line)
    return tuple(_LEGEND + text for text in lines) if len(lines) <= LEGEND_LABELS else ()


def stored_legend(path: str | os.PathLike) -> dict[int, str]:
    """{label value: feature} written by ``legend_labels`` ({} for other volumes)."""
    legend = {}
    for text in _labels(path):
        if text.startswith(_LEGEND):
            for entry in text[len(_LEGEND):].split("; "):
                value, _, name = entry.partition("=")
                if value.isdigit() and name:
                    legend[int(value)] = name
    return legend


def is_marked_labels(path: str | os.PathLike) -> bool:
    """Whether the header says the file holds a label volume (written from a Labels layer)."""
    return LABELS_MARK in _labels(path)


def stored_tomogram(path: str | os.PathLike) -> str | None:
    """The tomogram name ``segment`` wrote into a map's header, if any."""
    labels = _labels(path)
    for i, text in enumerate(labels):
        if text.startswith(_TOMOGRAM_LABEL) and len(text) > len(_TOMOGRAM_LABEL):
            name = text[len(_TOMOGRAM_LABEL):]
            for more in labels[i + 1:]:
                if not more.startswith(_MORE_LABEL):
                    break
                name += more[len(_MORE_LABEL):]
            return name
    return None


def stored_probability(path: str | os.PathLike) -> tuple[str, float] | None:
    """(feature, threshold) of a probability map written by ``segment``; None for other maps."""
    for text in _labels(path):
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
    """The tomogram a probability map was made from: the name its header carries (maps
    written since it was added), else its file name minus the feature: ``segment`` names its
    maps ``<tomogram>_<feature>.mrc``, so rlnTomoName drops the feature its header (else
    ``feature``) names; ``average`` then finds the picks' tomogram."""
    from ..tomogram import tomogram_name

    stored_name = stored_tomogram(path)
    if stored_name:
        return stored_name
    name = tomogram_name(path)
    stored = stored_probability(path)
    for known in dict.fromkeys(f for f in (stored[0] if stored else None, feature) if f):
        if name.endswith(f"_{known}") and len(name) > len(known) + 1:
            return name[:-len(known) - 1]
    return name
