"""Membranes of the shipped M. pneumoniae cell (EMPIAR-10499, 20 A): boxes and a by-eye reference.

The cell has no ground truth. Its two membranes were traced by eye as polylines
on slices 40, 52, 64 and 76 of a 7-slice average (checked by drawing them over
the slices); on slice 76 only the left membrane is clear. Scored slices are
40, 52 and 76, away from the boxes' slice 64:
- ``recall``: the traced line's pixels with a detection within 4 px in the
  same slice (4 steps between 4-connected pixels: 2.8 px along a diagonal; a
  membrane found where one sees it);
- ``near``: of the detected pixels on slices 40 and 52, where both membranes
  are traced over their visible length, the share within 6 px of a line (what
  is not near is stripes, blobs and spots: false, up to the tracing's reach);
- ``above``: the share of the whole volume above the threshold.
``f`` is their harmonic mean; ``threshold_sweep`` gives it at every threshold
(the stored threshold of a model trained on five thin lines swings). A by-eye
trace is good to a few pixels; differences of a few hundredths are noise,
tenths are not.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.draw import line

from napari_tomoseg.annotations import Box, crop_slice

BOX_SLICE = 64
# (x, y) in pixels of the 20 A volume: the polylines the training masks are drawn along
DRAWN = [[(20, 50), (50, 150), (80, 215), (115, 300)], [(240, 15), (280, 100), (310, 185)]]
TRACED = {
    40: [[(20, 80), (40, 120), (62, 160), (80, 200), (92, 230), (102, 260)],
         [(230, 10), (245, 40), (265, 80), (280, 120), (290, 160), (300, 200), (307, 220)]],
    52: [[(17, 40), (35, 100), (50, 140), (67, 180), (87, 220), (102, 260)],
         [(235, 20), (255, 60), (272, 100), (285, 140), (295, 180), (300, 200)]],
    64: [[(22, 50), (35, 100), (55, 150), (77, 200), (100, 250), (120, 300)],
         [(240, 20), (255, 50), (272, 100), (290, 150), (307, 200)]],
    76: [[(47, 100), (67, 150), (85, 200), (100, 250), (115, 300)]],
}
RECALL_SLICES, NEAR_SLICES = (40, 52, 76), (40, 52)


def polyline_plane(lines, shape: tuple[int, int]) -> np.ndarray:
    """A 1-px rasterisation of polylines given as (x, y) points."""
    plane = np.zeros(shape, bool)
    for points in lines:
        for (x0, y0), (x1, y1) in zip(points[:-1], points[1:]):
            rr, cc = line(y0, x0, y1, x1)
            plane[rr.clip(0, shape[0] - 1), cc.clip(0, shape[1] - 1)] = True
    return plane


# (slice, x, y) of the positive boxes: all on one slice, or split over two (3 + 2)
POSITIVES = {"one slice": [(64, 35, 100), (64, 65, 183), (64, 98, 258), (64, 260, 58),
                           (64, 295, 143)],
             "two slices": [(64, 35, 100), (64, 98, 258), (64, 295, 143), (40, 62, 160),
                            (40, 272, 100)]}


def membrane_boxes(shape: tuple[int, int, int], seed: int = 0,
                   positives: str = "one slice") -> list[Box]:
    """5 positive boxes with 3-px lines along the membranes (a user's brush; on slice 64 the
    lines of DRAWN, elsewhere the trace) and 25 negatives in the cytoplasm and outside, 40
    px clear of slice 64's lines."""
    _, ny, nx = shape
    plane = ndimage.binary_dilation(polyline_plane(DRAWN, (ny, nx)), iterations=1)
    boxes = []
    for z, x, y in POSITIVES[positives]:
        lines = plane if z == BOX_SLICE else ndimage.binary_dilation(
            polyline_plane(TRACED[z], (ny, nx)), iterations=1)
        box = Box("membrane", z, float(y), float(x), 64, True)
        box.mask = (crop_slice(lines.astype(np.float32), box.corner(), 64) > 0).astype(np.uint8)
        boxes.append(box)
    rng = np.random.default_rng(seed)
    far = ndimage.distance_transform_edt(~plane) > 40
    candidates = np.argwhere(far[32:ny - 32, 32:nx - 32]) + 32
    for k in rng.choice(len(candidates), 25, replace=False):
        y, x = candidates[k]
        boxes.append(Box("membrane", int(rng.integers(40, 90)), float(y), float(x), 64, False))
    return boxes


def traced_scores(detected: np.ndarray, unscored: tuple[int, ...] = ()) -> dict:
    """recall, near and above (see the module) of a boolean segmentation of the cell, leaving
    out the slices ``unscored`` (those that hold boxes)."""
    shape = detected.shape[1:]
    found, traced, near, total = 0, 0, 0, 0
    for z in (z for z in RECALL_SLICES if z not in unscored):
        lines = polyline_plane(TRACED[z], shape)
        close = ndimage.binary_dilation(detected[z], iterations=4)
        found, traced = found + int((lines & close).sum()), traced + int(lines.sum())
    for z in (z for z in NEAR_SLICES if z not in unscored):
        band = ndimage.distance_transform_edt(~polyline_plane(TRACED[z], shape)) <= 6
        near, total = near + int((detected[z] & band).sum()), total + int(detected[z].sum())
    if not traced or not any(z not in unscored for z in NEAR_SLICES):
        raise ValueError(f"no traced slice is left to score beside {sorted(unscored)}")
    return {"recall": found / traced, "near": near / total if total else float("nan"),
            "above": float(detected.mean())}


def threshold_sweep(prob: np.ndarray, unscored: tuple[int, ...] = ()) -> dict:
    """``traced_scores`` with ``f`` at thresholds 0.05..0.95: the best and where it lies, and
    the scores at 0.5."""
    best = {"f": -1.0}
    for threshold in np.arange(1, 20) / 20:
        scores = with_f(traced_scores(prob > threshold, unscored))
        if threshold == 0.5:
            at_half = scores
        if scores["f"] > best["f"]:
            best = {**scores, "threshold": float(threshold)}
    return {"best": best, "at_half": at_half}


def with_f(scores: dict) -> dict:
    recall, near = scores["recall"], scores["near"]
    if np.isnan(near):  # nothing detected on the scored slices
        return {**scores, "f": 0.0}
    f = 2 * recall * near / (recall + near) if recall + near > 0 else 0.0
    return {**scores, "f": f}
