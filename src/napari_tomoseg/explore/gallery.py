"""Every training box as a thumbnail, to check the annotations by eye.

Sorted by how much a trained network disagrees with each box's label,
the boxes most likely to be mislabelled (or hardest) come first.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..annotations import Box, crop_slice


@dataclass
class GalleryItem:
    box: Box
    thumbnail: np.ndarray  # (size, size) float32 scaled to 0..1
    outline: np.ndarray  # (size, size) bool: the mask's border (positives)
    disagreement: float | None  # mean |probability - label| in the box; None without a model


def _scaled(tile: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(tile, (1, 99))
    return np.clip((tile - lo) / max(hi - lo, 1e-12), 0, 1).astype(np.float32)


def gallery_items(tomogram: np.ndarray, boxes: list[Box],
                  probabilities: dict[str, np.ndarray] | None = None) -> list[GalleryItem]:
    """Thumbnails of every box (its slice of the tomogram), with mask outline and disagreement.

    ``probabilities`` maps a feature to its (z, y, x) probability volume, if segmented.
    """
    items = []
    for box in boxes:
        tile = crop_slice(np.asarray(tomogram[box.z], dtype=np.float32), box.corner(), box.size,
                          fill=float(np.asarray(tomogram[box.z]).mean()))
        label = box.label() if (box.positive and box.mask is not None) else np.zeros_like(tile)
        mask = label > 0
        outline = mask & ~ndimage.binary_erosion(mask)
        disagreement = None
        probability = (probabilities or {}).get(box.feature)
        if probability is not None:
            predicted = crop_slice(np.asarray(probability[box.z], dtype=np.float32), box.corner(),
                                   box.size)
            disagreement = float(np.mean(np.abs(predicted - label)))
        items.append(GalleryItem(box, _scaled(tile), outline, disagreement))
    return items


def sort_items(items: list[GalleryItem], by: str = "disagreement") -> list[GalleryItem]:
    """Most disagreement first (boxes without a model last), or by feature and slice."""
    if by == "disagreement":
        return sorted(items, key=lambda i: (i.disagreement is None, -(i.disagreement or 0.0)))
    return sorted(items, key=lambda i: (i.box.feature, not i.box.positive, i.box.z))


def thumbnail_rgb(item: GalleryItem, colour: str) -> np.ndarray:
    """(size, size, 3) uint8: grey tile, mask outline in the feature's colour, a frame that is
    the feature's colour for positives and grey for negatives."""
    rgb = np.repeat((item.thumbnail * 255).astype(np.uint8)[..., None], 3, axis=2)
    tint = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)], np.uint8)
    rgb[item.outline] = tint
    frame = tint if item.box.positive else np.array([110, 110, 110], np.uint8)
    rgb[:2], rgb[-2:], rgb[:, :2], rgb[:, -2:] = frame, frame, frame, frame
    return rgb
