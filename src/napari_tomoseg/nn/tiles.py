"""Training tiles from boxes, and their augmentation by rotations and flips.

Each box is cut from the preprocessed tomogram with a margin (so that a
rotated tile has no empty corners), with its neighbouring slices as
channels for 2.5D networks. A batch draws positives and negatives with
equal probability, so 5 positives weigh as much as 50 negatives, as in
EMAN2, and rotates image and label together by a random angle.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from ..annotations import Box, check_boxes_fit, crop_slice
from ..preprocess import Preprocessor


class TileBank:
    """Tiles (with rotation margin) and labels of a set of boxes, as tensors."""

    def __init__(self, preprocessor: Preprocessor, boxes: list[Box], context: int):
        b = preprocessor.settings.binning
        check_boxes_fit(boxes, preprocessor.volume.shape, b)  # clear errors, not empty tiles
        self.size = max(8, boxes[0].size // b)
        self.padded = int(math.ceil(self.size * math.sqrt(2) / 2)) * 2
        margin = (self.padded - self.size) // 2
        images, labels, positive = [], [], []
        cache: dict[int, np.ndarray] = {}
        for box in boxes:
            zb = box.z // b
            if zb not in cache:
                cache[zb] = preprocessor.slab(zb - context, zb + context + 1)
            planes = cache[zb]
            y0 = int(round(box.y / b - self.size / 2)) - margin
            x0 = int(round(box.x / b - self.size / 2)) - margin
            images.append(np.stack([crop_slice(p, (y0, x0), self.padded) for p in planes]))
            label = box.label()
            if b > 1:
                n = label.shape[0] // b * b
                label = label[:n, :n].reshape(n // b, b, n // b, b).mean(axis=(1, 3))
            padded_label = np.zeros((self.padded, self.padded), np.float32)
            padded_label[margin:margin + self.size, margin:margin + self.size] = label[:self.size, :self.size]
            labels.append(padded_label)
            positive.append(box.positive)
        self.images = torch.from_numpy(np.stack(images))
        self.labels = torch.from_numpy(np.stack(labels))[:, None]
        self.positive = np.asarray(positive)
        self.margin = margin

    def batch(self, rng: np.random.Generator, batch_size: int, augment: bool = True):
        pos = np.flatnonzero(self.positive)
        neg = np.flatnonzero(~self.positive)
        n_pos = rng.binomial(batch_size, 0.5) if len(neg) else batch_size
        n_pos = min(max(n_pos, 1 if len(pos) else 0), batch_size) if len(pos) else 0
        picks = np.concatenate([rng.choice(pos, n_pos) if n_pos else np.empty(0, int),
                                rng.choice(neg, batch_size - n_pos) if batch_size - n_pos
                                else np.empty(0, int)]).astype(int)
        images, labels = self.images[picks], self.labels[picks]
        if augment:
            images, labels = rotate_and_flip(images, labels, rng)
        m, s = self.margin, self.size
        return images[..., m:m + s, m:m + s].contiguous(), labels[..., m:m + s, m:m + s].contiguous()


def rotate_and_flip(images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator):
    """The same random in-plane rotation (0-360 degrees) and flip for image and label."""
    n = images.shape[0]
    angles = torch.from_numpy(rng.uniform(0, 2 * np.pi, n)).float()
    flips = torch.from_numpy(np.where(rng.random(n) < 0.5, -1.0, 1.0)).float()
    cos, sin = torch.cos(angles), torch.sin(angles)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * flips
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * flips
    theta[:, 1, 1] = cos
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    rotated = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    rotated_labels = F.grid_sample(labels, grid, mode="bilinear", padding_mode="zeros",
                                   align_corners=False)
    return rotated, rotated_labels
