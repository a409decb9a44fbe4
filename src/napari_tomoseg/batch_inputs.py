"""Which files a batch processes, and what it calls their outputs.

Pure functions of paths and headers: globs expanded, tomoseg's own outputs
(by the manifest or their header marks, never by name) told apart from
tomograms, and one distinct output name per tomogram.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .batch_manifest import Manifest
from .errors import TomosegError

if TYPE_CHECKING:
    from .batch import BatchSettings


def expand_inputs(patterns: Sequence[str]) -> list[str]:
    paths: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if any(c in pattern for c in "*?[") else [pattern]
        paths.extend(str(Path(m).resolve()) for m in matches)
    if not paths:
        raise TomosegError(f"no tomograms match {', '.join(patterns)}.")
    return list(dict.fromkeys(paths))


def _clean(part: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in part) or "_"


def unique_names(paths: Sequence[str | os.PathLike]) -> list[str]:
    """One output name per tomogram, distinct even when files share a name.

    ``a/t.mrc`` and ``b/t.mrc`` become ``a_t`` and ``b_t`` (for each file
    the fewest parent folders that tell it apart); names still equal after that
    (the same file twice, or ``a_t.mrc`` beside ``a/t.mrc``) get ``_2``, ``_3``.
    """
    from .tomogram import tomogram_name

    resolved = [Path(p).resolve() for p in paths]
    names = [tomogram_name(p) for p in resolved]
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    for base, members in groups.items():
        pending = members if len(members) > 1 else []
        for depth in range(1, max(len(resolved[i].parent.parts) for i in members) + 1):
            if not pending:
                break
            tried = {i: "_".join([_clean(p) for p in resolved[i].parent.parts[-depth:]] + [base])
                     for i in members}
            counts = list(tried.values())
            for i in pending:
                if counts.count(tried[i]) == 1:  # this many parent folders tell it apart
                    names[i] = tried[i]
            pending = [i for i in pending if counts.count(tried[i]) > 1]
    taken: set[str] = set()
    for i, name in enumerate(names):
        candidate, n = name, 2
        while candidate in taken:
            candidate, n = f"{name}_{n}", n + 1
        taken.add(candidate)
        names[i] = candidate
    return names


def _own_output(path: Path, out: Path, outputs: set[str]) -> str | None:
    """Why ``path`` is an output of tomoseg rather than a tomogram, or None.

    By the manifest or tomoseg's header marks, never by the name alone: a user's own
    tomogram a_labels.mrc beside a.mrc was skipped as a's label volume, then replaced by it.
    """
    from .io.probability_header import is_marked_labels, stored_probability

    if path.parent == out and path.name in outputs:
        return "listed as an output in the batch manifest"
    found = stored_probability(path)
    if found:
        return f"a probability map of {found[0]} (MRC header)"
    if is_marked_labels(path):
        return "a label volume (MRC header)"
    return None


def split_own_outputs(tomograms: Sequence[str], settings: BatchSettings
                      ) -> tuple[list[str], dict[str, str]]:
    """(tomograms to process, {skipped path: why}).

    With ``-o`` the input folder, a glob of a rerun also matches the first
    run's probability maps and label volumes; segmented as tomograms they
    would add their own picks to the combined STAR files.
    """
    if settings.copick is not None:
        return list(tomograms), {}
    out = Path(settings.output).resolve()
    try:
        entries = Manifest(out).entries
    except TomosegError:  # reported when the batch opens it
        entries = {}
    outputs = {o for e in entries.values() for o in e.get("outputs", [])}
    kept, skipped = [], {}
    for path in tomograms:
        why = _own_output(Path(path).resolve(), out, outputs)
        if why:
            skipped[path] = why
        else:
            kept.append(path)
    return kept, skipped


def skipped_message(skipped: dict[str, str]) -> str:
    """One line: how many inputs were skipped as tomoseg outputs, and why (the first few)."""
    shown = "; ".join(f"{Path(p).name}: {why}" for p, why in list(skipped.items())[:3])
    more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
    return (f"skipped {len(skipped)} input{'s' if len(skipped) != 1 else ''} that are outputs "
            f"of tomoseg, not tomograms ({shown}{more}).")
