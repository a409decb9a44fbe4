"""Gold-standard subtomogram averaging: initial model, refinement, FSC.

``iter_average`` is a generator so a GUI worker can show every iteration
and stop between batches; ``average`` runs it to the end. Everything is
torch, batched, and runs on a GPU when one is present.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import torch

from ..errors import InvalidSettingsError
from ..nn.devices import pick_device
from .align import Aligner, Alignment, fourier_crop
from .reconstruct import Reconstruction
from .rotations import local_rotations, symmetry_operators, uniform_rotations
from .volumes import (centre_of_mass_shift, fourier_shell_correlation, fsc_weighting, lowpass,
                      normalise_inside, resolution_from_fsc, soft_sphere, transform_volumes)
from .wedge import wedge_mask

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class AverageSettings:
    """How to average; sizes in voxels of the extracted boxes, resolutions in Angstrom."""

    box: int = 32
    iterations: int = 5
    symmetry: str = "C1"
    angular_step: float = 20.0  # global search of the first iteration (degrees)
    final_step: float = 2.0  # local searches halve the step down to this
    max_shift: float | None = None  # voxels from the pick; default box / 6
    tilt_min: float = -60.0
    tilt_max: float = 60.0
    mask_radius: float | None = None  # voxels; default 0.42 box
    start_resolution: float | None = None  # low-pass of the starting model; default max(60 A, 5 voxels)
    invert: bool = True  # tomograms show protein dark; averages show it bright
    initial_iterations: int = 3  # reference-free start: passes over the data
    initial_batch: int = 0  # particles per update; 0 = all (small batches drifted, see docs)
    initial_rate: float = 1.0  # weight of each batch average in the update
    initial_step: float = 25.0  # global search step of the start (degrees)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        if self.box < 12 or self.box % 2:
            raise InvalidSettingsError("the box size must be an even number of at least 12 voxels.")
        if self.iterations < 1:
            raise InvalidSettingsError("at least one refinement iteration is needed.")
        if not 0.5 <= self.final_step <= self.angular_step <= 90:
            raise InvalidSettingsError("angular steps need 0.5 <= final step <= first step <= 90 degrees.")
        if self.initial_batch == 1 or self.initial_batch < 0 or not 0 < self.initial_rate <= 1:
            raise InvalidSettingsError("the initial model needs batches of 2 or more (0 = all) "
                                       "and a rate in (0, 1].")
        symmetry_operators(self.symmetry)  # raises on an unknown group

    @property
    def shift_limit(self) -> float:
        return float(self.max_shift if self.max_shift is not None else self.box / 6)

    @property
    def radius(self) -> float:
        return float(self.mask_radius if self.mask_radius is not None else 0.42 * self.box)

    def start_cutoff(self, voxel_size: float) -> float:
        resolution = self.start_resolution or max(60.0, 5 * voxel_size)
        return min(0.5, voxel_size / resolution)


@dataclass
class IterationState:
    """What the GUI shows after each step."""

    stage: str  # "initial model" or "refinement"
    step: int
    total: int
    average: np.ndarray
    fsc: np.ndarray | None = None
    resolution: float | None = None  # Angstrom, FSC 0.143 of the half maps
    angular_step: float | None = None
    mean_score: float | None = None
    seconds: float = 0.0


@dataclass
class AverageResult:
    average: np.ndarray  # FSC-weighted, low-passed at the resolution
    half_maps: tuple[np.ndarray, np.ndarray]
    fsc: np.ndarray  # shells 0 .. box/2
    resolution: float
    alignment: Alignment  # per particle
    halves: np.ndarray  # 1 or 2 per particle (RELION's rlnRandomSubset)
    voxel_size: float
    settings: AverageSettings
    history: list[dict] = field(default_factory=list)

    def fsc_table(self) -> list[dict]:
        box = self.settings.box
        return [{"shell": i, "frequency_per_angstrom": i / (box * self.voxel_size),
                 "resolution_angstrom": (box * self.voxel_size / i) if i else float("inf"),
                 "fsc": float(v)} for i, v in enumerate(self.fsc)]


def _working_box(box: int, cutoff: float) -> int:
    """Smallest even box that still holds ``cutoff`` (cycles/voxel) with some margin."""
    needed = int(np.ceil(2 * cutoff * box * 1.3))
    return int(min(box, max(16, needed + needed % 2)))


class _Prepared:
    """Particles on the device, with down-sampled copies cached per working box."""

    def __init__(self, data: np.ndarray, settings: AverageSettings, device: torch.device):
        self.settings = settings
        self.device = device
        self.full = torch.as_tensor(np.ascontiguousarray(data, dtype=np.float32), device=device)
        if settings.invert:
            self.full = -self.full
        self.box = self.full.shape[-1]
        self._aligners: dict[tuple[int, float], Aligner] = {}

    def aligner(self, cutoff: float, highpass: float = 4.0) -> tuple[Aligner, float]:
        small = _working_box(self.box, cutoff)
        scale = small / self.box
        key = (small, round(cutoff, 4), highpass)
        if key not in self._aligners:
            self._aligners.clear()  # one set of spectra at a time keeps memory flat
            s = self.settings
            data = fourier_crop(self.full, small)
            mask = soft_sphere(small, s.radius * scale, 2.0, self.device)
            wedge = wedge_mask(small, s.tilt_min, s.tilt_max, device=self.device)
            self._aligners[key] = Aligner(data, wedge, min(0.5, cutoff / scale),
                                          s.shift_limit * scale, mask, highpass)
        return self._aligners[key], scale

    def reconstruct(self, indices: np.ndarray, alignment: Alignment) -> Reconstruction:
        s = self.settings
        rec = Reconstruction(self.box, s.tilt_min, s.tilt_max, self.device)
        rec.add(self.full[torch.as_tensor(indices, device=self.device)],
                alignment.matrices[indices], alignment.shifts[indices])
        return rec


def _recentre(volume: torch.Tensor) -> torch.Tensor:
    shift = centre_of_mass_shift(volume)
    eye = torch.eye(3, device=volume.device)[None]
    return transform_volumes(volume, eye, shift[None])[0]


def crop_centred(volume: torch.Tensor | None, box: int) -> torch.Tensor | None:
    """The central ``box``^3 of a centred Fourier-space map (None stays None)."""
    if volume is None or volume.shape[-1] == box:
        return volume
    lo = volume.shape[-1] // 2 - box // 2
    return volume[..., lo:lo + box, lo:lo + box, lo:lo + box]


def _search(prepared: _Prepared, reference: torch.Tensor, cutoff: float, indices: np.ndarray,
            current: Alignment | None, step: float, search_range: float,
            should_stop, known: torch.Tensor | None = None, highpass: float = 4.0) -> Alignment:
    """Global search when ``current`` is None, local around it otherwise (full-box shifts).

    ``known``: the reference's measured Fourier voxels (centred), None if all;
    ``highpass``: Fourier shells below this are left out of the score.
    """
    aligner, scale = prepared.aligner(cutoff, highpass)
    small_ref = fourier_crop(reference, aligner.box)
    small_known = crop_centred(known, aligner.box)
    if current is None:
        found = aligner.search_global(small_ref, uniform_rotations(step), indices, should_stop,
                                      small_known)
    else:
        found = aligner.search_local(small_ref, current.matrices[indices],
                                     local_rotations(step, search_range), indices, should_stop,
                                     small_known)
    found.shifts = found.shifts / scale
    return found


def _initial_model(prepared: _Prepared, voxel_size: float, rng: np.random.Generator,
                   should_stop):
    # a generator: yields IterationState per batch, returns the model (None when stopped)
    """Reference-free start: one particle as the seed, then global alignment and averaging.

    The seed is anisotropic and of the right hand, unlike the featureless
    blob that randomly oriented particles average to. The reference keeps
    track of which Fourier voxels it has measured, so the seed's own missing
    wedge does not bias the search. With ``initial_batch`` set, updates are
    made from batches (EMAN2's e2spt_sgd); on 60 synthetic ribosomes batches
    of 12 drifted away from the structure, whole passes did not.
    """
    s = prepared.settings
    n = len(prepared.full)
    cutoff = s.start_cutoff(voxel_size)
    mask = soft_sphere(prepared.box, s.radius, 3.0, prepared.device)
    seed = np.array([int(rng.integers(n))])
    identity = Alignment(np.repeat(np.eye(3)[None], n, 0), np.zeros((n, 3)), np.zeros(n))
    first = prepared.reconstruct(seed, identity)
    reference = normalise_inside(lowpass(first.volume(), cutoff), mask) * mask
    known = first.known()
    batch_size = n if s.initial_batch in (0, None) else min(n, s.initial_batch)
    batches_per_pass = max(1, n // batch_size)
    total = s.initial_iterations * batches_per_pass
    step = 0
    for _ in range(s.initial_iterations):
        order = rng.permutation(n)
        for b in range(batches_per_pass):
            if should_stop and should_stop():
                return None
            start = time.perf_counter()
            batch = np.sort(order[b * batch_size:(b + 1) * batch_size])
            found = _search(prepared, reference, cutoff, batch, None, s.initial_step, 0.0,
                            should_stop, known)
            full = Alignment(np.zeros((n, 3, 3)), np.zeros((n, 3)), np.zeros(n))
            full.matrices[batch], full.shifts[batch] = found.matrices, found.shifts
            rec = prepared.reconstruct(batch, full)
            batch_average = normalise_inside(lowpass(rec.volume(s.symmetry), cutoff), mask)
            batch_known = rec.known()
            known = None if known is None or batch_known is None else torch.maximum(known, batch_known)
            reference = (1 - s.initial_rate) * reference + s.initial_rate * batch_average
            reference = normalise_inside(_recentre(lowpass(reference, cutoff)), mask) * mask
            step += 1
            yield IterationState("initial model", step, total, reference.cpu().numpy(),
                                 angular_step=s.initial_step, mean_score=float(found.scores.mean()),
                                 seconds=time.perf_counter() - start)
    return reference


def iter_average(particles: np.ndarray, voxel_size: float,
                 settings: AverageSettings = AverageSettings(),
                 reference: np.ndarray | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[IterationState | AverageResult]:
    """Yield an :class:`IterationState` per step, then the :class:`AverageResult`.

    ``particles`` (n, box, box, box) as extracted (protein dark unless
    ``settings.invert`` is off); ``reference`` (box^3, protein bright) skips
    the reference-free start. Stopping returns without a result.
    """
    s = settings
    particles = np.asarray(particles)
    if particles.ndim != 4 or particles.shape[1:] != (s.box,) * 3:
        raise InvalidSettingsError(f"particles must be (n, {s.box}, {s.box}, {s.box}) boxes.")
    if len(particles) < 4:
        raise InvalidSettingsError("averaging needs at least 4 particles (2 per half set).")
    if voxel_size <= 0:
        raise InvalidSettingsError("the voxel size must be positive.")
    device = pick_device(s.device)
    rng = np.random.default_rng(s.seed)
    prepared = _Prepared(particles, s, device)
    n = len(particles)
    mask = soft_sphere(s.box, s.radius, 3.0, device)
    cutoff = s.start_cutoff(voxel_size)
    if reference is None:
        start_model = yield from _initial_model(prepared, voxel_size, rng, should_stop)
        if start_model is None:
            return
    else:
        reference = np.asarray(reference, dtype=np.float32)
        if reference.shape != (s.box,) * 3:
            raise InvalidSettingsError(f"the reference is {reference.shape}, the boxes are {s.box}^3.")
        start_model = normalise_inside(torch.as_tensor(reference, device=device), mask)
    halves = np.ones(n, dtype=int)
    halves[rng.permutation(n)[: n // 2]] = 2
    groups = [np.nonzero(halves == h)[0] for h in (1, 2)]
    references = [lowpass(start_model, cutoff)] * 2
    alignment = Alignment(np.zeros((n, 3, 3)), np.zeros((n, 3)), np.zeros(n))
    step = s.angular_step
    history: list[dict] = []
    fsc = np.zeros(s.box // 2 + 1)
    resolution = voxel_size / cutoff
    recs: list[Reconstruction] = []
    maps: list[torch.Tensor] = []
    for iteration in range(1, s.iterations + 1):
        start = time.perf_counter()
        recs = []
        for group, ref in zip(groups, references):
            current = None if iteration == 1 else alignment
            found = _search(prepared, ref, cutoff, group, current, step, 2 * step, should_stop)
            if should_stop and should_stop():
                return
            alignment.matrices[group] = found.matrices
            alignment.shifts[group] = found.shifts
            alignment.scores[group] = found.scores
            recs.append(prepared.reconstruct(group, alignment))
        maps = [normalise_inside(rec.volume(s.symmetry), mask) for rec in recs]
        fsc = fourier_shell_correlation(maps[0] * mask, maps[1] * mask)
        resolution = resolution_from_fsc(fsc, s.box, voxel_size)
        cutoff = min(0.5, voxel_size / resolution + 1.0 / s.box)
        weight = fsc_weighting(fsc, s.box, device)
        references = [lowpass(torch.fft.irfftn(torch.fft.rfftn(m) * weight, s=m.shape), cutoff)
                      for m in maps]
        seconds = time.perf_counter() - start
        history.append({"iteration": iteration, "angular_step": step, "resolution": resolution,
                        "mean_score": float(alignment.scores.mean()), "seconds": seconds})
        yield IterationState("refinement", iteration, s.iterations,
                             ((maps[0] + maps[1]) / 2).cpu().numpy(), fsc, resolution, step,
                             float(alignment.scores.mean()), seconds)
        step = max(s.final_step, step / 2)
    merged = recs[0].merged_with(recs[1]).volume(s.symmetry)
    weight = fsc_weighting(fsc, s.box, device)
    final = torch.fft.irfftn(torch.fft.rfftn(merged) * weight, s=merged.shape)
    final = normalise_inside(lowpass(final, min(0.5, voxel_size / resolution)), mask)
    half_maps = tuple(m.cpu().numpy() for m in maps)  # the last iteration's, already normalised
    yield AverageResult(average=final.cpu().numpy(), half_maps=half_maps, fsc=fsc,
                        resolution=resolution, alignment=alignment, halves=halves,
                        voxel_size=voxel_size, settings=s, history=history)


def average(particles: np.ndarray, voxel_size: float, settings: AverageSettings = AverageSettings(),
            reference: np.ndarray | None = None, progress: Progress | None = None) -> AverageResult:
    """Run :func:`iter_average` to the end (``progress(step, total, message)``)."""
    result = None
    for state in iter_average(particles, voxel_size, settings, reference):
        if isinstance(state, AverageResult):
            result = state
        elif progress:
            note = f", {state.resolution:.1f} A" if state.resolution else ""
            progress(state.step, state.total, f"{state.stage}{note}")
    assert result is not None
    return result

