"""A feature's files follow its name: renamed with it, set aside when it is removed.

A session finds a feature's model, map and picks by the feature's name
(``models/NAME.pt``, ``segmentations/NAME.mrc``, ``picks/NAME.json``). A
file left under the name of a removed or renamed feature would be taken for
a new feature of that name: its old map shown, its old picks restored, its
old model adopted after a training that ended with the viewer, or its file
overwritten by the new feature's training. So a rename moves the files, and
a removal moves them into ``removed/NAME-TIME/`` (nothing is deleted: the
user may want them back).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

MODELS, MAPS, PICKS, REMOVED = "models", "segmentations", "picks", "removed"
FILAMENTS = "filaments"


def feature_file_stem(name: str) -> str:
    """A feature's name as it names its files (models, maps, picks)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def model_file(folder: str | os.PathLike, feature: str) -> Path:
    return Path(folder) / MODELS / f"{feature_file_stem(feature)}.pt"


def map_file(folder: str | os.PathLike, feature: str) -> Path:
    return Path(folder) / MAPS / f"{feature_file_stem(feature)}.mrc"


def picks_file(folder: str | os.PathLike, feature: str) -> Path:
    return Path(folder) / PICKS / f"{feature_file_stem(feature)}.json"


def filaments_file(folder: str | os.PathLike, feature: str) -> Path:
    """Points along a feature's traced filaments, as edited (``filament_points``)."""
    return Path(folder) / FILAMENTS / f"{feature_file_stem(feature)}.json"


def previous_model_file(model: Path) -> Path:
    """Where the model a new training replaces is kept (``NAME.previous.pt``)."""
    return model.with_name(model.name.removesuffix(".pt") + ".previous.pt")


MODEL_GENERATIONS = 5  # earlier models kept: NAME.previous.pt, NAME.previous-2.pt, ...


def older_model_files(model: Path) -> list[Path]:
    """The earlier models kept beside ``model``, newest first (``NAME.previous.pt`` first)."""
    first = previous_model_file(model)
    return [first] + [first.with_name(first.name.removesuffix(".pt") + f"-{n}.pt")
                      for n in range(2, MODEL_GENERATIONS + 1)]


def shift_previous_models(model: Path) -> None:
    """Make room for a new ``NAME.previous.pt``: each earlier one moves one place down and
    the oldest of ``MODEL_GENERATIONS`` goes. A third training deleted the first model, which
    may have been the best."""
    older = older_model_files(model)
    for newer, elder in zip(older[-2::-1], older[:0:-1]):
        if newer.is_file():
            os.replace(newer, elder)


def stopped_model_file(model: Path) -> Path:
    """Where the weights of a training that must not replace ``NAME.pt`` are kept
    (``NAME.stopped.pt``): one stopped before its first held-out check (never scored), or one
    that failed part way."""
    return model.with_name(model.name.removesuffix(".pt") + ".stopped.pt")


def checkpoint_model_file(model: Path) -> Path:
    """Where a running training keeps its best weights so far (``NAME.checkpoint.pt``,
    ``jobs.checkpoints``); it outlives only a training that was killed."""
    return model.with_name(model.name.removesuffix(".pt") + ".checkpoint.pt")


def files_of(folder: str | os.PathLike, feature: str) -> list[Path]:
    """The feature's files that exist: model (and the ones it replaced), map, picks (with
    earlier ones and other windows' conflict copies) and traced filaments."""
    model, picks = model_file(folder, feature), picks_file(folder, feature)
    filaments = filaments_file(folder, feature)
    candidates = [model, *older_model_files(model), stopped_model_file(model),
                  checkpoint_model_file(model), map_file(folder, feature),
                  picks, *sorted(picks.parent.glob(picks.name + ".previous*")),
                  *sorted(picks.parent.glob(picks.name + ".conflict*")),
                  filaments, *sorted(filaments.parent.glob(filaments.name + ".previous*"))]
    return [path for path in candidates if path.is_file()]


def aside_folder(folder: str | os.PathLike, feature: str) -> Path:
    """A new ``removed/STEM-TIME/`` folder name for a feature's things (not yet made)."""
    folder = Path(folder)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = folder / REMOVED / f"{feature_file_stem(feature)}-{stamp}"
    n = 1
    while target.exists():  # removed twice within a second: never over the first
        n += 1
        target = folder / REMOVED / f"{feature_file_stem(feature)}-{stamp}-{n}"
    return target


def set_aside(folder: str | os.PathLike, feature: str, files: list[Path] | None = None,
              target: Path | None = None) -> Path | None:
    """Move the feature's files (or ``files``) into ``target`` (default a new
    ``removed/STEM-TIME/``; same sub-folders), all or none; the folder they went to, or
    None when there were none."""
    files = files_of(folder, feature) if files is None else files
    if not files:
        return None
    folder = Path(folder)
    target = target or aside_folder(folder, feature)
    done: list[tuple[Path, Path]] = []
    try:
        for path in files:
            moved = target / path.relative_to(folder)
            moved.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, moved)
            done.append((path, moved))
    except OSError:  # all or nothing: a feature must not keep half its files
        _put_back(done)
        raise
    return target


def _put_back(moved: list[tuple[Path, Path]]) -> None:
    for source, target in reversed(moved):
        os.replace(target, source)


def was_removed(folder: str | os.PathLike, feature: str) -> bool:
    """Whether files of a feature of this name were set aside (it was removed)."""
    return any((Path(folder) / REMOVED).glob(f"{feature_file_stem(feature)}-*"))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def move_files(folder: str | os.PathLike, old: str, new: str) -> list[tuple[Path, Path]]:
    """Give ``old``'s files ``new``'s names (picks keep their old name inside: see
    ``picks_store.rename_saved_picks``); the (old, new) paths, to undo it. Files already under ``new``'s
    names (left by a feature removed before files were set aside) are not the renamed
    feature's: they are set aside first. A failed move puts back what it moved."""
    old_stem, new_stem = feature_file_stem(old), feature_file_stem(new)
    if old_stem == new_stem:
        return []
    ours = files_of(folder, old)
    # on a disk that ignores case, 'Ribosome' -> 'ribosome' finds old's own files under new
    leftovers = [p for p in files_of(folder, new) if not any(_same_file(p, o) for o in ours)]
    set_aside(folder, new, leftovers)
    moved: list[tuple[Path, Path]] = []
    try:
        for source in ours:
            target = source.with_name(new_stem + source.name[len(old_stem):])
            os.replace(source, target)
            moved.append((source, target))
    except OSError:
        _put_back(moved)
        raise
    return moved
