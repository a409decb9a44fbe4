"""From a probability map to particle coordinates (EMAN2 e2spt_extractfromseg, and more).

By default local maxima of the smoothed probability, each scored by the
smoothed value at its peak, kept when enough of a particle's volume lies
above the threshold, non-maximum suppressed by distance; or, as EMAN2's
e2spt_extractfromseg does, connected components above the threshold (with
an optional watershed split of touching particles). Edge exclusion only
when asked for; a cap on the count.
Sizes default from the particle diameter in Angstrom. Also points sampled
along filament or membrane segmentations at a given spacing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from .pick_measures import mass_at, relative_roundness_cut
from .pick_measures import roundness  # noqa: F401 - also imported from here
from .probability_maps import as_probability, check_volume_map  # noqa: F401 - also imported from here
from .errors import InvalidSettingsError
from .pick_checks import (ShapeWarning, check_diameter, check_same_grid, dropped_note,  # noqa: F401
                          excluded_note, less_round_text, report_shape, too_many_dropped,
                          warn_if_saturated)


PICK_METHODS = ("peaks", "components")


@dataclass(frozen=True)
class PickSettings:
    """How a probability map becomes particles; sizes in Angstrom, defaults from the benchmark.

    ``peaks`` (default): local maxima of the probability smoothed at a third
    of the radius, kept where the smoothed value reaches ``threshold`` and
    enough of the particle's volume lies above it, non-maximum suppressed
    at ``min_distance``. Touching particles stay apart (their peaks do), which
    connected components merge into one pick. ``components``: EMAN2's
    e2spt_extractfromseg (one pick per connected component).
    """

    diameter: float = 250.0  # Angstrom (a ribosome)
    threshold: float = 0.5
    min_size: int | None = None  # voxels above threshold; default: 20% of the particle's volume
    max_size: int | None = None  # voxels of a connected blob above threshold; default none
    # the same in particle volumes (3: a carbon edge's blob held 4-8 ribosomes' worth of false
    # picks on the benchmark, true ribosomes' blobs at most 2.6); off by default, polysomes and
    # clusters of touching particles form large blobs too
    max_blob: float | None = None
    # peaks only: the smoothed peak's smallest curvature over its largest (1 a ball; a 2:1
    # particle 0.1-0.35, lower the sharper its map; 0 a sheet or ridge). On the realistic
    # benchmark true ribosomes lay at 0.13-0.9 (median 0.49), most of the carbon edge's false
    # picks below 0.15; a warning says when most candidates fail it. 0 keeps all.
    min_roundness: float = 0.15
    # peaks only, when min_roundness is above 0: picks must also reach this times the median
    # roundness of the map's picks (at most 0.25, pick_measures.relative_roundness_cut);
    # 0 turns it off. Ribosome F1 +0.01 over 17 maps of the benchmark (docs/engine.md)
    relative_roundness: float = 0.5
    min_distance: float | None = None  # Angstrom between picks; default the radius
    # suppression counts distances along z divided by this: the missing wedge stretches a
    # particle's map along z (a point 1.55x for tilts to +-60 degrees; ribosome maps of the
    # real M. pneumoniae cell up to ~2x), and one ribosome gave two picks 6-11 slices apart
    # (19 pairs in 510 picks; 7 left at 2, none of them on one ridge of the map). 1: isotropic
    z_stretch: float = 2.0
    edge: float | None = None  # Angstrom from the border; default 0 (a pick at the edge counts)
    split_touching: bool = False  # components only: watershed split
    max_picks: int | None = None
    method: str = "peaks"

    def __post_init__(self):
        if not self.diameter > 0:
            raise InvalidSettingsError("the particle diameter must be positive (Angstrom).")
        if not 0 <= self.threshold < 1:
            raise InvalidSettingsError("the threshold must lie in [0, 1).")
        if self.method not in PICK_METHODS:
            raise InvalidSettingsError(f"unknown picking method '{self.method}'; choose "
                                       f"{' or '.join(PICK_METHODS)}.")
        for name in ("min_distance", "edge"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidSettingsError(f"{name.replace('_', ' ')} cannot be negative.")
        if not 1 <= self.z_stretch <= 5:
            raise InvalidSettingsError("z stretch must lie in [1, 5] (1: distances along z "
                                       "count as in-plane ones).")
        if not 0 <= self.min_roundness <= 1:
            raise InvalidSettingsError("min roundness must lie in [0, 1] (0 keeps every shape).")
        if not 0 <= self.relative_roundness <= 1:
            raise InvalidSettingsError("relative roundness must lie in [0, 1] (0: only the min "
                                       "roundness counts).")
        if self.max_blob is not None and not self.max_blob > 0:
            raise InvalidSettingsError("max blob (particle volumes) must be positive.")
        if self.max_size is not None and self.max_blob is not None:
            raise InvalidSettingsError("give max size (voxels) or max blob (particle volumes), "
                                       "not both.")
        if self.max_picks is not None and self.max_picks < 1:
            raise InvalidSettingsError("max picks must be at least 1 (or not given).")

    def in_voxels(self, voxel_size: float) -> dict:
        radius = self.diameter / 2 / voxel_size
        volume = 4 / 3 * np.pi * radius ** 3
        return {"radius": radius,
                "min_size": self.min_size if self.min_size is not None else max(8, int(0.2 * volume)),
                "max_size": (self.max_size if self.max_blob is None
                             else int(self.max_blob * volume)),
                "min_distance": (self.min_distance / voxel_size if self.min_distance is not None
                                 else radius),
                "edge": self.edge / voxel_size if self.edge is not None else 0.0}


def _components(mask: np.ndarray, prob: np.ndarray, split: bool, radius: float) -> np.ndarray:
    if not split or not mask.any():  # nothing above threshold: no peaks to split from
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


def _component_candidates(prob: np.ndarray, settings: PickSettings, v: dict, stop):
    """EMAN2-style: (centres, scores, sizes, NaN roundness), one per component above threshold."""
    labels = _components(prob > settings.threshold, prob, settings.split_touching, v["radius"])
    stop()
    index = np.arange(1, int(labels.max()) + 1)
    if len(index) == 0:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros(0)
    sizes = ndimage.sum_labels(np.ones_like(prob), labels, index)
    scores = ndimage.sum_labels(prob, labels, index)
    # the probability-weighted centroid: sub-voxel, and right for flat (binary) maps where
    # EMAN2's maximum would be an arbitrary voxel of the component
    centres = np.asarray(ndimage.center_of_mass(prob, labels, index), dtype=float).reshape(-1, 3)
    return centres, scores, sizes, np.full(len(sizes), np.nan)  # no shape test: EMAN2's way


def _peak_candidates(prob: np.ndarray, settings: PickSettings, v: dict, stop):
    """(centres, scores, sizes, roundness): local maxima of the smoothed map, sized by the raw map.

    The smoothed map only places candidates (one peak per particle, even when
    particles touch); whether a candidate is a particle is decided by its
    mass, the voxels above ``threshold`` within one radius of the peak, so a
    high calibrated threshold does not lose particles whose smoothed peak
    lies below it. Score: the smoothed probability at the peak.
    """
    radius = v["radius"]
    # zero beyond the volume: a mirrored border would pull peaks onto the face
    smooth = ndimage.gaussian_filter(prob, max(radius / 3, 0.5), mode="constant")
    stop()  # between the whole-volume passes: each takes seconds on a large map
    reach = max(int(round(radius / 2)), 1)
    local_max = ndimage.maximum_filter(smooth, size=2 * reach + 1, mode="constant")
    stop()
    floor = max(0.5 * settings.threshold, 0.05)  # flat zero regions are not peaks
    peaks = np.argwhere((smooth >= local_max) & (smooth >= floor))
    if len(peaks) == 0:
        return np.zeros((0, 3)), np.zeros(0), np.zeros(0), np.zeros(0)
    above = prob > settings.threshold
    mass = mass_at(above, peaks, radius)
    stop()
    if v["max_size"] is not None:  # a blob too big to be one particle: its component's size
        components, _ = ndimage.label(above, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(components.ravel())
        component_size = sizes[components[tuple(peaks.T)]] * (components[tuple(peaks.T)] > 0)
        mass = np.where(component_size > v["max_size"], component_size, mass)
    return peaks.astype(float), smooth[tuple(peaks.T)], mass, roundness(smooth, peaks)


def _suppress(centres: np.ndarray, scores: np.ndarray, min_distance: float,
              max_picks: int | None, z_stretch: float = 1.0) -> list[int]:
    """Greedy non-maximum suppression: best score first, none closer than ``min_distance``
    (z distances divided by ``z_stretch``)."""
    squeezed = np.asarray(centres, float).reshape(-1, 3) / [z_stretch, 1.0, 1.0]
    tree = cKDTree(squeezed) if len(centres) else None
    taken = np.zeros(len(centres), bool)
    accepted: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if taken[i]:
            continue
        accepted.append(int(i))
        taken[tree.query_ball_point(squeezed[i], max(min_distance, 1e-6) - 1e-9)] = True
        if max_picks and len(accepted) >= max_picks:
            break
    return accepted


def _suppress_relative(centres: np.ndarray, scores: np.ndarray, round_: np.ndarray,
                       min_distance: float, settings: PickSettings) -> tuple[list[int], int]:
    """Suppression, then again without the candidates below the relative roundness cut
    (``relative_roundness_cut`` of the first picks): (accepted, picks the cut dropped)."""
    stretch, most = settings.z_stretch, settings.max_picks
    # uncapped, so the median is the whole map's and max picks keeps the best of it
    accepted = _suppress(centres, scores, min_distance, None, stretch)
    cut = (relative_roundness_cut(round_[accepted], settings.relative_roundness)
           if settings.min_roundness > 0 else 0.0)  # min roundness 0: every shape kept
    if cut <= settings.min_roundness:
        return accepted[:most] if most else accepted, 0
    dropped = int(np.sum(round_[accepted] < cut))
    round_enough = np.flatnonzero(~(round_ < cut))  # NaN (not measured) stays
    again = _suppress(centres[round_enough], scores[round_enough], min_distance, most,
                      stretch)
    return [int(round_enough[i]) for i in again], dropped


def pick_particles(probability: np.ndarray, voxel_size: float,
                   settings: PickSettings = PickSettings(),
                   exclude: np.ndarray | None = None,
                   should_stop: Callable[[], object] | None = None) -> pd.DataFrame:
    """Particles as a table: z y x (pixels), score, size (voxels above threshold), roundness
    (NaN for components), score_norm. ``should_stop`` is called between the passes over
    the volume (``jobs.progress.raise_if_stopped`` ends a job there).

    ``exclude`` (a boolean volume, e.g. a carbon model's map above its threshold) drops
    candidates centred in it before suppression, as merge removes an artifact's voxels
    (Chen et al. 2017, Supplementary Figure 6): the carbon edge is where ribosome models
    pick falsely.
    """
    prob = as_probability(probability)
    check_volume_map(prob.shape, "picking")
    check_diameter(settings.diameter, prob.shape, voxel_size)
    warn_if_saturated(prob, settings.threshold)
    if exclude is not None:
        check_same_grid(exclude, prob.shape)
    v = settings.in_voxels(voxel_size)
    find = _peak_candidates if settings.method == "peaks" else _component_candidates
    stop = should_stop or (lambda: None)
    centres, scores, sizes, round_ = find(prob, settings, v, stop)
    stop()
    massive, flat = sizes >= v["min_size"], round_ < settings.min_roundness  # NaN: not measured
    dropped = massive & flat  # counted as distinct peaks: a plateau's voxels are maxima one by one
    stretch = settings.z_stretch
    flat_peaks = len(_suppress(centres[dropped], scores[dropped], v["min_distance"], None,
                               stretch))
    keep = massive & ~flat
    if v["max_size"] is not None:
        keep &= sizes <= v["max_size"]
    edge, shape = v["edge"], np.asarray(prob.shape, float)
    inner = np.all((centres >= edge) & (centres <= shape - 1 - edge), axis=1)
    near_edge = len(_suppress(centres[keep & ~inner], scores[keep & ~inner], v["min_distance"],
                              None, stretch))  # said: an edge of half the volume left none
    keep &= inner
    on_artifact = 0
    if exclude is not None and len(centres):
        index = tuple(np.clip(np.rint(centres).astype(int), 0, shape.astype(int) - 1).T)
        inside = np.asarray(exclude, bool)[index]
        # said: else 0 picks looked empty
        on_artifact = len(_suppress(centres[keep & inside], scores[keep & inside],
                                    v["min_distance"], None, stretch))
        keep &= ~inside
    centres, scores, sizes, round_ = centres[keep], scores[keep], sizes[keep], round_[keep]
    accepted, less_round = _suppress_relative(centres, scores, round_, v["min_distance"],
                                              settings)
    table = pd.DataFrame(centres[accepted].reshape(-1, 3), columns=["z", "y", "x"])
    table["score"] = scores[accepted]
    table["size"] = sizes[accepted].astype(int)
    table["roundness"] = round_[accepted]
    table["score_norm"] = table["score"] / table["score"].max() if len(table) else table["score"]
    table.attrs["flat_or_long"] = report_shape(flat_peaks, len(table), settings)
    table.attrs["less_round"] = less_round  # the relative cut's: no warning, a note
    table.attrs["excluded"] = on_artifact
    table.attrs["near_edge"] = near_edge
    return table


def artifact_region(artifact: np.ndarray, threshold: float | None, shape: tuple[int, ...],
                    name: str = "the artifact map") -> np.ndarray:
    """Where an artifact's map (carbon) is above its threshold (0.5 without one): no picks."""
    check_same_grid(artifact, shape, name)
    cut = 0.5 if threshold is None else float(threshold)
    return as_probability(np.asarray(artifact), name=name) > cut


def suggest_score_cut(scores: np.ndarray) -> float | None:
    """A score below which picks are likely false: Otsu's cut of the score histogram.

    None when there are too few picks for a histogram to say anything.
    """
    scores = np.asarray(scores, float)
    scores = scores[np.isfinite(scores)]
    if len(scores) < 8 or np.ptp(scores) <= 0:
        return None
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(scores))


def sample_along(mask: np.ndarray, spacing: float, voxel_size: float) -> pd.DataFrame:
    """Points every ``spacing`` Angstrom along a filament (skeleton) or over a membrane."""
    from skimage.morphology import skeletonize

    mask = np.asarray(mask) > 0
    check_volume_map(mask.shape, "points along a mask")
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
