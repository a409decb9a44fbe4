"""Boxes: the user's training examples, and their files.

A box is a square on one z-slice of a tomogram, in the tomogram's pixels
(unbinned), positive (with a painted mask of the feature) or negative
(the feature is absent: the label is all zero). A box folder holds one
generation of boxes with their masks in ``boxes.json`` (with a checksum,
written atomically) and the generation before it in
``boxes.previous.json``, so a kill at any point leaves the old or the new
boxes whole, never new boxes with old masks. Folders of version 1
(``boxes.json`` + ``masks.npz``) are still read.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .box_grid import BoxList, parse_grid
from .errors import InvalidBoxesError, InvalidSettingsError, TomosegError
from .io.atomic import write_text

BOXES_FILE = "boxes.json"
BOXES_BACKUP_FILE = "boxes.previous.json"
MASKS_FILE = "masks.npz"  # version 1 only
BOXES_VERSION = 2


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
    # (size, size) 0/1: where the label is known (None: everywhere), e.g. a rejected pick's
    # particle only, as its neighbours may be true ones
    known: np.ndarray | None = None

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
    if empty:  # trained as they are, they would teach "no feature here"
        slices = ", ".join(str(b.z) for b in sorted(empty, key=lambda b: b.z)[:8])
        warnings.warn(f"{len(empty)} of {len(positives)} positive boxes{what} have nothing "
                      f"painted (on slices {slices}{', ...' if len(empty) > 8 else ''}): they "
                      "teach 'no feature here'; paint them, or make them negative boxes.",
                      UnpaintedBoxWarning, stacklevel=2)


class UnpaintedBoxWarning(UserWarning):
    """Positive boxes without paint train as if the feature were absent there."""


MIN_BOX_SIZE = 8  # pixels: the smallest tile a network can learn from


def check_box_size(size: object) -> int:
    """A box size the networks can use, as an int, or InvalidBoxesError."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < MIN_BOX_SIZE:
        raise InvalidBoxesError(f"the box size must be a whole number of at least "
                                f"{MIN_BOX_SIZE} pixels, not {size!r}.")
    return int(size)


def _whole(value: object) -> bool:
    return (isinstance(value, (int, np.integer)) and not isinstance(value, bool)) or (
        isinstance(value, float) and value.is_integer())


def _number(value: object) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and bool(
        np.isfinite(value))


def check_box_records(records: object, source: str | os.PathLike = BOXES_FILE) -> list[dict]:
    """``records`` (the list under "boxes" of a box file) checked field by field.

    Raises InvalidBoxesError naming the first bad record and field (a
    missing ``z``, ``"z": "ten"``, a list where a record belongs, ...).
    """
    if not isinstance(records, list):
        raise InvalidBoxesError(f"{source} is not a box file: it needs a list of boxes under "
                                f"\"boxes\", not {type(records).__name__}.")
    seen: set[str] = set()
    for i, r in enumerate(records):
        where = f"{source}, box {i + 1}"
        if not isinstance(r, dict):
            raise InvalidBoxesError(f"{where} is a {type(r).__name__}, not a record.")
        missing = [k for k in ("id", "feature", "z", "y", "x", "positive") if k not in r]
        if missing:
            raise InvalidBoxesError(f"{where} has no {', '.join(missing)}.")
        if not isinstance(r["id"], str) or not r["id"] or r["id"] in seen:
            raise InvalidBoxesError(f"{where} has a missing or repeated id {r['id']!r}.")
        seen.add(r["id"])
        if not isinstance(r["feature"], str) or not r["feature"].strip():
            raise InvalidBoxesError(f"{where}: the feature must be a name, not {r['feature']!r}.")
        if not _whole(r["z"]) or r["z"] < 0:
            raise InvalidBoxesError(f"{where}: z must be a slice number, not {r['z']!r}.")
        for key in ("y", "x"):
            if not _number(r[key]):
                raise InvalidBoxesError(f"{where}: {key} must be a number, not {r[key]!r}.")
        if not isinstance(r["positive"], bool):
            raise InvalidBoxesError(f"{where}: positive must be true or false, not {r['positive']!r}.")
        size = r.get("size", 64)
        try:
            check_box_size(int(size) if _whole(size) else size)
        except InvalidBoxesError as exc:
            raise InvalidBoxesError(f"{where}: {exc}") from None
    return records


def read_masks(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The masks of a masks.npz by box id; a corrupt archive is one clear error."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            masks = {key: np.asarray(archive[key]) for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise InvalidBoxesError(f"{path} is not a readable mask archive (corrupt or "
                                f"truncated): {str(exc).splitlines()[0][:120]}") from exc
    bad = [key for key, mask in masks.items() if mask.ndim != 2]
    if bad:
        raise InvalidBoxesError(f"{path}: the mask of box {bad[0]} is not 2D "
                                f"(shape {masks[bad[0]].shape}).")
    return masks


def check_box_masks(boxes: list[Box], source: str = MASKS_FILE) -> None:
    """Every mask has exactly its box's size: a larger one is not cropped, a smaller not padded."""
    for b in boxes:
        if b.known is not None and tuple(np.shape(b.known)) != (b.size, b.size):
            raise InvalidBoxesError(f"{source}: the known region of box {b.id} (slice {b.z}) "
                                    f"is not {b.size} x {b.size} pixels, as its box.")
        if b.mask is not None and tuple(np.shape(b.mask)) != (b.size, b.size):
            shape = " x ".join(str(n) for n in np.shape(b.mask))
            raise InvalidBoxesError(
                f"{source}: the mask of box {b.id} (slice {b.z}) is {shape} pixels but the "
                f"box is {b.size} x {b.size}; repaint it or remove the box.")


def check_boxes_fit(boxes: list[Box], shape: tuple[int, ...], binning: int = 1) -> None:
    """Boxes that can be cut from a tomogram of ``shape`` (z, y, x) at ``binning``.

    Refuses boxes whose centre lies outside the volume (they would train on
    empty tiles), one training set of mixed sizes, and a binning that
    shrinks the boxes or the tomogram below a usable tile.
    """
    nz, ny, nx = shape[-3:]
    for b in boxes:
        if not (0 <= b.z < nz and 0 <= b.y < ny and 0 <= b.x < nx):
            raise InvalidBoxesError(
                f"box {b.id} of '{b.feature}' at (z, y, x) = ({b.z}, {b.y:g}, {b.x:g}) lies "
                f"outside the {nz} x {ny} x {nx} tomogram; remove it or open the right tomogram"
                + (" (this file is a single 2D image, not a tomogram)." if nz == 1 else "."))
    for feature in sorted({b.feature for b in boxes}):
        sizes = sorted({b.size for b in boxes if b.feature == feature})
        if len(sizes) > 1:
            counts = {s: sum(b.size == s for b in boxes if b.feature == feature) for s in sizes}
            common = max(sizes, key=lambda s: counts[s])
            listed = ", ".join(f"{counts[s]} of {s} px" for s in sizes)
            raise InvalidBoxesError(f"the boxes of '{feature}' have different sizes ({listed}); "
                                    f"one training set needs one box size: delete the others "
                                    f"and keep {common} px (the box size for new boxes).")
    size = min((b.size for b in boxes), default=MIN_BOX_SIZE)
    if size // binning < MIN_BOX_SIZE or min(ny, nx) // binning < size // binning:
        raise InvalidBoxesError(
            f"binning {binning} leaves {size // binning}-pixel boxes in a "
            f"{ny // binning} x {nx // binning} slice; use a binning of at most "
            f"{max(1, min(size // MIN_BOX_SIZE, min(ny, nx) // size))}.")


def box_record(box: Box) -> dict:
    """The JSON fields of a box (its mask is stored apart; a partly known box's region here)."""
    record = {"id": box.id, "feature": box.feature, "z": int(box.z), "y": float(box.y),
              "x": float(box.x), "size": int(box.size), "positive": bool(box.positive)}
    if box.known is not None:
        from .session_store import encode_mask

        record["known"] = encode_mask(box.known)
    return record


def save_boxes(folder: str | os.PathLike, boxes: list[Box],
               grid: tuple[int, int, int] | None = None) -> None:
    """A box folder for ``tomoseg train --boxes``: one generation, written whole.

    Boxes and masks go into one ``boxes.json`` with a SHA-1 of its body
    (one rename); the file it replaces becomes ``boxes.previous.json``.
    A version-1 ``masks.npz`` is kept while the backup still needs it.
    ``grid`` is the shape (z, y, x) of the volume the boxes were placed on:
    training refuses a tomogram of another shape (another binning), whose
    boxes would otherwise land on other places without a word.
    """
    from .session_store import _digest, encode_mask

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    body = {"boxes": [dict(box_record(b), mask=None if b.mask is None else encode_mask(b.mask))
                      for b in boxes]}
    if grid is not None:
        body["grid"] = [int(n) for n in grid]
    text = json.dumps({"version": BOXES_VERSION, "sha1": _digest(body), "body": body}, indent=1)
    replaced_is_generation = _is_generation(folder / BOXES_FILE)
    write_text(folder / BOXES_FILE, text, backup=folder / BOXES_BACKUP_FILE)
    if replaced_is_generation:  # the backup no longer needs the masks of version 1
        (folder / MASKS_FILE).unlink(missing_ok=True)


def _is_generation(path: Path) -> bool:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(document, dict) and document.get("version") == BOXES_VERSION


def has_boxes(folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a box file (or only its backup, after a kill mid-save)."""
    folder = Path(folder)
    return (folder / BOXES_FILE).exists() or (folder / BOXES_BACKUP_FILE).exists()


def _read_box_file(path: Path) -> list[Box]:
    """The boxes of one box file (version 2, or version 1 with ``masks.npz``); the grid
    they were placed on, when recorded, as their ``grid`` attribute (``BoxList``)."""
    from .session_store import decode_mask, _digest

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidBoxesError(f"{path} is not a valid box file ({exc}).") from exc
    if isinstance(data, dict) and data.get("version") == BOXES_VERSION:
        body = data.get("body")
        if not isinstance(body, dict) or _digest(body) != data.get("sha1"):
            raise InvalidBoxesError(f"{path} is not a valid box file (its checksum does not "
                                    "match: damaged).")
        records = check_box_records(body.get("boxes"), path)
        try:
            masks = {r["id"]: decode_mask(r["mask"]) for r in records if r.get("mask") is not None}
        except (TypeError, ValueError, KeyError, AttributeError, zlib.error) as exc:
            raise InvalidBoxesError(f"{path} holds a mask that cannot be read ({exc}).") from exc
        return BoxList(boxes_from_records(records, masks, path), parse_grid(body.get("grid"), path))
    records = data.get("boxes") if isinstance(data, dict) else None
    masks_path = path.parent / MASKS_FILE
    masks = read_masks(masks_path) if masks_path.exists() else {}
    return boxes_from_records(records, masks, path)


def load_boxes(folder: str | os.PathLike) -> list[Box]:
    """The boxes of a box folder; a missing or damaged ``boxes.json`` falls back to its backup."""
    folder = Path(folder)
    path, backup = folder / BOXES_FILE, folder / BOXES_BACKUP_FILE
    if not has_boxes(folder):
        raise TomosegError(f"{folder} has no {BOXES_FILE}: not a box folder or session.")
    try:
        return _read_box_file(path)
    except (FileNotFoundError, InvalidBoxesError) as exc:
        if not backup.exists():
            raise
        current = exc
    try:
        boxes = _read_box_file(backup)
    except InvalidBoxesError:
        raise current from None
    warnings.warn(f"{path.name} is missing or damaged ({str(current).splitlines()[0][:160]}); "
                  f"read the previous save ({len(boxes)} boxes) from {backup.name}.", stacklevel=2)
    return boxes


def boxes_from_records(records: list, masks: dict, source: str | os.PathLike) -> list[Box]:
    """Boxes from their JSON records and masks by box id (``source`` names the file for errors).

    Every record and mask is checked first (``check_box_records``,
    ``check_box_masks``): a bad one is an InvalidBoxesError, never a
    traceback or a silently cropped label.
    """
    from .session_store import decode_mask

    records = check_box_records(records, source)
    try:
        known = {r["id"]: decode_mask(r["known"]) for r in records if r.get("known") is not None}
    except (TypeError, ValueError, KeyError, AttributeError, zlib.error) as exc:
        raise InvalidBoxesError(f"{source} holds a known region that cannot be read "
                                f"({exc}).") from exc
    boxes = [Box(feature=r["feature"], z=int(r["z"]), y=float(r["y"]), x=float(r["x"]),
                 size=int(r.get("size", 64)), positive=r["positive"],
                 mask=masks.get(r["id"]), id=r["id"], known=known.get(r["id"])) for r in records]
    check_box_masks(boxes, source)
    return boxes


def boxes_from_truth(truth: np.ndarray, feature: str, n_positive: int, n_negative: int,
                     size: int = 64, seed: int = 0, margin: int | None = None,
                     max_fraction: float = 1.0,
                     negative_slices: np.ndarray | None = None) -> list[Box]:
    """Boxes as a careful user would place them, with masks from a ground-truth volume.

    Positives are centred on random voxels of the feature (at least 2% of the
    box covered, at most ``max_fraction``: 0.3 skips the grazing sections of
    membranes lying in the slice plane, which the missing wedge makes
    invisible and no user would paint); negatives are random boxes whose
    slice holds none of it, on ``negative_slices`` only when given (a mask painted
    on a few slices says nothing about the others).
    """
    size = check_box_size(size)
    rng = np.random.default_rng(seed)
    nz, ny, nx = truth.shape
    if min(ny, nx) < size:
        raise InvalidBoxesError(f"{size}-pixel boxes do not fit a {ny} x {nx} slice.")
    margin = size // 4 if margin is None else margin
    half = size // 2
    boxes: list[Box] = []
    by_slice: dict[int, list[Box]] = {}  # overlap checks look at one slice's boxes only
    voxels = np.argwhere(truth[:, margin:ny - margin, margin:nx - margin] > 0) + [0, margin, margin]
    found = tries = 0
    while found < n_positive and len(voxels) and tries < 1000 * n_positive:
        tries += 1
        z, y, x = voxels[rng.integers(len(voxels))]
        box = Box(feature, int(z), float(y), float(x), size, True)
        mask = crop_slice(truth[z], box.corner(), size) > 0  # 0/1, 0/255 or labels
        if 0.02 <= mask.mean() <= max_fraction and not _overlaps(box, by_slice.get(box.z, ())):
            box.mask = mask.astype(np.uint8)
            boxes.append(box)
            by_slice.setdefault(box.z, []).append(box)
            found += 1
    found = tries = 0
    slices = np.arange(nz) if negative_slices is None else np.asarray(negative_slices, int)
    while found < n_negative and len(slices) and tries < 1000 * max(n_negative, 1):
        tries += 1
        z = int(slices[rng.integers(len(slices))])
        y = float(rng.integers(half, max(ny - half, half + 1)))
        x = float(rng.integers(half, max(nx - half, half + 1)))
        box = Box(feature, z, y, x, size, False)
        if not _overlaps(box, by_slice.get(z, ())) and not np.any(
                crop_slice(truth[z], box.corner(), size)):
            boxes.append(box)
            by_slice.setdefault(z, []).append(box)
            found += 1
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
