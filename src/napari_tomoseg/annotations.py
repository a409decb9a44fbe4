"""Boxes: the user's training examples, and their files.

A box is a square on one z-slice of a tomogram, in the tomogram's pixels
(unbinned), positive (with a painted mask of the feature) or negative
(the feature is absent: the label is all zero). Boxes live in
``boxes.json`` and their masks in ``masks.npz`` of a folder, both written
atomically, so a crash never loses what was already saved.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InvalidSettingsError, TomosegError
from .io.atomic import atomic_path, write_text

BOXES_FILE = "boxes.json"
MASKS_FILE = "masks.npz"


@dataclass
class Box:
    feature: str
    z: int
    y: float  # centre, tomogram pixels
    x: float
    size: int = 64
    positive: bool = True
    mask: np.ndarray | None = None  # (size, size) 0/1 for positives
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def corner(self) -> tuple[int, int]:
        """Top-left pixel (y, x) of the box on its slice."""
        return int(round(self.y - self.size / 2)), int(round(self.x - self.size / 2))

    def label(self) -> np.ndarray:
        if not self.positive:
            return np.zeros((self.size, self.size), np.float32)
        if self.mask is None:
            raise InvalidSettingsError(f"positive box {self.id} on slice {self.z} has no mask.")
        return (np.asarray(self.mask) > 0).astype(np.float32)


def check_boxes(boxes: list[Box], feature: str | None = None) -> None:
    """Raise a clear error when a training set cannot teach anything."""
    chosen = [b for b in boxes if feature is None or b.feature == feature]
    what = f" for '{feature}'" if feature else ""
    positives = [b for b in chosen if b.positive]
    if not positives:
        raise TomosegError(f"no positive boxes{what} yet: box a few examples of the feature "
                           "and paint its mask inside them.")
    empty = [b for b in positives if b.mask is None or not np.any(b.mask)]
    if len(empty) == len(positives):
        raise TomosegError(f"the masks of all positive boxes{what} are empty: paint the "
                           "feature inside the positive boxes.")
    if not any(not b.positive for b in chosen):
        raise TomosegError(f"no negative boxes{what} yet: box a few places without the feature "
                           "(about ten times as many as positives).")


def box_record(box: Box) -> dict:
    """The JSON fields of a box (its mask is stored apart)."""
    return {"id": box.id, "feature": box.feature, "z": int(box.z), "y": float(box.y),
            "x": float(box.x), "size": int(box.size), "positive": bool(box.positive)}


def save_boxes(folder: str | os.PathLike, boxes: list[Box]) -> None:
    """A box folder for ``tomoseg train --boxes`` (sessions keep boxes in one file instead)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = [box_record(b) for b in boxes]
    masks = {b.id: np.asarray(b.mask, dtype=np.uint8) for b in boxes if b.mask is not None}
    with atomic_path(folder / MASKS_FILE) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **masks)
    write_text(folder / BOXES_FILE, json.dumps({"version": 1, "boxes": records}, indent=1))


def load_boxes(folder: str | os.PathLike) -> list[Box]:
    folder = Path(folder)
    path = folder / BOXES_FILE
    if not path.exists():
        raise TomosegError(f"{folder} has no {BOXES_FILE}: not a box folder or session.")
    try:
        records = json.loads(path.read_text())["boxes"]
    except (ValueError, KeyError) as exc:
        raise TomosegError(f"{path} is not a valid box file ({exc}).") from exc
    masks = {}
    if (folder / MASKS_FILE).exists():
        with np.load(folder / MASKS_FILE) as archive:
            masks = {key: archive[key] for key in archive.files}
    return boxes_from_records(records, masks, path)


def boxes_from_records(records: list, masks: dict, source: str | os.PathLike) -> list[Box]:
    """Boxes from their JSON records and masks by box id (``source`` names the file for errors)."""
    try:
        return [Box(feature=r["feature"], z=int(r["z"]), y=float(r["y"]), x=float(r["x"]),
                    size=int(r.get("size", 64)), positive=bool(r["positive"]),
                    mask=masks.get(r["id"]), id=r["id"]) for r in records]
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise TomosegError(f"{source} holds a box that cannot be read ({exc!r}).") from exc


def boxes_from_truth(truth: np.ndarray, feature: str, n_positive: int, n_negative: int,
                     size: int = 64, seed: int = 0, margin: int | None = None,
                     max_fraction: float = 1.0) -> list[Box]:
    """Boxes as a careful user would place them, with masks from a ground-truth volume.

    Positives are centred on random voxels of the feature (at least 2% of the
    box covered, at most ``max_fraction``: 0.3 skips the grazing sections of
    membranes lying in the slice plane, which the missing wedge makes
    invisible and no user would paint); negatives are random boxes whose
    slice holds none of it.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = truth.shape
    margin = size // 4 if margin is None else margin
    half = size // 2
    boxes: list[Box] = []
    voxels = np.argwhere(truth[:, margin:ny - margin, margin:nx - margin] > 0) + [0, margin, margin]
    tries = 0
    while sum(b.positive for b in boxes) < n_positive and len(voxels) and tries < 1000 * n_positive:
        tries += 1
        z, y, x = voxels[rng.integers(len(voxels))]
        box = Box(feature, int(z), float(y), float(x), size, True)
        mask = crop_slice(truth[z], box.corner(), size)
        if 0.02 <= mask.mean() <= max_fraction and not _overlaps(box, boxes):
            box.mask = (mask > 0).astype(np.uint8)
            boxes.append(box)
    tries = 0
    while sum(not b.positive for b in boxes) < n_negative and tries < 1000 * max(n_negative, 1):
        tries += 1
        z = int(rng.integers(0, nz))
        y = float(rng.integers(half, max(ny - half, half + 1)))
        x = float(rng.integers(half, max(nx - half, half + 1)))
        box = Box(feature, z, y, x, size, False)
        if not np.any(crop_slice(truth[z], box.corner(), size)) and not _overlaps(box, boxes):
            boxes.append(box)
    return boxes


def _overlaps(box: Box, boxes: list[Box]) -> bool:
    return any(b.z == box.z and abs(b.y - box.y) < box.size / 2 and abs(b.x - box.x) < box.size / 2
               for b in boxes)


def crop_slice(image: np.ndarray, corner: tuple[int, int], size: int, fill: float = 0.0) -> np.ndarray:
    """A size x size crop at ``corner`` (may cross the edge: padded with ``fill``)."""
    y0, x0 = corner
    ny, nx = image.shape
    out = np.full((size, size), fill, dtype=np.float32)
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + size, ny), min(x0 + size, nx)
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def training_mask_volume(boxes: list[Box], shape: tuple[int, int, int]) -> np.ndarray:
    """Voxels covered by any box (to score segmentations only where nobody labelled)."""
    covered = np.zeros(shape, bool)
    for b in boxes:
        y0, x0 = b.corner()
        covered[b.z, max(y0, 0):max(y0 + b.size, 0), max(x0, 0):max(x0 + b.size, 0)] = True
    return covered
