"""Score an average against a known structure (synthetic data, benchmarks, tests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .align import Aligner, Alignment, fourier_crop
from .rotations import angular_distance, local_rotations, uniform_rotations
from .volumes import (fourier_shell_correlation, normalise_inside, resolution_from_fsc,
                      shell_index, soft_sphere, transform_volumes)
from .wedge import wedge_mask


@dataclass
class TruthComparison:
    correlation: float  # inside the mask, after superposition, shells < 3 removed
    mirror_correlation: float  # the superposition score against the mirrored truth
    fsc: np.ndarray
    resolution: float  # Angstrom at FSC 0.5 against the truth
    superposition: Alignment  # average(r) = truth(B^T (r - u))

    @property
    def correct_hand(self) -> bool:
        return self.correlation > self.mirror_correlation


def superpose(volume: torch.Tensor, truth: torch.Tensor, mask: torch.Tensor,
              coarse: bool = True, coarse_step: float = 15.0) -> tuple[Alignment, float]:
    """Find B, u with volume(r) = truth(B^T (r - u)); full Fourier space (no wedge).

    A coarse global search on half-size copies every ``coarse_step`` degrees (or, with
    ``coarse`` off, the identity as the start), then local refinements over +-15 degrees
    in 5-degree steps and over +-4.5 in 1.5.
    """
    box = volume.shape[-1]
    start = np.eye(3)[None]
    if coarse:
        small = max(16, box // 2 + (box // 2) % 2)
        coarse_aligner = Aligner(fourier_crop(volume[None], small), torch.ones_like(wedge_mask(small)),
                                 0.5, small / 4, soft_sphere(small, 0.42 * small, 2.0))
        start = coarse_aligner.search_global(fourier_crop(truth, small),
                                             uniform_rotations(coarse_step)).matrices
    aligner = Aligner(volume[None], torch.ones_like(wedge_mask(box)), 0.5, box / 4, mask)
    fine = aligner.search_local(truth, start, local_rotations(5.0, 15.0))
    finer = aligner.search_local(truth, fine.matrices, local_rotations(1.5, 4.5))
    return finer, float(finer.scores[0])


def compare_to_truth(average: np.ndarray, truth: np.ndarray, voxel_size: float,
                     mask_radius: float | None = None, coarse_step: float = 15.0) -> TruthComparison:
    """Superpose the average on the truth (and on its mirror image) and correlate; a
    ``coarse_step`` of 20 degrees (about 2x fewer rotations) suits quick checks."""
    box = average.shape[-1]
    mask = soft_sphere(box, mask_radius or 0.42 * box, 3.0)
    vol = normalise_inside(torch.as_tensor(average, dtype=torch.float32), mask)
    ref = normalise_inside(torch.as_tensor(truth, dtype=torch.float32), mask)
    placed, _ = superpose(vol, ref, mask, coarse_step=coarse_step)
    mirror = torch.flip(ref, dims=(-1,))
    _, mirror_score = superpose(vol, mirror, mask, coarse_step=coarse_step)
    b_inverse = placed.matrices[0].T  # the truth placed as the average: truth(B^T (r - u))
    moved = transform_volumes(ref, torch.as_tensor(b_inverse[None], dtype=torch.float32),
                              torch.as_tensor(-b_inverse @ placed.shifts[0])[None])[0]
    a, b = normalise_inside(vol, mask) * mask, normalise_inside(moved, mask) * mask
    fsc = fourier_shell_correlation(a, b)
    # without its lowest shells: the overall blob alone correlates ~0.9 with the truth
    keep = (shell_index(box) >= 3).float()
    fa, fb = torch.fft.rfftn(a) * keep, torch.fft.rfftn(b) * keep
    correlation = float((fa * fb.conj()).real.sum() / torch.sqrt((fa.abs() ** 2).sum() * (fb.abs() ** 2).sum()))
    return TruthComparison(correlation=correlation, mirror_correlation=mirror_score,
                           fsc=fsc, resolution=resolution_from_fsc(fsc, box, voxel_size, 0.5),
                           superposition=placed)


def orientation_errors(found: Alignment, true_matrices: np.ndarray, superposition: Alignment,
                       found_zyx: np.ndarray, true_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Angular (degrees) and positional (voxels) error of each particle.

    With average(s) = truth(B^T (s - u)) and particle(r) = average(A^T (r - t)),
    the particle is truth((A B)^T (r - t - A u)): ``A B`` relative to the
    truth, centred at ``found + A u``.
    """
    b = superposition.matrices[0]
    u = superposition.shifts[0]
    relative = np.einsum("nij,jk->nik", found.matrices, b)
    angles = angular_distance(relative, true_matrices)
    offset_xyz = np.einsum("nij,j->ni", found.matrices, u)
    centres = np.asarray(found_zyx) + offset_xyz[:, ::-1]
    return angles, np.linalg.norm(centres - np.asarray(true_zyx), axis=1)
