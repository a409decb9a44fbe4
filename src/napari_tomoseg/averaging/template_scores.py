"""Picks scored against a reference by local template matching.

A CNN trained on a few 2D boxes learns "a dark blob of this size with two lobes" and
picks look-alikes of the particle's mass. The reference's 3D shape tells them apart:
on the realistic benchmark the true ribosome (40-voxel box), matched at each pick, ranked
true picks above false ones with an AUC of 0.91-1.00, the picks' own average with
0.89-0.99, where the averaging's own alignment score (normalised over the whole box,
neighbours included) did no better than chance (docs/averaging.md, results/rescore.txt).

Each pick's score is the best Pearson correlation, inside a sphere, between the data
around it and the reference turned through every orientation (``angular_step``) and
shifted by up to ``max_shift`` voxels. Both are low-passed by the same Gaussian; the
reference also loses the tilt series' missing wedge, as the data did.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidCoordinatesError, InvalidSettingsError, InvalidVolumeError
from .extract import extract_subtomograms
from .rotations import uniform_rotations
from .volumes import radial_frequency, transform_volumes
from .wedge import wedge_mask

_VOXELS_PER_CHUNK = 2 ** 23  # rotated reference voxels made at once (256 turns of 32^3)
_DATA_BUDGET = 24_000_000  # float32 values of the data held at once
_TEMPLATE_BUDGET = 64_000_000  # templates kept for all picks when they fit (256 MB)
MIN_ANGULAR_STEP = 5.0  # degrees: ~113,000 orientations already


@dataclass(frozen=True)
class TemplateSettings:
    """How picks are matched; lengths in Angstrom unless said."""

    angular_step: float = 20.0  # degrees between orientations (~1,900 rotations)
    max_shift: int = 2  # voxels the particle may sit off its pick, each way (steps of 1 voxel)
    lowpass: float = 30.0  # A: the Gaussian's 1/e^0.5 point
    # voxels; default the largest the box holds (box / 2 - 1): on the benchmark 19 voxels
    # around a particle of radius 12.5 told more picks apart than 16.8 (AUC 0.89-0.92 against
    # 0.85-0.87 on the training cell, its own average as the reference; results/rescore.txt)
    mask_radius: float | None = None
    tilt_min: float = -60.0
    tilt_max: float = 60.0
    invert: bool = True  # tomograms show protein dark; references bright

    def __post_init__(self):
        if not 0 <= self.max_shift <= 8:
            raise InvalidSettingsError("the shift search reaches 0-8 voxels from each pick.")
        if not self.lowpass > 0:
            raise InvalidSettingsError("the low-pass must be a positive resolution in A.")
        if self.mask_radius is not None and not self.mask_radius >= 3:
            raise InvalidSettingsError("the mask radius must be at least 3 voxels.")
        if not -90.0 <= self.tilt_min < self.tilt_max <= 90.0:  # before any work, not per pick
            raise InvalidSettingsError("the tilt range needs -90 <= minimum < maximum <= 90 "
                                       f"degrees, not {self.tilt_min:g} to {self.tilt_max:g}.")
        if not MIN_ANGULAR_STEP <= self.angular_step <= 180:
            raise InvalidSettingsError(f"the angular step must be {MIN_ANGULAR_STEP:g}-180 "
                                       "degrees.")


def _filter(box: int, voxel_size: float, s: TemplateSettings, wedge: bool) -> torch.Tensor:
    """rFFT weights: the Gaussian low-pass, times the measured region for a template."""
    k = radial_frequency(box) / voxel_size  # 1/A
    weights = torch.exp(-0.5 * (k * s.lowpass) ** 2)
    if wedge:
        weights = weights * wedge_mask(box, s.tilt_min, s.tilt_max)
    return weights


def _inside(box: int, radius: float) -> torch.Tensor:
    axis = torch.arange(box, dtype=torch.float32) - box // 2
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return (z ** 2 + y ** 2 + x ** 2 <= radius ** 2).reshape(-1)


def _standardised(values: torch.Tensor) -> torch.Tensor:
    """Rows with mean 0 and norm 1, so that a dot product is Pearson's correlation."""
    values = values - values.mean(dim=-1, keepdim=True)
    return values / torch.clamp(torch.linalg.vector_norm(values, dim=-1, keepdim=True),
                                min=1e-12)


def _templates(reference: torch.Tensor, matrices: np.ndarray, weights: torch.Tensor,
               inside: torch.Tensor) -> torch.Tensor:
    """(rotations, voxels in the mask): the reference turned, filtered, standardised."""
    box = reference.shape[-1]
    turned = transform_volumes(reference, torch.as_tensor(matrices, dtype=torch.float32))
    filtered = torch.fft.irfftn(torch.fft.rfftn(turned, dim=(-3, -2, -1)) * weights,
                                s=(box,) * 3, dim=(-3, -2, -1))
    return _standardised(filtered.reshape(len(matrices), -1)[:, inside])


def _shifted_data(tomogram: np.ndarray, zyx: np.ndarray, box: int, s: TemplateSettings,
                  voxel_size: float, inside: torch.Tensor) -> torch.Tensor:
    """(shifts, picks, voxels in the mask): the data around each pick at every shift, cut
    as one wide box (``extract_subtomograms``, padded at the edge), low-passed once over it
    (no wrap-around at a shifted box's edge), standardised."""
    size = box + 2 * s.max_shift
    wide = extract_subtomograms(tomogram, zyx, size, edge="pad", invert=s.invert)
    if wide.skipped:
        raise InvalidCoordinatesError(f"{wide.skipped} picks lie outside the tomogram.")
    data = torch.as_tensor(wide.data)
    data = torch.fft.irfftn(torch.fft.rfftn(data, dim=(-3, -2, -1))
                            * _filter(size, voxel_size, s, wedge=False),
                            s=(size,) * 3, dim=(-3, -2, -1))
    reach = range(2 * s.max_shift + 1)
    return torch.stack([_standardised(data[:, z:z + box, y:y + box, x:x + box]
                                      .reshape(len(zyx), -1)[:, inside])
                        for z in reach for y in reach for x in reach])


def checked_reference(reference: np.ndarray) -> np.ndarray:
    reference = np.asarray(reference, np.float32)
    if reference.ndim != 3 or len(set(reference.shape)) != 1 or reference.shape[0] % 2:
        raise InvalidSettingsError(f"the reference must be a cube of an even size, not "
                                   f"{' x '.join(map(str, reference.shape))}.")
    if not 12 <= reference.shape[0] <= 96:
        raise InvalidSettingsError(f"the reference's box must be 12-96 voxels, not "
                                   f"{reference.shape[0]}: bin the tomogram and the reference "
                                   "for a larger particle.")
    if not np.all(np.isfinite(reference)) or not np.ptp(reference) > 0:
        raise InvalidSettingsError("the reference is empty or holds NaN or infinite values.")
    return reference


class _Recent:
    """Values made on demand by key: all kept, or only the last (what memory allows)."""

    def __init__(self, make, keep_all: bool):
        self.make, self.keep_all, self.kept = make, keep_all, {}

    def __call__(self, key):
        if key not in self.kept:
            if not self.keep_all:
                self.kept.clear()
            self.kept[key] = self.make(key)
        return self.kept[key]


def iter_template_scores(tomogram: np.ndarray, zyx: np.ndarray, reference: np.ndarray,
                         voxel_size: float, settings: TemplateSettings = TemplateSettings()
                         ) -> Generator[tuple[int, int], None, np.ndarray]:
    """Yield (chunks done, chunks) and return the best correlation of each pick (z, y, x
    voxels) with ``reference`` (a cube at the tomogram's voxel size, protein bright) over
    orientations and small shifts: one score per pick in [-1, 1]. Closing it stops the work.

    Templates are kept for all picks when they fit in memory; otherwise the orientations
    go in the outer loop, so each template is made once and the (cheaper) data again.
    """
    reference = checked_reference(reference)
    zyx = np.asarray(zyx, float).reshape(-1, 3)
    if len(zyx) == 0 or not np.all(np.isfinite(zyx)):
        raise InvalidCoordinatesError("template matching needs picks with finite coordinates.")
    s, box = settings, reference.shape[0]
    radius = s.mask_radius or box / 2 - 1
    if radius > box / 2 - 1:
        raise InvalidSettingsError(f"a mask radius of {radius:g} voxels does not fit the "
                                   f"reference's {box}-voxel box (at most {box / 2 - 1:g}).")
    inside = _inside(box, radius)
    shifts = (2 * s.max_shift + 1) ** 3
    if shifts * int(inside.sum()) > 4 * _DATA_BUDGET:  # one pick at a time, 400 MB
        raise InvalidSettingsError(f"{shifts} shifts of a {box}-voxel reference need too much "
                                   "memory: lower the maximum shift or the mask radius.")
    per_chunk = max(1, _DATA_BUDGET // (shifts * int(inside.sum())))
    matrices = uniform_rotations(s.angular_step)
    per_turn = max(1, _VOXELS_PER_CHUNK // box ** 3)
    template_filter = _filter(box, voxel_size, s, wedge=True)
    ref = torch.as_tensor(reference)
    keep = len(matrices) * int(inside.sum()) <= _TEMPLATE_BUDGET
    templates = _Recent(lambda r: _templates(ref, matrices[r:r + per_turn], template_filter,
                                             inside), keep_all=keep)
    data = _Recent(lambda p: _shifted_data(tomogram, zyx[p:p + per_chunk], box, s, voxel_size,
                                           inside), keep_all=False)
    picks, turns = range(0, len(zyx), per_chunk), range(0, len(matrices), per_turn)
    order = [(p, r) for p in picks for r in turns] if keep else \
        [(p, r) for r in turns for p in picks]
    best = torch.full((len(zyx),), -1.0)
    with torch.no_grad():
        for done, (p, r) in enumerate(order, start=1):
            scores = torch.einsum("spv,rv->spr", data(p), templates(r)).amax(dim=(0, 2))
            best[p:p + per_chunk] = torch.maximum(best[p:p + per_chunk], scores)
            yield done, len(order)
    if not torch.all(torch.isfinite(best)):
        raise InvalidVolumeError("the tomogram holds NaN or infinite values around "
                                 f"{int((~torch.isfinite(best)).sum())} picks.")
    return best.numpy().astype(float)


def template_scores(tomogram: np.ndarray, zyx: np.ndarray, reference: np.ndarray,
                    voxel_size: float, settings: TemplateSettings = TemplateSettings()
                    ) -> np.ndarray:
    """:func:`iter_template_scores` run to the end."""
    work = iter_template_scores(tomogram, zyx, reference, voxel_size, settings)
    while True:
        try:
            next(work)
        except StopIteration as finished:
            return finished.value


def suggested_cut(scores: np.ndarray, spread: float = 2.0) -> float:
    """The median less ``spread`` median absolute deviations: picks below it match the
    reference clearly worse than most (docs/averaging.md gives what the cut did on the
    benchmark). When most scores are equal no pick stands out, and the cut keeps all."""
    scores = np.asarray(scores, float)
    scores = scores[np.isfinite(scores)]
    if len(scores) == 0:
        raise InvalidSettingsError("no scores to cut.")
    median = float(np.median(scores))
    deviation = float(np.median(np.abs(scores - median)))
    return median - spread * deviation if deviation > 0 else float(scores.min())
