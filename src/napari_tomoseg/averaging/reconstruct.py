"""Wedge-weighted averaging: each Fourier voxel over the particles that measured it."""

from __future__ import annotations

import numpy as np
import torch

from .rotations import symmetry_operators
from .volumes import transform_volumes
from .wedge import centred_wedge, to_rfft_layout, wedge_mask

_BATCH = 64


class Reconstruction:
    """Accumulates rotated particle spectra and how often each voxel was measured."""

    def __init__(self, box: int, tilt_min: float = -60.0, tilt_max: float = 60.0, device=None):
        self.box = box
        self.device = device
        self.wedge = wedge_mask(box, tilt_min, tilt_max, device=device)
        self.wedge_centred = centred_wedge(box, tilt_min, tilt_max, device=device)
        self.numerator = torch.zeros((box, box, box // 2 + 1), dtype=torch.complex64, device=device)
        self.weights = torch.zeros((box, box, box // 2 + 1), dtype=torch.float32, device=device)
        self.coverage_centred = torch.zeros((box,) * 3, dtype=torch.float32, device=device)
        self.count = 0

    @torch.no_grad()
    def add(self, particles: torch.Tensor, matrices: np.ndarray, shifts_xyz: np.ndarray) -> None:
        """Add particles with ``particle(r) = ref(A^T (r - t))``, i.e. ``ref(s) = particle(A s + t)``."""
        for start in range(0, len(particles), _BATCH):
            part = particles[start:start + _BATCH]
            to_particle = torch.as_tensor(matrices[start:start + _BATCH], dtype=torch.float32,
                                          device=self.device)
            shifts = torch.as_tensor(shifts_xyz[start:start + _BATCH], dtype=torch.float32,
                                     device=self.device)
            measured = torch.fft.irfftn(torch.fft.rfftn(part, dim=(-3, -2, -1)) * self.wedge,
                                        s=(self.box,) * 3, dim=(-3, -2, -1))
            aligned = transform_volumes(measured, to_particle, shifts)
            self.numerator += torch.fft.rfftn(aligned, dim=(-3, -2, -1)).sum(dim=0)
            coverage = transform_volumes(self.wedge_centred, to_particle).sum(dim=0)
            self.coverage_centred += coverage
            self.weights += to_rfft_layout(coverage)
            self.count += len(part)

    def merged_with(self, other: "Reconstruction") -> "Reconstruction":
        out = Reconstruction.__new__(Reconstruction)
        out.__dict__.update(self.__dict__)
        out.numerator = self.numerator + other.numerator
        out.weights = self.weights + other.weights
        out.coverage_centred = self.coverage_centred + other.coverage_centred
        out.count = self.count + other.count
        return out

    def volume(self, symmetry: str = "C1") -> torch.Tensor:
        """The average; voxels measured by fewer than one particle's worth are not amplified."""
        spectrum = self.numerator / torch.clamp(self.weights, min=1.0)
        average = torch.fft.irfftn(spectrum, s=(self.box,) * 3, dim=(-3, -2, -1))
        return symmetrise(average, symmetry)

    def known(self) -> torch.Tensor | None:
        """Centred 0/1 map of measured Fourier voxels; None when (nearly) all are."""
        known = (self.coverage_centred >= 0.5).float()
        return None if float(known.mean()) > 0.995 else known


def symmetrise(volume: torch.Tensor, symmetry: str = "C1") -> torch.Tensor:
    """Mean of the volume over the point group's operators (identity for C1)."""
    operators = symmetry_operators(symmetry)
    if len(operators) == 1:
        return volume
    rotated = transform_volumes(volume, torch.as_tensor(operators, dtype=torch.float32,
                                                        device=volume.device))
    return rotated.mean(dim=0)
