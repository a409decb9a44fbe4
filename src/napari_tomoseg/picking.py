"""From a probability map to particle coordinates (EMAN2 e2spt_extractfromseg, and more).

Threshold, connected components, each component's centre as the candidate
and its summed probability as the score; size limits; optional splitting
of touching particles by a watershed on the distance transform;
non-maximum suppression by distance; edge exclusion; a cap on the count.
Sizes default from the particle diameter in Angstrom. Also points sampled
along filament or membrane segmentations at a given spacing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from .errors import InvalidSettingsError


@dataclass(frozen=True)
class PickSettings:
    diameter: float = 250.0  # Angstrom (a ribosome)
    threshold: float = 0.5
    min_size: int | None = None  # voxels; default: 10% of the particle's volume, at least 21
    max_size: int | None = None  # voxels; default none
    min_distance: float | None = None  # Angstrom between picks; default the radius
    edge: float | None = None  # Angstrom from the border; default the radius
    split_touching: bool = False
    max_picks: int | None = None

    def __post_init__(self):
        if self.diameter <= 0:
            raise InvalidSettingsError("the particle diameter must be positive (Angstrom).")
        if not 0 <= self.threshold < 1:
            raise InvalidSettingsError("the threshold must lie in [0, 1).")

    def in_voxels(self, voxel_size: float) -> dict:
        radius = self.diameter / 2 / voxel_size
        volume = 4 / 3 * np.pi * radius ** 3
        return {"radius": radius,
                "min_size": self.min_size if self.min_size is not None else max(21, int(0.1 * volume)),
                "max_size": self.max_size,
                "min_distance": (self.min_distance / voxel_size if self.min_distance is not None
                                 else radius),
                "edge": self.edge / voxel_size if self.edge is not None else radius}


def _components(mask: np.ndarray, prob: np.ndarray, split: bool, radius: float) -> np.ndarray:
    if not split:
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        return labels
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    distance = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(distance, min_distance=max(1, int(radius * 0.7)), labels=mask,
                           exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=mask)


def pick_particles(probability: np.ndarray, voxel_size: float,
                   settings: PickSettings = PickSettings()) -> pd.DataFrame:
    """Particles as a table: z y x (pixels), score (summed probability), size, score_norm."""
    prob = np.asarray(probability, dtype=np.float32)
    if prob.ndim != 3:
        raise InvalidSettingsError("picking needs a 3D probability map.")
    if prob.dtype.kind == "u" or prob.max() > 1.0 + 1e-6:
        prob = prob / 255.0  # stored as 0-255
    v = settings.in_voxels(voxel_size)
    mask = prob > settings.threshold
    labels = _components(mask, prob, settings.split_touching, v["radius"])
    n = int(labels.max())
    columns = ["z", "y", "x", "score", "size", "score_norm"]
    if n == 0:
        return pd.DataFrame(columns=columns)
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones_like(prob), labels, index)
    scores = ndimage.sum_labels(prob, labels, index)
    # the probability-weighted centroid: sub-voxel, and right for flat (binary) maps where
    # EMAN2's maximum would be an arbitrary voxel of the component
    peaks = np.asarray(ndimage.center_of_mass(prob, labels, index), dtype=float).reshape(-1, 3)
    keep = sizes >= v["min_size"]
    if v["max_size"] is not None:
        keep &= sizes <= v["max_size"]
    edge = v["edge"]
    shape = np.asarray(prob.shape, float)
    keep &= np.all((peaks >= edge) & (peaks <= shape - 1 - edge), axis=1)
    peaks, scores, sizes = peaks[keep], scores[keep], sizes[keep]
    order = np.argsort(-scores)
    accepted: list[int] = []
    tree_points: list[np.ndarray] = []
    for i in order:
        if tree_points and np.min(np.linalg.norm(np.asarray(tree_points) - peaks[i], axis=1)) < v["min_distance"]:
            continue
        accepted.append(i)
        tree_points.append(peaks[i])
        if settings.max_picks and len(accepted) >= settings.max_picks:
            break
    peaks, scores, sizes = peaks[accepted], scores[accepted], sizes[accepted]
    table = pd.DataFrame(peaks, columns=["z", "y", "x"])
    table["score"] = scores
    table["size"] = sizes.astype(int)
    table["score_norm"] = scores / scores.max() if len(scores) else scores
    return table


def sample_along(mask: np.ndarray, spacing: float, voxel_size: float) -> pd.DataFrame:
    """Points every ``spacing`` Angstrom along a filament (skeleton) or over a membrane."""
    from skimage.morphology import skeletonize

    mask = np.asarray(mask) > 0
    skeleton = skeletonize(mask) if mask.any() else mask
    points = np.argwhere(skeleton).astype(float)
    step = spacing / voxel_size
    if step <= 0:
        raise InvalidSettingsError("the spacing must be positive (Angstrom).")
    chosen: list[np.ndarray] = []
    if len(points):
        tree = cKDTree(points)
        taken = np.zeros(len(points), bool)
        for i in np.lexsort(points.T[::-1]):
            if taken[i]:
                continue
            chosen.append(points[i])
            taken[tree.query_ball_point(points[i], step * 0.999)] = True
    return pd.DataFrame(np.asarray(chosen).reshape(-1, 3), columns=["z", "y", "x"])


def match_picks(picks: np.ndarray, truth: np.ndarray, radius: float) -> dict:
    """Precision, recall and F1: one-to-one matches within ``radius`` (pixels)."""
    picks = np.asarray(picks, float).reshape(-1, 3)
    truth = np.asarray(truth, float).reshape(-1, 3)
    if len(picks) == 0 or len(truth) == 0:
        return {"precision": 0.0, "recall": 0.0, "f1": 0.0, "matched": 0,
                "mean_distance": float("nan")}
    distance = np.linalg.norm(picks[:, None] - truth[None], axis=-1)
    cost = np.where(distance <= radius, distance, 1e6)
    rows, cols = linear_sum_assignment(cost)
    good = cost[rows, cols] <= radius
    matched = int(good.sum())
    precision, recall = matched / len(picks), matched / len(truth)
    f1 = 2 * precision * recall / (precision + recall) if matched else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "matched": matched,
            "mean_distance": float(distance[rows[good], cols[good]].mean()) if matched else float("nan")}
