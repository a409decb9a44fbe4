"""Picks kept in an annotation session, so that checking them is never lost.

Picking and the accept / reject judgements of quality control happen in
the viewer; before this store they lived only in a Points layer, and
closing the viewer lost them (the tutorial promised that everything is
saved). Each feature's picks are one JSON file in the session folder,
``picks/FEATURE.json``, rewritten whole (atomically) after every change:
the points in tomogram voxels (z, y, x), their per-point values (score,
status, roundness, ...), the tomogram's frame and the score cut in use.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import TomosegError
from .io.atomic import atomic_path
from .feature_files import FILAMENTS, PICKS, picks_file

VERSION = 1
FOLDER = PICKS


@dataclass
class SavedPicks:
    feature: str
    points: np.ndarray  # (n, 3) z, y, x in tomogram voxels
    values: pd.DataFrame  # one row per point: score, score_norm, status, ...
    metadata: dict = field(default_factory=dict)  # the tomogram's frame (layer_data)
    min_score: float = 0.0
    diameter: float | None = None  # Angstrom, as picked


def picks_path(folder: str | os.PathLike, feature: str) -> Path:
    """Named as the feature's model and map are (the session refuses names that collide)."""
    return picks_file(folder, feature)


def _plain(value):
    """A JSON value for a table cell: NaN (a point added by hand has no score) as None."""
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    return value.item() if isinstance(value, np.generic) else value


def save_picks(folder: str | os.PathLike, picks: SavedPicks, path: Path | None = None) -> Path:
    """Write ``picks`` into the session ``folder`` (whole or not at all), or at ``path``."""
    points = np.asarray(picks.points, float).reshape(-1, 3)
    if len(picks.values) != len(points):
        raise ValueError(f"{len(points)} points but {len(picks.values)} rows of values")
    columns = [str(c) for c in picks.values.columns]
    rows = [[_plain(v) for v in row] for row in picks.values.itertuples(index=False)]
    dtypes = {str(c): picks.values[c].dtype.kind for c in picks.values.columns}
    record = {"version": VERSION, "feature": picks.feature, "points": points.round(3).tolist(),
              "columns": columns, "dtypes": dtypes, "rows": rows, "metadata": picks.metadata,
              "min_score": float(picks.min_score), "diameter": picks.diameter}
    path = path or picks_path(folder, picks.feature)
    path.parent.mkdir(exist_ok=True)  # in the session folder; a deleted session is not remade
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(record, default=_plain))
    return path


class PicksConflictError(TomosegError):
    """Another window saved a feature's picks since this one read or wrote them; ``kept``
    is where this window's picks went."""

    def __init__(self, kept: Path, message: str):
        super().__init__(message)
        self.kept = kept


def file_stamp(path: Path) -> list | None:
    """What changes whenever a file is written anew (an atomic write makes a new inode)."""
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_ino, st.st_mtime_ns, st.st_size]


def conflict_path(folder: str | os.PathLike, feature: str) -> Path:
    """``FEATURE.json.conflict``, or ``-2``, ``-3`` ... when taken: one window's copy never
    replaces another's (not *.json: never restored as picks)."""
    path = picks_path(folder, feature)
    first = path.with_name(path.name + ".conflict")
    return next(p for p in (first.with_name(first.name + (f"-{n}" if n > 1 else ""))
                            for n in range(1, 10_000)) if not p.exists())


def save_picks_checked(folder: str | os.PathLike, picks: SavedPicks,
                       known: list | None) -> tuple[Path, list | None]:
    """``save_picks`` unless another window saved the file since ``known`` (its stamp when
    this one last read or wrote it; None: replace whatever is there): the last window to
    save won, and another's judgements were lost. Then this window's picks are kept in
    ``FEATURE.json.conflict`` and ``PicksConflictError`` says so. Returns the new stamp."""
    path = picks_path(folder, picks.feature)
    now = file_stamp(path)
    if known is not None and now is not None and list(now) != list(known):
        kept = save_picks(folder, picks, conflict_path(folder, picks.feature))
        raise PicksConflictError(kept,
            f"the picks of '{picks.feature}' were saved by another window since they were "
            f"opened here, so these are not saved over them: they are kept in {kept}. Open the "
            "session again to go on.")
    written = save_picks(folder, picks)
    return written, file_stamp(written)


def keep_previous(folder: str | os.PathLike, feature: str,
                  path: Path | None = None) -> Path | None:
    """Keep a feature's saved picks (or the file at ``path``) as ``FEATURE.json.previous``
    before new ones replace them (judgements and edits are work); the path kept, or None
    when there were none."""
    path = path or picks_path(folder, feature)
    if not path.exists():
        return None
    for n in range(1, 10_000):  # never over an earlier one: each may hold judgements
        previous = path.with_name(path.name + (".previous" if n == 1 else f".previous-{n}"))
        if not previous.exists():
            os.replace(path, previous)
            return previous
    raise OSError(f"too many earlier picks beside {path}")


def rename_saved_picks(folder: str | os.PathLike, old: str, new: str) -> Path | None:
    """A renamed feature's picks hold its new name inside too (else they would read as a
    copy of a feature that no longer exists); run after ``feature_files.move_files`` gave
    the file its new name. The path rewritten, or None (no such picks, or unreadable ones,
    which ``load_picks`` reports)."""
    path = picks_path(folder, new)
    try:
        picks = _read(path) if path.exists() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if picks is None or picks.feature != old:
        return None
    picks.feature = new
    return save_picks(folder, picks)


def reframe(saved: SavedPicks, voxel_size: float, origin) -> bool:
    """Give saved points (in tomogram voxels) the tomogram's voxel size and origin; a
    distance along a filament (Angstrom) scales with the voxel. Whether anything changed."""
    geometry = saved.metadata.get("tomoseg")
    if not isinstance(geometry, dict) or not voxel_size:
        return False
    old = float(geometry.get("voxel_size") or 0)
    origin = [float(o) for o in origin]
    if np.isclose(old, float(voxel_size), rtol=1e-6) and np.allclose(
            geometry.get("origin") or (0.0, 0.0, 0.0), origin):
        return False
    if old > 0 and "track_length" in saved.values:
        saved.values["track_length"] = saved.values["track_length"].astype(float) \
            * (float(voxel_size) / old)
    geometry.update(voxel_size=float(voxel_size), origin=origin)
    return True


def in_session_frame(saved: SavedPicks, session, folder: str | os.PathLike,
                     path: Path | None = None) -> SavedPicks:
    """Saved points drawn in the session's voxel size and origin (``reframe``): a voxel size
    typed while their layer was closed left the file's frame behind, and they were drawn,
    and exported, at the old size. The file (``path``, else the picks file) is rewritten
    when it changes; a failure to write leaves it for the next save."""
    geometry = saved.metadata.get("tomoseg") or {}
    origin = session.origin or geometry.get("origin") or (0.0, 0.0, 0.0)
    if reframe(saved, session.voxel_size, origin):
        try:
            save_picks(folder, saved, path)
        except OSError:
            pass  # drawn right now; the file says the old frame until the next save
    return saved


def rebind_saved_picks(folder: str | os.PathLike, voxel_size: float,
                       origin: tuple[float, float, float]) -> int:
    """The tomogram's header changed and its voxels did not: the saved picks and filament
    points (in its voxels) take the new voxel size and origin, or a restore drew and
    exported them with the old ones. How many files were rewritten (unreadable ones are
    left as they are)."""
    moved = 0
    for picks in load_picks(folder)[0]:
        if reframe(picks, voxel_size, origin):
            save_picks(folder, picks)
            moved += 1
    for path in sorted((Path(folder) / FILAMENTS).glob("*.json")):
        try:
            points = _read(path)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # said when the session shows them
        if reframe(points, voxel_size, origin):
            save_picks(folder, points, path)
            moved += 1
    return moved


def load_picks(folder: str | os.PathLike) -> tuple[list[SavedPicks], list[str]]:
    """Every feature's saved picks in a session folder, and a message for each file that
    cannot be read (the others still come back)."""
    found, problems = [], []
    for path in sorted((Path(folder) / FOLDER).glob("*.json")):
        try:
            picks = _read(path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"the saved picks {path} cannot be read ({exc}); move the file "
                            "away to stop this message")
            continue
        if picks_path(folder, picks.feature) != path:  # a copy: it must not win, nor be saved over
            problems.append(f"{path} holds picks of '{picks.feature}', whose file is "
                            f"{picks_path(folder, picks.feature).name}: not shown")
            continue
        found.append(picks)
    return found, problems


def read_saved(path: Path) -> SavedPicks:
    """One saved file of points (picks, or points along filaments); errors as ``json`` and
    ``pandas`` raise them (OSError, ValueError, KeyError, TypeError)."""
    return _read(Path(path))


def _read(path: Path) -> SavedPicks:
    record = json.loads(path.read_text())
    points = np.asarray(record["points"], float).reshape(-1, 3)
    values = pd.DataFrame(record["rows"], columns=record["columns"])
    if len(values) != len(points):
        raise ValueError(f"{len(points)} points but {len(values)} rows")
    kinds = record.get("dtypes") or {}
    for column in values.columns:  # numbers stay numbers (None came from NaN), also for 0 rows
        kind = kinds.get(column, "O" if column == "feature" else "f")
        if kind in "fiub":
            converted = pd.to_numeric(values[column], errors="coerce")
            values[column] = converted.astype(float) if kind == "f" or converted.isna().any() \
                else converted.astype(np.int64 if kind in "iu" else bool)
    if "status" in values:  # judgements: a hand-edited one must not turn into 'not judged'
        status = pd.to_numeric(values["status"], errors="coerce")
        if not status.isin([-1, 0, 1]).all():
            raise ValueError("status must be -1 (rejected), 0 (not judged) or 1 (accepted) "
                             f"on every row, not {sorted(set(map(str, values['status'])))}")
        values["status"] = status.astype(np.int64)
    return SavedPicks(feature=str(record["feature"]), points=points, values=values,
                      metadata=record.get("metadata") or {},
                      min_score=float(record.get("min_score") or 0.0),
                      diameter=record.get("diameter"))
