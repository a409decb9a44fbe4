"""Open the session of a tomogram: restore it, rebind it to a changed header, or start one.

A session is never deleted or taken over: a session made on other voxel data stays as
it is, and the new one goes into the first free folder beside it. What a restore had to
do (a rebind, a backup used, a training that never reported back) is said in one sentence.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from .errors import TomosegError
from .feature_files import checkpoint_model_file
from .picks_store import rebind_saved_picks
from .session import SESSION_SUFFIX, Session, file_checksum, fingerprint, user_sessions_folder
from .session_store import SESSION_FILE, is_session


def _beside(folder: Path, n: int) -> Path:
    """The n-th folder beside ``folder``: ``t.mrc.tomoseg`` -> ``t.mrc-2.tomoseg``."""
    name = folder.name
    stem = name[:-len(SESSION_SUFFIX)] if name.endswith(SESSION_SUFFIX) else name
    return folder.with_name(f"{stem}-{n}{name[len(stem):]}")


def _identify(session: Session, tomogram: str) -> str:
    """'same' file, 'rebind' (same voxels, changed header) or 'different' tomogram."""
    if session.tomogram_fingerprint is None or fingerprint(tomogram) == session.tomogram_fingerprint:
        return "same"
    if session.data_checksum is None:  # a session of version 1 knows only its file's bytes
        return "different"
    return "rebind" if file_checksum(tomogram)[0] == session.data_checksum else "different"


def _rebind(session: Session, tomogram: str, voxel_size: float) -> str:
    old_voxel, old_origin = session.voxel_size, session.origin
    session.tomogram, session.tomogram_fingerprint = str(tomogram), fingerprint(tomogram)
    session.origin = file_checksum(tomogram)[1]
    session.voxel_size = float(voxel_size)
    session.save()
    moved = rebind_saved_picks(session.folder, session.voxel_size, session.origin)
    models = _restamped(session, old_voxel)
    changes = []
    if old_voxel != session.voxel_size:
        changes.append(f"voxel size {old_voxel:g} -> {session.voxel_size:g} A")
    if old_origin is not None and tuple(old_origin) != session.origin:
        changes.append("origin " + " ".join(f"{o:g}" for o in old_origin[::-1]) + " -> "
                       + " ".join(f"{o:g}" for o in session.origin[::-1]) + " A (x y z)")
    return (f"The header of {Path(tomogram).name} changed ({', '.join(changes) or 'other fields'}), "
            f"its voxels did not: session {session.folder} rebound to it, "
            f"all {len(session.boxes)} boxes kept"
            + (f" and the picks of {moved} feature(s) moved with it." if moved else ".")
            + models)


def restamp_models(session: Session, old: float, new: float) -> list[str]:
    """The session's models stamped with the tomogram's old voxel size take its new one (the
    header changed, or a size was typed; the voxels did not): they learned these voxels, and
    Segment resampled the tomogram by new / old, so the network saw it at the wrong scale
    without a word. Models loaded from a file (Load model) or of another voxel size stay.
    The features restamped."""
    from .nn.model_file import load_model, save_model

    if not old or not new or abs(new - old) <= 1e-6 * new:
        return []
    done = []
    for feature, relative in sorted(session.models.items()):
        path = session.folder / relative
        try:
            model = load_model(path)
        except (TomosegError, OSError):
            continue  # said where the session's models are loaded
        if abs(model.voxel_size - old) <= 1e-3 * old and not model.info.get("loaded_from"):
            save_model(replace(model, voxel_size=float(new)), path)
            done.append(feature)
    return done


def _restamped(session: Session, old: float) -> str:
    moved = restamp_models(session, old, session.voxel_size)
    return (f" The model{'s' if len(moved) > 1 else ''} of {', '.join(map(repr, moved))}, "
            f"trained on these voxels, now read{'' if len(moved) > 1 else 's'} "
            f"{session.voxel_size:g} A too." if moved else "")


def open_session(folder: str | os.PathLike, tomogram: str | None, voxel_size: float,
                 shape: tuple[int, int, int]) -> tuple[Session, str]:
    """Restore, rebind or start the session of a tomogram; never deletes one.

    Returns the session and a sentence for the user. A session made on
    other voxel data stays as it is; the new one goes into the first free
    folder beside it (or into one beside it that was made on this tomogram).
    """
    folder = Path(folder)
    for n in range(1, 1000):
        candidate = folder if n == 1 else _beside(folder, n)
        if not is_session(candidate):
            session = Session.create(candidate, tomogram, voxel_size, shape)
            moved = f" ({folder} belongs to another tomogram and is kept)" if n > 1 else ""
            return session, f"New session in {candidate}{moved}." + _elsewhere(session)
        session = Session.load(candidate)
        verdict = "same" if not tomogram else _identify(session, tomogram)
        if session.shape and tuple(session.shape) != tuple(int(n) for n in shape):
            verdict = "different"  # a layer with no file has no fingerprint: its shape tells
        if verdict == "rebind":
            return session, _rebind(session, tomogram, voxel_size) + _adopted(session)
        if verdict == "same":
            return session, _restored(session, tomogram, voxel_size) + _adopted(session)
    raise TomosegError(f"too many sessions beside {folder}; choose a session folder.")


def _restored(session: Session, tomogram: str | None, voxel_size: float) -> str:
    """The sentence of a restore of the same file, its geometry brought up to date."""
    message = (f"Restored session: {len(session.boxes)} boxes, "
               f"{len(session.features)} features, from {session.folder}")
    if tomogram and session.data_checksum is None:  # a version-1 session: without the
        # voxels' checksum a later header edit read as another tomogram
        session.data_checksum, origin = file_checksum(tomogram)
        session.origin = session.origin if session.origin is not None else origin
        session.save()
    changed, models = False, ""
    if voxel_size and abs(float(voxel_size) - session.voxel_size) > 1e-6 * voxel_size:
        message += f", voxel size {session.voxel_size:g} -> {float(voxel_size):g} A"
        old, session.voxel_size = session.voxel_size, float(voxel_size)  # the tomogram's size
        changed = True  # now: typed or its header's; the session's own was dropped unsaid
        models = _restamped(session, old)
    origin = _header_origin(tomogram)
    if origin is not None and session.origin is not None \
            and not np.allclose(origin, session.origin, atol=1e-3):
        message += ", origin as the header now reads (start indices)"  # same file, read
        session.origin, changed = origin, True  # by a newer rule: picks follow the layer
    if changed:
        session.save()
        rebind_saved_picks(session.folder, session.voxel_size, session.origin or (0.0,) * 3)
    return message + (f" ({session.note})." if session.note else ".") + models


def _header_origin(tomogram: str | None) -> tuple[float, float, float] | None:
    """The origin as the header reads now; None for no file or a compressed one (read whole)."""
    from .io.mrc_header import COMPRESSED_SUFFIXES, read_header

    if not tomogram or str(tomogram).lower().endswith(COMPRESSED_SUFFIXES):
        return None
    try:
        return tuple(float(o) for o in read_header(tomogram)[1].origin)
    except (TomosegError, OSError):
        return None


def _elsewhere(session: Session) -> str:
    """Sessions with boxes on the same voxels under another name or place, said (never taken
    over unasked): a renamed or moved tomogram, or a folder turned read-only, started an
    empty session and never mentioned the one holding the user's boxes."""
    if not session.data_checksum or not session.tomogram:
        return ""
    places = {Path(session.tomogram).resolve().parent, user_sessions_folder()}
    found = []
    for place in places:
        for folder in sorted(place.glob(f"*{SESSION_SUFFIX}")) if place.is_dir() else []:
            try:
                if folder.resolve() == session.folder.resolve() or not is_session(folder):
                    continue
            except OSError:
                continue
            body = _record(folder)
            boxes = len(body.get("boxes") or [])
            if body.get("data_checksum") == session.data_checksum and boxes:
                found.append(f"{folder} ({boxes} boxes, made for "
                             f"{Path(body.get('tomogram') or '?').name})")
    return (" Sessions of the same voxels: " + "; ".join(found)
            + ": to go on with one, choose it as the session folder." if found else "")


def _record(folder: Path) -> dict:
    """A session's saved record, read without decoding its masks or tidying its folder (a
    folder of a hundred sessions is scanned at every new one); {} when unreadable."""
    try:
        document = json.loads((folder / SESSION_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    body = document.get("body") if isinstance(document, dict) else None
    return body if isinstance(body, dict) else {}


def _adopted(session: Session) -> str:
    """What a restore says of trainings that never reported back (a closed viewer, a kill)."""
    before = set(session.models)
    begun = [f for f in session.training if f in session.feature_names()]
    new = [f for f in session.adopt_saved_models() if f not in before]
    said = (f" The model{'s' if len(new) > 1 else ''} of {', '.join(map(repr, new))}, saved by a "
            "training that ended with the viewer, restored too." if new else "")
    cut = [f for f in begun if f not in new]  # said, not claimed saved: it may not have been
    return said + "".join(f" The training of {f!r} ended with the viewer: " + (
        "the model is the last one saved, perhaps from before it." if f in session.models
        else "no model was saved.") + _checkpoint_note(session, f) for f in cut)


def _checkpoint_note(session: Session, feature: str) -> str:
    """Where a killed training's checkpoint (``jobs.checkpoints``) holds its best weights."""
    kept = checkpoint_model_file(session.model_path(feature))
    return (f" Its best weights so far are in {kept} (load them, or the feature's next "
            "training writes its own there)." if kept.is_file() else "")
