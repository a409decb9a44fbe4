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
from .align import Alignment
from .evaluate import superpose
from .inputs import checked_inputs
from .reconstruct import Reconstruction
from .rotations import symmetry_operators
from .search import PreparedParticles, recentre, search_orientations
from .validation import ResolutionCheck, check_resolution
from .volumes import (LOWPASS_EDGE, fourier_shell_correlation, fsc_weighting, lowpass,
                      normalise_inside, resolution_from_fsc, soft_sphere, transform_volumes)

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
    min_distance: float | None = None  # voxels; closer picks are repeats (default 2)

    def __post_init__(self):
        if not 12 <= self.box <= 512 or self.box % 2:  # one rule, said once (extract caps 512)
            raise InvalidSettingsError("the box size must be an even number of 12-512 voxels.")
        if self.iterations < 1:
            raise InvalidSettingsError("at least one refinement iteration is needed.")
        if not 0.5 <= self.final_step <= self.angular_step <= 90:
            raise InvalidSettingsError("angular steps need 0.5 <= final step <= first step <= 90 degrees.")
        if not 0.5 <= self.initial_step <= 90:
            raise InvalidSettingsError("the start's global step must be 0.5-90 degrees.")
        if self.initial_batch == 1 or self.initial_batch < 0 or not 0 < self.initial_rate <= 1:
            raise InvalidSettingsError("the initial model needs batches of 2 or more (0 = all) "
                                       "and a rate in (0, 1].")
        if self.min_distance is not None and not self.min_distance >= 0:
            raise InvalidSettingsError("the duplicate distance must be 0 (keep all) or more voxels.")
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

    def start_limit(self, voxel_size: float, shared: bool) -> float:
        """Angstrom up to which agreement of the half maps can come from their start.

        Independent starts (reference-free) share nothing: their low-pass. One reference
        given to both halves shares all it passes, the low-pass's cosine edge included:
        aligning pure noise to a reference left a corrected FSC of 0.4-0.7 there.
        """
        cutoff = self.start_cutoff(voxel_size)
        return voxel_size / min(0.5, cutoff + LOWPASS_EDGE if shared else cutoff)


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
    fsc: np.ndarray  # masked half-map FSC, shells 0 .. box/2
    resolution: float  # Angstrom at 0.143 of the phase-randomisation-corrected FSC
    alignment: Alignment  # per particle
    halves: np.ndarray  # 1 or 2 per particle (RELION's rlnRandomSubset)
    voxel_size: float
    settings: AverageSettings
    history: list[dict] = field(default_factory=list)
    check: ResolutionCheck | None = None  # mask check and whether the data support the resolution

    @property
    def supported(self) -> bool:
        return self.check is None or self.check.supported

    @property
    def note(self) -> str:
        return self.check.note if self.check else ""

    def report(self) -> dict:
        """Resolution, its verdict and the FSC check, as JSON values."""
        return {"resolution_angstrom": self.resolution, **(self.check.report() if self.check else {})}

    def fsc_table(self) -> list[dict]:
        box = self.settings.box
        rows = [{"shell": i, "frequency_per_angstrom": i / (box * self.voxel_size),
                 "resolution_angstrom": (box * self.voxel_size / i) if i else float("inf"),
                 "fsc": float(v)} for i, v in enumerate(self.fsc)]
        if self.check is not None:
            for i, row in enumerate(rows):
                row.update(fsc_unmasked=float(self.check.fsc_unmasked[i]),
                           fsc_phase_randomised=float(self.check.fsc_randomised[i]),
                           fsc_corrected=float(self.check.fsc_corrected[i]))
        return rows


def _batches_per_pass(settings: AverageSettings, size: int) -> int:
    batch = size if settings.initial_batch in (0, None) else min(size, settings.initial_batch)
    return max(1, size // batch)


def _initial_model(prepared: PreparedParticles, voxel_size: float, rng: np.random.Generator,
                   should_stop, group: np.ndarray, offset: int = 0, total: int = 0):
    # a generator: yields IterationState per batch, returns the model (None when stopped)
    """Reference-free start from the particles in ``group`` only: a seed, then global passes.

    Each half set gets its own start (as in RELION), so nothing but the
    particles of that half shapes its model. The seed (one particle) is
    anisotropic and of the right hand, unlike the featureless blob that
    randomly oriented particles average to. The reference keeps track of
    which Fourier voxels it has measured, so the seed's own missing wedge
    does not bias the search. With ``initial_batch`` set, updates are made
    from batches (EMAN2's e2spt_sgd); on 60 synthetic ribosomes batches of 12
    drifted away from the structure, whole passes did not.
    """
    s = prepared.settings
    n, size = len(prepared.full), len(group)
    cutoff = s.start_cutoff(voxel_size)
    mask = soft_sphere(prepared.box, s.radius, 3.0, prepared.device)
    seed = np.array([int(rng.choice(group))])
    identity = Alignment(np.repeat(np.eye(3)[None], n, 0), np.zeros((n, 3)), np.zeros(n))
    first = prepared.reconstruct(seed, identity)
    reference = normalise_inside(lowpass(first.volume(), cutoff), mask) * mask
    known = first.known()
    batches_per_pass = _batches_per_pass(s, size)
    batch_size = size if s.initial_batch in (0, None) else min(size, s.initial_batch)
    total = total or s.initial_iterations * batches_per_pass
    step = offset
    for _ in range(s.initial_iterations):
        order = group[rng.permutation(size)]
        for b in range(batches_per_pass):
            if should_stop and should_stop():
                return None
            start = time.perf_counter()
            batch = np.sort(order[b * batch_size:(b + 1) * batch_size])
            found = search_orientations(prepared, reference, cutoff, batch, None,
                                        s.initial_step, 0.0, should_stop, known)
            full = Alignment(np.zeros((n, 3, 3)), np.zeros((n, 3)), np.zeros(n))
            full.matrices[batch], full.shifts[batch] = found.matrices, found.shifts
            rec = prepared.reconstruct(batch, full)
            batch_average = normalise_inside(lowpass(rec.volume(s.symmetry), cutoff), mask)
            batch_known = rec.known()
            known = None if known is None or batch_known is None else torch.maximum(known, batch_known)
            reference = (1 - s.initial_rate) * reference + s.initial_rate * batch_average
            reference = normalise_inside(recentre(lowpass(reference, cutoff)), mask) * mask
            step += 1
            yield IterationState("initial model", step, total, reference.cpu().numpy(),
                                 angular_step=s.initial_step, mean_score=float(found.scores.mean()),
                                 seconds=time.perf_counter() - start)
    return reference


def _independent_starts(prepared: PreparedParticles, voxel_size: float, rng: np.random.Generator,
                        should_stop, groups: list[np.ndarray]):
    # a generator like _initial_model; returns one start model per half (None when stopped)
    """One reference-free start per half set, the second superposed on the first.

    The superposition (a rigid rotation and shift of the low-passed model)
    only puts both halves in one frame so that their maps can be compared;
    no density passes from one half to the other.
    """
    s = prepared.settings
    per_half = [s.initial_iterations * _batches_per_pass(s, len(g)) for g in groups]
    models, offset = [], 0
    for group, steps in zip(groups, per_half):
        model = yield from _initial_model(prepared, voxel_size, rng, should_stop, group,
                                          offset, sum(per_half))
        if model is None:
            return None
        models.append(model)
        offset += steps
    mask = soft_sphere(prepared.box, s.radius, 3.0, prepared.device)
    placed, _ = superpose(models[0].cpu(), models[1].cpu(), mask.cpu())  # m1(r) = m2(B^T (r - u))
    b_inverse = placed.matrices[0].T
    shift = torch.as_tensor(-b_inverse @ placed.shifts[0], dtype=torch.float32)[None]
    moved = transform_volumes(models[1].cpu(), torch.as_tensor(b_inverse[None], dtype=torch.float32),
                              shift)[0].to(prepared.device)
    return [models[0], normalise_inside(moved, mask) * mask]


def _half_sets(n: int, rng: np.random.Generator, given: np.ndarray | None) -> np.ndarray:
    """The particles' half sets: the given ones (RELION's rlnRandomSubset of an earlier run,
    kept as RELION keeps them: new random halves would mix particles that shaped one half's
    map into the other, no longer gold-standard) when every particle has one and each half
    holds two, else a new random split (the rng is drawn from either way: same seed, same run)."""
    halves = np.ones(n, dtype=int)
    halves[rng.permutation(n)[: n // 2]] = 2
    if given is not None and len(given) == n:
        given = np.asarray(given, dtype=float)
        known = np.isin(given, (1, 2))  # particles without one (added since) get a random one
        kept = np.where(known, given, halves).astype(int)
        if known.any() and min((kept == 1).sum(), (kept == 2).sum()) >= 2:
            return kept
    return halves


def _start_references(prepared: PreparedParticles, voxel_size: float, rng: np.random.Generator,
                      should_stop, groups: list[np.ndarray], reference: np.ndarray | None):
    # a generator (initial-model progress); returns the two low-passed starts, None if stopped
    """A user reference starts both halves (low-passed); otherwise each half its own model."""
    s = prepared.settings
    mask = soft_sphere(s.box, s.radius, 3.0, prepared.device)
    if reference is None:
        models = yield from _independent_starts(prepared, voxel_size, rng, should_stop, groups)
        if models is None:
            return None
    else:
        models = [normalise_inside(torch.as_tensor(reference, device=prepared.device), mask)] * 2
    return [lowpass(m, s.start_cutoff(voxel_size)) for m in models]


def iter_average(particles: np.ndarray, voxel_size: float,
                 settings: AverageSettings = AverageSettings(),
                 reference: np.ndarray | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 halves: np.ndarray | None = None) -> Iterator[IterationState | AverageResult]:
    """Yield an :class:`IterationState` per step, then the :class:`AverageResult`.

    ``particles`` (n, box, box, box) as extracted (protein dark unless
    ``settings.invert`` is off); ``reference`` (box^3, protein bright) skips
    the reference-free start. The half sets (``halves``, else ``_half_sets``) stay
    independent: each is aligned only to its own map. Stopping returns without a result.
    """
    s = settings
    particles, reference = checked_inputs(particles, voxel_size, s, reference)
    device = pick_device(s.device)
    rng = np.random.default_rng(s.seed)
    prepared = PreparedParticles(particles, s, device)
    n = len(particles)
    mask = soft_sphere(s.box, s.radius, 3.0, device)
    halves = _half_sets(n, rng, halves)
    groups = [np.nonzero(halves == h)[0] for h in (1, 2)]
    references = yield from _start_references(prepared, voxel_size, rng, should_stop, groups, reference)
    if references is None:
        return
    start_cutoff = cutoff = s.start_cutoff(voxel_size)
    alignment = Alignment(np.zeros((n, 3, 3)), np.zeros((n, 3)), np.zeros(n))
    step = s.angular_step
    history: list[dict] = []
    recs: list[Reconstruction] = []
    maps: list[torch.Tensor] = []
    for iteration in range(1, s.iterations + 1):
        start = time.perf_counter()
        recs = []
        for group, ref in zip(groups, references):
            current = None if iteration == 1 else alignment
            found = search_orientations(prepared, ref, cutoff, group, current, step, 2 * step,
                                        should_stop)
            if should_stop and should_stop():
                return
            alignment.matrices[group] = found.matrices
            alignment.shifts[group] = found.shifts
            alignment.scores[group] = found.scores
            recs.append(prepared.reconstruct(group, alignment))
        maps = [normalise_inside(rec.volume(s.symmetry), mask) for rec in recs]
        recs[1], maps[1] = _register(prepared, groups[1], alignment, maps, mask)
        fsc = fourier_shell_correlation(maps[0] * mask, maps[1] * mask)
        resolution = resolution_from_fsc(fsc, s.box, voxel_size)
        # never align on less than the start had: a failed iteration must not blur the search
        cutoff = max(start_cutoff, min(0.5, voxel_size / resolution + 1.0 / s.box))
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
    yield _result(recs, maps, mask, alignment, halves, voxel_size, s, history, reference)


def _register(prepared: PreparedParticles, group: np.ndarray, alignment: Alignment,
              maps: list[torch.Tensor], mask: torch.Tensor) -> tuple[Reconstruction, torch.Tensor]:
    """Half 2 rigidly fitted onto half 1 (EMAN2 also registers its even/odd maps).

    Independent halves drift apart by a voxel or a few degrees, which alone
    would cut their FSC; the fit moves only half 2's particle orientations
    (with m1(r) = m2(B^T (r - u)): A -> A B^T, t -> t - A B^T u), no density.
    """
    placed, _ = superpose(maps[0].cpu(), maps[1].cpu(), mask.cpu(), coarse=False)
    b, u = placed.matrices[0], placed.shifts[0]
    moved = np.einsum("nij,kj->nik", alignment.matrices[group], b)
    alignment.matrices[group] = moved
    alignment.shifts[group] = alignment.shifts[group] - np.einsum("nij,j->ni", moved, u)
    rec = prepared.reconstruct(group, alignment)
    return rec, normalise_inside(rec.volume(prepared.settings.symmetry), mask)


def _result(recs: list[Reconstruction], maps: list[torch.Tensor], mask: torch.Tensor,
            alignment: Alignment, halves: np.ndarray, voxel_size: float, s: AverageSettings,
            history: list[dict], reference: np.ndarray | None = None) -> AverageResult:
    """Check the half maps (mask, start: one ``reference`` for both halves shares its whole
    low-pass), then the FSC-weighted average at the checked resolution."""
    check = check_resolution(maps[0], maps[1], mask, voxel_size,
                             s.start_limit(voxel_size, reference is not None), s.seed)
    merged = recs[0].merged_with(recs[1]).volume(s.symmetry)
    if check.supported:
        weight = fsc_weighting(check.fsc_corrected, s.box, merged.device)
        final = torch.fft.irfftn(torch.fft.rfftn(merged) * weight, s=merged.shape)
        final = lowpass(final, min(0.5, voxel_size / check.resolution))
    else:  # FSC weighting would blank it (a constant map): show it at the starting low-pass
        final = lowpass(merged, s.start_cutoff(voxel_size))
    final = normalise_inside(final, mask)
    half_maps = tuple(m.cpu().numpy() for m in maps)  # the last iteration's, already normalised
    return AverageResult(average=final.cpu().numpy(), half_maps=half_maps, fsc=check.fsc_masked,
                         resolution=check.resolution, alignment=alignment, halves=halves,
                         voxel_size=voxel_size, settings=s, history=history, check=check)


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

