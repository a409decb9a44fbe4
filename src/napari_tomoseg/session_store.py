"""The session file: one generation of a session, written whole, with the one before as backup.

A generation (tomogram identity, features, models, boxes and their
masks) is one JSON file, ``session.json``, carrying a SHA-1 of its body.
A save writes the new generation to a partial file, flushes it, renames
the current file to ``session.previous.json`` and the partial into its
place. A kill at any point leaves the old or the new generation whole;
a damaged current file (cut short, bit flips) falls back to the backup.
Sessions of version 1 (``session.json`` + ``boxes.json`` + ``masks.npz``)
are still read.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zlib
from pathlib import Path

import numpy as np

from .annotations import Box, box_record, boxes_from_records, load_boxes
from .errors import TomosegError
from .io.atomic import clean_stale_partials, write_text

SESSION_SUBFOLDERS = ("models", "segmentations", "picks", "averages")

SESSION_FILE = "session.json"
BACKUP_FILE = "session.previous.json"
DAMAGED_FILE = "session.damaged.json"
VERSION = 2


def encode_mask(mask: np.ndarray) -> dict:
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    return {"shape": list(mask.shape),
            "zlib": base64.b64encode(zlib.compress(mask.tobytes(), 1)).decode("ascii")}


def decode_mask(record: dict) -> np.ndarray:
    shape = tuple(int(s) for s in record["shape"])
    raw = zlib.decompress(base64.b64decode(record["zlib"], validate=True))
    if len(shape) != 2 or len(raw) != shape[0] * shape[1]:
        raise ValueError(f"a mask of {len(raw)} bytes does not fill {shape}")
    return np.frombuffer(raw, np.uint8).reshape(shape).copy()


def _digest(body: dict) -> str:
    return hashlib.sha1(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_generation(folder: Path, record: dict, boxes: list[Box], keep_previous: bool = True,
                     name: str = SESSION_FILE) -> None:
    """Write one whole generation; the generation it replaces becomes the backup."""
    body = dict(record, boxes=[
        dict(box_record(b), mask=None if b.mask is None else encode_mask(b.mask)) for b in boxes])
    text = json.dumps({"version": VERSION, "sha1": _digest(body), "body": body}, indent=1)
    write_text(folder / name, text, backup=folder / BACKUP_FILE if keep_previous else None)


def generation_stamp(folder: Path) -> tuple[int, int, int] | None:
    """Which file ``session.json`` is now (inode, size, modification time; None if none): an
    atomic save makes a new file, so another writer since changes the stamp."""
    try:
        stat = (Path(folder) / SESSION_FILE).stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _read(path: Path) -> tuple[dict, list[Box]]:
    """One generation from ``path``; raises TomosegError when it is missing or damaged."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise TomosegError(f"{path} is missing") from exc
    except (OSError, ValueError) as exc:
        raise TomosegError(f"{path} is damaged ({exc})") from exc
    if not isinstance(document, dict):
        raise TomosegError(f"{path} is damaged (not a session record)")
    if int(document.get("version", 1)) < 2:  # version 1: boxes and masks in their own files
        return document, load_boxes(path.parent)
    body = document.get("body")
    if not isinstance(body, dict) or _digest(body) != document.get("sha1"):
        raise TomosegError(f"{path} is damaged (its checksum does not match)")
    records = body.get("boxes") or []
    try:
        masks = {r["id"]: decode_mask(r["mask"]) for r in records if r.get("mask") is not None}
    except (TypeError, ValueError, KeyError, AttributeError, zlib.error) as exc:
        raise TomosegError(f"{path} holds a mask that cannot be read ({exc})") from exc
    return body, boxes_from_records(records, masks, path)


def read_generation(folder: Path) -> tuple[dict, list[Box], str | None]:
    """The newest readable generation: (record, boxes, a note when the backup was used)."""
    try:
        record, boxes = _read(folder / SESSION_FILE)
        return record, boxes, None
    except TomosegError as current:
        if not (folder / BACKUP_FILE).exists():
            raise TomosegError(f"cannot restore the session: {current}.") from current
        try:
            record, boxes = _read(folder / BACKUP_FILE)
        except TomosegError as backup:
            raise TomosegError(f"cannot restore the session: {current}, and {backup}.") from backup
        return record, boxes, (f"{current}; restored the previous save ({len(boxes)} boxes) "
                               f"from {BACKUP_FILE}")


def set_damaged_aside(folder: Path) -> None:
    """Keep a damaged current file under another name, so the next save keeps the good backup."""
    current = folder / SESSION_FILE
    if current.exists():  # never over an earlier damaged one (a second damage replaced it)
        target, n = folder / DAMAGED_FILE, 1
        while target.exists():
            n += 1
            target = folder / DAMAGED_FILE.replace(".json", f"-{n}.json")
        os.replace(current, target)


def is_session(folder: str | os.PathLike) -> bool:
    folder = Path(folder)
    return (folder / SESSION_FILE).exists() or (folder / BACKUP_FILE).exists()


def clean_session_partials(folder: Path) -> None:
    """Unfinished files left by a killed writer, in the session folder and its subfolders
    (a killed segmentation left an 8 MB hidden map in segmentations/, never removed)."""
    for where in (folder, *(folder / name for name in SESSION_SUBFOLDERS)):
        clean_stale_partials(where)
