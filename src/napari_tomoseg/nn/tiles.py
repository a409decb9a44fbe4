"""Training tiles from boxes, and their augmentation by rotations and flips.

Each box is cut from the preprocessed tomogram with a margin (so that a
rotated tile has no empty corners), with its neighbouring slices as
channels for 2.5D networks. The margin's label is unknown (nobody painted
there), so it carries zero loss weight. A batch draws positives and negatives with
equal probability, so 5 positives weigh as much as 50 negatives, as in
EMAN2, and rotates image and label together by a random angle.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from ..annotations import Box, check_boxes_fit, crop_slice
from ..errors import InvalidVolumeError
from ..preprocess import Preprocessor
from .models import size_multiple


# slices either side of a tile whose wedge is imposed anew (a 340 A slab at 20 A voxels)
REWEDGE_DEPTH = 8


class TileBank:
    """Tiles (with rotation margin), labels and loss weights of a set of boxes, as tensors.

    The weight is 1 where a box's label is known and 0 in the rotation margin,
    so a rotated tile never teaches "background" where its image shows the
    feature beyond the painted box. With ``holdout`` > 0 one quadrant of every
    box (chosen from ``seed`` and the box's place) is held out of the loss: those
    labelled pixels score the network while it trains (early stopping) and
    choose its threshold (calibration). ``symmetry`` (``models.SYMMETRIES``) says how tiles
    are turned: "any" every way, "wedge" only by the turns that keep the tilt axis, and
    "rewedge" cut as slabs of +-``REWEDGE_DEPTH`` slices, turned every way and given the
    tilt series' missing wedge again (``reimpose_wedge``) before the middle slices are taken.
    """

    def __init__(self, preprocessor: Preprocessor, boxes: list[Box], context: int,
                 holdout: float = 0.0, seed: int = 0, multiple: int = 1,
                 symmetry: str = "any"):
        b = preprocessor.settings.binning
        check_boxes_fit(boxes, preprocessor.volume.shape, b)  # clear errors, not empty tiles
        self.size = max(8, boxes[0].size // b)
        # the network sees tiles of a multiple of its pooling (``multiple``); beyond the box,
        # rotation-margin pixels carry weight 0
        self.crop = int(math.ceil(self.size / multiple)) * multiple
        self.padded = int(math.ceil(self.crop * math.sqrt(2) / 2)) * 2
        self.margin = margin = (self.padded - self.size) // 2
        self.context, self.wedge = context, symmetry == "wedge"
        self.depth = max(REWEDGE_DEPTH, context + 4) if symmetry == "rewedge" else context
        images = _cut_slabs(preprocessor, boxes, self.depth, margin, self.padded)
        labels, weights, held, positive = [], [], [], []
        for box in boxes:
            label, known = _binned_label(box, b, self.size)
            # a box known only in part (a rejected pick's disc) is trained on whole: a quarter
            # of a disc is no score, and held out it swayed early stopping and calibration
            partial = box.known is not None
            out = (_held_out_quadrant(box, label, seed) if holdout > 0 and not partial
                   else np.zeros_like(label))
            labels.append(self._pad(label))
            weights.append(self._pad(known * (1 - out)))
            held.append(self._pad(known * out))
            positive.append(box.positive)
        slabs = torch.from_numpy(np.stack(images))
        middle = slice(self.depth - context, self.depth + context + 1)
        self.images = slabs[:, middle].contiguous()
        self.slabs = slabs if self.depth > context else None
        _require_contrast(preprocessor.volume, boxes)
        self.labels = torch.from_numpy(np.stack(labels))[:, None]
        self.weights = torch.from_numpy(np.stack(weights))[:, None]
        self.held_out = torch.from_numpy(np.stack(held))[:, None]
        self.positive = np.asarray(positive)

    def _pad(self, inner: np.ndarray) -> np.ndarray:
        m, s = self.margin, self.size
        padded = np.zeros((self.padded, self.padded), np.float32)
        padded[m:m + s, m:m + s] = inner[:s, :s]
        return padded

    @property
    def has_holdout(self) -> bool:
        return bool(self.held_out.sum() > 0)

    def batch(self, rng: np.random.Generator, batch_size: int, augment: bool = True,
              intensity: float = 0.0):
        """(images, labels, weights) of a batch, half positives, randomly rotated and flipped."""
        pos = np.flatnonzero(self.positive)
        neg = np.flatnonzero(~self.positive)
        n_pos = rng.binomial(batch_size, 0.5) if len(neg) else batch_size
        n_pos = min(max(n_pos, 1 if len(pos) else 0), batch_size) if len(pos) else 0
        picks = np.concatenate([rng.choice(pos, n_pos) if n_pos else np.empty(0, int),
                                rng.choice(neg, batch_size - n_pos) if batch_size - n_pos
                                else np.empty(0, int)]).astype(int)
        labels, weights = self.labels[picks], self.weights[picks]
        rewedge = augment and self.slabs is not None  # any turn, then the wedge again
        images = (self.slabs if rewedge else self.images)[picks]
        if augment:
            images, labels, weights = rotate_and_flip(images, labels, rng, weights, self.wedge)
            weights = (weights > 0.999).float()  # pixels whose label is wholly known
        if rewedge:
            d, c = self.depth, self.context
            images = reimpose_wedge(images)[:, d - c:d + c + 1].contiguous()
        if intensity > 0:
            images = jitter_intensity(images, rng, intensity)
        m, s = (self.padded - self.crop) // 2, self.crop
        crop = (..., slice(m, m + s), slice(m, m + s))
        return images[crop].contiguous(), labels[crop].contiguous(), weights[crop].contiguous()


def tile_bank_for(network: torch.nn.Module, preprocessor: Preprocessor, boxes: list[Box],
                  holdout: float = 0.0, seed: int = 0) -> TileBank:
    """The boxes' tiles as ``network`` takes them: its context, size multiple and symmetry."""
    return TileBank(preprocessor, boxes, getattr(network, "context", 0), holdout=holdout,
                    seed=seed, multiple=size_multiple(network),
                    symmetry=getattr(network, "symmetry", "any"))


def jitter_intensity(images: torch.Tensor, rng: np.random.Generator,
                     strength: float) -> torch.Tensor:
    """Per tile: contrast scaled by up to +-``strength``, offset, and extra noise.

    Another tomogram differs in contrast, noise and defocus; a network that
    saw only one cell's grey levels learns them instead of the feature's shape.
    """
    n = images.shape[0]
    shape = (n,) + (1,) * (images.ndim - 1)
    gain = torch.from_numpy(rng.uniform(1 - strength, 1 + strength, n)).float().reshape(shape)
    offset = torch.from_numpy(rng.normal(0, 0.3 * strength, n)).float().reshape(shape)
    sigma = torch.from_numpy(rng.uniform(0, strength, n)).float().reshape(shape)
    generator = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))
    noise = torch.randn(images.shape, generator=generator) * sigma * images.std()
    return images * gain + offset + noise


def _cut_slabs(preprocessor: Preprocessor, boxes: list[Box], depth: int, margin: int,
               padded: int) -> list[np.ndarray]:
    """Each box's slices z-``depth``..z+``depth`` (binned grid), cut with the margin, in box
    order. Boxes are visited by depth with a sliding window of planes: each plane is
    preprocessed once and at most 2 ``depth`` + 1 are held (a slab kept per box depth held
    1.2 GB for 60 boxes on 1024 x 1024 binned planes)."""
    b = preprocessor.settings.binning
    planes: dict[int, np.ndarray] = {}
    cut: list[np.ndarray] = [np.empty(0)] * len(boxes)
    for i in sorted(range(len(boxes)), key=lambda k: boxes[k].z // b):
        zb = boxes[i].z // b
        lo, hi = zb - depth, zb + depth + 1
        for z in [z for z in planes if z < lo]:
            del planes[z]
        first = next((z for z in range(lo, hi) if z not in planes), hi)
        if first < hi:  # the window only moves on: what is missing is its top
            planes.update(zip(range(first, hi), preprocessor.slab(first, hi)))
        cy, cx = boxes[i].corner()  # full resolution; the binned grid starts at cy // b
        corner = (cy // b - margin, cx // b - margin)
        cut[i] = np.stack([crop_slice(planes[z], corner, padded) for z in range(lo, hi)])
    return cut


def _binned_label(box: Box, binning: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(label, known) of a box on the binned grid, registered with the binned image.

    The binned grid has pixel i covering full-resolution rows i*b..i*b+b-1,
    so a box whose corner is not a multiple of b is shifted by corner % b
    before mean-shrinking; binned pixels only partly inside the box are
    unknown (weight 0).
    """
    label = box.label()
    known = (np.ones_like(label) if box.known is None
             else (np.asarray(box.known) > 0).astype(np.float32))
    if binning == 1:
        return label[:size, :size], known[:size, :size]
    cy, cx = box.corner()
    oy, ox = cy % binning, cx % binning
    n = size * binning
    padded = np.zeros((n + 2 * binning, n + 2 * binning), np.float32)
    inside = np.zeros_like(padded)
    padded[oy:oy + label.shape[0], ox:ox + label.shape[1]] = label
    inside[oy:oy + label.shape[0], ox:ox + label.shape[1]] = known

    def shrink(a: np.ndarray) -> np.ndarray:
        return a[:n, :n].reshape(size, binning, size, binning).mean(axis=(1, 3))

    return shrink(padded), (shrink(inside) > 0.999).astype(np.float32)


def _require_contrast(volume: np.ndarray, boxes: list[Box]) -> None:
    """Refuse boxes whose raw voxels are all one value (a blank or wrong file, or padding).

    Checked on the raw voxels: filtering a constant slice leaves rounding noise that
    normalisation would blow up into an image of unit contrast.
    """
    for box in boxes:
        y0, x0 = (max(c, 0) for c in box.corner())
        region = np.asarray(volume[box.z, y0:y0 + box.size, x0:x0 + box.size])
        if region.size and region.max() != region.min():  # np.ptp wraps for int8 / int16
            return
    raise InvalidVolumeError("the boxes hold no contrast: the tomogram is the same value "
                             "everywhere they lie, so there is nothing to learn; check that "
                             "the right file is open.")


def _held_out_quadrant(box: Box, label: np.ndarray, seed: int) -> np.ndarray:
    """1 on the quadrant of ``box`` held out of the loss, chosen from the box's own place.

    The choice depends on the box, not on its position in the list, so
    continuing training with boxes added or removed keeps the same pixels
    unseen. A positive box holds out a quadrant that contains the feature.
    """
    size = label.shape[0]
    half = size // 2
    corners = [(qy, qx) for qy in (0, half) for qx in (0, half)]
    if box.positive:
        with_feature = [c for c in corners if label[c[0]:c[0] + half, c[1]:c[1] + half].any()]
        corners = with_feature or corners
    rng = np.random.default_rng([seed, int(box.z), int(round(box.y)), int(round(box.x))])
    qy, qx = corners[int(rng.integers(len(corners)))]
    out = np.zeros_like(label)
    out[qy:qy + half, qx:qx + half] = 1.0
    return out


WEDGE_JITTER = np.radians(10.0)
TILT_RANGE = 60.0  # degrees either side: the wedge a reimposed tile lacks


def reimpose_wedge(slabs: torch.Tensor, tilt: float = TILT_RANGE) -> torch.Tensor:
    """Slabs (n, z, y, x) without what a tilt series about y to +-``tilt`` does not record
    (|k_z| > tan(tilt) |k_x|): a tile turned in-plane shows its structure as the tomogram
    would, whatever the turn. The wedge does not depend on k_y, so the transform runs over
    z and x only, of the slab mirrored in both (no wrap-around edges to ring)."""
    nz, nx = slabs.shape[1], slabs.shape[3]
    mirrored = torch.cat([slabs, slabs.flip(1)], dim=1)
    mirrored = torch.cat([mirrored, mirrored.flip(3)], dim=3)
    kz = torch.fft.fftfreq(2 * nz).abs()[:, None, None]
    kx = torch.fft.rfftfreq(2 * nx)[None, None, :]
    keep = ((kz <= math.tan(math.radians(tilt)) * kx) | (kz == 0)).float()
    spectrum = torch.fft.rfft2(mirrored, dim=(1, 3))
    return torch.fft.irfft2(spectrum * keep, s=(2 * nz, 2 * nx), dim=(1, 3))[:, :nz, :, :nx]


def rotate_and_flip(images: torch.Tensor, labels: torch.Tensor, rng: np.random.Generator,
                    weights: torch.Tensor | None = None, wedge: bool = False):
    """The same random in-plane rotation (0-360 degrees) and flip for image, label and weight.

    With ``wedge`` the rotation is 0 or 180 degrees within +-10: with the flip, the turns
    that keep the tilt axis (y) where the tomogram has it.
    """
    n = images.shape[0]
    if wedge:
        angles = torch.from_numpy(rng.uniform(-WEDGE_JITTER, WEDGE_JITTER, n)
                                  + np.pi * rng.integers(0, 2, n)).float()
    else:
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
    if weights is None:
        return rotated, rotated_labels
    rotated_weights = F.grid_sample(weights, grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False)
    return rotated, rotated_labels, rotated_weights
