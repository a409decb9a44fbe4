"""Batched volume operations in torch: rotation, masks, filters and FSC.

Volumes are (..., z, y, x) tensors in cubic boxes whose centre is voxel
``box // 2`` (the FFT convention, so rotations and Fourier shifts agree).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def _centred_coordinates(box: int, device) -> torch.Tensor:
    """(box^3, 3) (x, y, z) voxel coordinates relative to the box centre."""
    axis = torch.arange(box, dtype=torch.float32, device=device) - box // 2
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack([x, y, z], dim=-1).reshape(-1, 3)


def transform_volumes(volumes: torch.Tensor, matrices: torch.Tensor,
                      shifts_xyz: torch.Tensor | None = None) -> torch.Tensor:
    """``out(r) = volume(M r + t)`` for each matrix M (and shift t), trilinear.

    ``volumes`` is (n, z, y, x) or one (z, y, x) volume shared by all
    matrices; ``matrices`` is (n, 3, 3) on (x, y, z); shifts in voxels.
    """
    box = volumes.shape[-1]
    matrices = matrices.to(volumes.device, torch.float32)
    n = matrices.shape[0]
    coords = _centred_coordinates(box, volumes.device)  # (v, 3)
    sampled = torch.einsum("nij,vj->nvi", matrices, coords)
    if shifts_xyz is not None:
        sampled = sampled + shifts_xyz.to(volumes.device, torch.float32)[:, None, :]
    grid = (sampled + box // 2) * (2.0 / (box - 1)) - 1.0
    grid = grid.reshape(n, box, box, box, 3)
    source = volumes if volumes.dim() == 4 else volumes.unsqueeze(0)
    source = source.unsqueeze(1)
    if source.shape[0] != n:
        source = source.expand(n, -1, -1, -1, -1)
    out = F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[:, 0]


def radial_frequency(box: int, device=None, rfft: bool = True) -> torch.Tensor:
    """|k| in cycles per voxel on the (r)FFT grid of a cubic box."""
    k = torch.fft.fftfreq(box, device=device)
    kx = torch.fft.rfftfreq(box, device=device) if rfft else k
    kz, ky, kxx = torch.meshgrid(k, k, kx, indexing="ij")
    return torch.sqrt(kz ** 2 + ky ** 2 + kxx ** 2)


def soft_sphere(box: int, radius: float, edge: float = 3.0, device=None) -> torch.Tensor:
    """1 inside ``radius`` voxels, a cosine edge ``edge`` voxels wide, 0 outside."""
    r = torch.linalg.vector_norm(_centred_coordinates(box, device), dim=1).reshape(box, box, box)
    ramp = torch.clamp((r - radius) / max(edge, 1e-6), 0.0, 1.0)
    return 0.5 * (1 + torch.cos(np.pi * ramp))


LOWPASS_EDGE = 0.05  # cycles/voxel over which ``lowpass`` falls from 1 to 0


def lowpass(volumes: torch.Tensor, cutoff: float, width: float = LOWPASS_EDGE) -> torch.Tensor:
    """Cosine-edged low-pass at ``cutoff`` cycles/voxel (0.5 = Nyquist: nothing removed);
    frequencies up to ``cutoff + width`` still pass in part."""
    if cutoff >= 0.5:
        return volumes
    box = volumes.shape[-1]
    k = radial_frequency(box, volumes.device)
    ramp = torch.clamp((k - cutoff) / width, 0.0, 1.0)
    spectrum = torch.fft.rfftn(volumes, dim=(-3, -2, -1)) * 0.5 * (1 + torch.cos(np.pi * ramp))
    return torch.fft.irfftn(spectrum, s=(box,) * 3, dim=(-3, -2, -1))


def shell_index(box: int, device=None) -> torch.Tensor:
    """Integer Fourier shell of each rFFT voxel (shell i: |k| * box rounds to i)."""
    return torch.round(radial_frequency(box, device) * box).long()


def hermitian_weights(box: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Per rFFT column: 2 where the mirrored half is not stored, 1 for the DC (and Nyquist) plane.

    Sums over an rFFT weighted by this equal sums over the full spectrum.
    """
    weight = torch.full((box // 2 + 1,), 2.0, dtype=dtype, device=device)
    weight[0] = 1.0
    if box % 2 == 0:
        weight[-1] = 1.0
    return weight


def fourier_shell_correlation(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """FSC of two cubic volumes, shells 0 .. box//2 (shell i at i / box cycles/voxel)."""
    box = a.shape[-1]
    a, b = a.detach().cpu().double(), b.detach().cpu().double()  # small; MPS has no float64
    fa = torch.fft.rfftn(a, dim=(-3, -2, -1))
    fb = torch.fft.rfftn(b, dim=(-3, -2, -1))
    shells = shell_index(box, a.device).flatten()
    weight = hermitian_weights(box, a.device, torch.float64).expand(box, box, -1).flatten()
    n = box // 2 + 1
    keep = shells < n
    shells, weight = shells[keep], weight[keep]
    fa, fb = fa.flatten()[keep], fb.flatten()[keep]

    def shell_sum(values):
        return torch.zeros(n, dtype=torch.float64, device=a.device).index_add_(0, shells, values * weight)

    cross = shell_sum((fa * fb.conj()).real)
    power = shell_sum(fa.abs() ** 2) * shell_sum(fb.abs() ** 2)
    fsc = cross / torch.sqrt(torch.clamp(power, min=1e-30))
    return fsc.cpu().numpy()


def resolution_from_fsc(fsc: np.ndarray, box: int, voxel_size: float,
                        threshold: float = 0.143) -> float:
    """Resolution in Angstrom where the FSC first drops below ``threshold``.

    Interpolated between shells; the Nyquist limit (2 voxels) when it never does.
    """
    fsc = np.asarray(fsc, dtype=float)
    for i in range(1, len(fsc)):
        if fsc[i] < threshold:
            f0, f1 = fsc[i - 1], fsc[i]
            shell = i - 1 + (f0 - threshold) / max(f0 - f1, 1e-12)
            shell = max(shell, 0.5)
            return float(box * voxel_size / shell)
    return float(2 * voxel_size)


def fsc_weighting(fsc: np.ndarray, box: int, device=None) -> torch.Tensor:
    """rFFT-grid weight sqrt(2 FSC / (1 + FSC)) (Rosenthal & Henderson), 0 past the first FSC < 0."""
    fsc = np.asarray(fsc, dtype=float).copy()
    negative = np.nonzero(fsc[1:] <= 0)[0]  # shell 0 (the mean) says nothing
    if len(negative):
        fsc[negative[0] + 1:] = 0.0
    fsc = np.clip(fsc, 0.0, 1.0)
    weight = np.sqrt(2 * fsc / (1 + fsc))
    weight[0] = 1.0
    shells = shell_index(box, device).clamp(max=len(weight) - 1)
    return torch.as_tensor(weight, dtype=torch.float32, device=device)[shells]


def normalise_inside(volumes: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero mean and unit standard deviation under ``mask`` (per volume)."""
    weight = mask / mask.sum()
    mean = (volumes * weight).sum(dim=(-3, -2, -1), keepdim=True)
    centred = volumes - mean
    std = torch.sqrt(((centred ** 2) * weight).sum(dim=(-3, -2, -1), keepdim=True))
    return centred / torch.clamp(std, min=1e-12)


def centre_of_mass_shift(volume: torch.Tensor) -> torch.Tensor:
    """(x, y, z) offset of the positive density's centre of mass from the box centre."""
    box = volume.shape[-1]
    density = torch.clamp(volume - volume.mean(), min=0).flatten()
    coords = _centred_coordinates(box, volume.device)
    total = density.sum()
    if total <= 0:
        return torch.zeros(3, device=volume.device)
    return (coords * density[:, None]).sum(dim=0) / total
