"""Boxes removed from a session are kept, and the last removal can be put back.

napari's select-all and Delete on the boxes layer removed every box of a slice with its
painted mask, saved at once, and the session's one backup generation went with the next
paint stroke. Each removal is now written to ``removed_boxes/TIME-N.json`` (the boxes and
their masks) before the session forgets them; ``last_removal`` returns the last one's boxes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .annotations import Box, box_record, boxes_from_records
from .io.atomic import atomic_path
from .session_store import decode_mask, encode_mask

FOLDER = "removed_boxes"  # not under removed/: a feature named 'boxes' would read as removed


def keep_removed(folder: str | os.PathLike, boxes: list[Box]) -> Path | None:
    """Write ``boxes`` (with masks) as the newest removal; its file, or None for none."""
    if not boxes:
        return None
    place = Path(folder) / FOLDER
    place.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    n = 1 + sum(1 for _ in place.glob(f"{stamp}-*"))  # put-back ones too: never reused
    path = place / f"{stamp}-{n:03d}.json"  # names sort as the removals happened
    records = [box_record(b) for b in boxes]
    masks = {b.id: encode_mask(b.mask) for b in boxes if b.mask is not None}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"boxes": records, "masks": masks}))
    return path


def removals(folder: str | os.PathLike) -> list[Path]:
    """The removals not yet put back, oldest first."""
    return sorted((Path(folder) / FOLDER).glob("*.json"))


def last_removal(folder: str | os.PathLike, present: set[str]) -> tuple[list[Box], Path | None]:
    """The boxes of the last removal not already ``present`` (by id), and its file; ([], None)
    when there is none. ``mark_put_back`` the file once the boxes are saved again."""
    found = removals(folder)
    if not found:
        return [], None
    document = json.loads(found[-1].read_text())
    masks = {box_id: decode_mask(record) for box_id, record in document["masks"].items()}
    boxes = boxes_from_records(document["boxes"], masks, found[-1])
    return [b for b in boxes if b.id not in present], found[-1]


def mark_put_back(path: Path) -> Path:
    """Keep a removal's file as ``*.json.put-back``: no longer offered, never deleted."""
    done = path.with_name(path.name + ".put-back")
    os.replace(path, done)
    return done


def rename_in_removals(folder: str | os.PathLike, old: str, new: str) -> int:
    """Removed boxes of a renamed feature take its new name (else Put back refused them as
    boxes of a feature no longer there); how many removals were rewritten."""
    changed = 0
    for path in removals(folder):
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # Put back says what is wrong with it
        boxes = document.get("boxes") or []
        if not any(isinstance(b, dict) and b.get("feature") == old for b in boxes):
            continue
        for box in boxes:
            if isinstance(box, dict) and box.get("feature") == old:
                box["feature"] = new
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(document))
        changed += 1
    return changed
