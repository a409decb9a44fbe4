"""The missing wedge: which Fourier voxels a tilt series measured.

A tilt series about the y axis from ``tilt_min`` to ``tilt_max`` measures
the central planes containing ky whose in-plane direction (kx, kz) makes
an angle between ``tilt_min`` and ``tilt_max`` with kx (the convention of
:func:`napari_tomoseg.tilt_series.project`: detector u = x cos t + z sin t).
"""

from __future__ import annotations

import torch

from ..errors import InvalidSettingsError


def wedge_mask(box: int, tilt_min: float = -60.0, tilt_max: float = 60.0,
               rfft: bool = True, device=None) -> torch.Tensor:
    """1 where measured, 0 in the missing wedge, on the (r)FFT grid (not shifted).

    ``rfft=False`` gives the full grid, which :func:`centred_wedge` shifts so
    that it can be rotated like a real-space volume.
    """
    if not -90.0 <= tilt_min < tilt_max <= 90.0:
        raise InvalidSettingsError("the tilt range needs -90 <= minimum < maximum <= 90 degrees.")
    k = torch.fft.fftfreq(box, device=device)
    kx = torch.fft.rfftfreq(box, device=device) if rfft else k
    kz, _, kxx = torch.meshgrid(k, k, kx, indexing="ij")
    angle = torch.rad2deg(torch.atan2(kz, kxx))  # (-180, 180]
    angle = torch.where(angle > 90, angle - 180, angle)
    angle = torch.where(angle <= -90, angle + 180, angle)
    # half a voxel of slack at the edge of the wedge, so shells are not ragged
    radius = torch.sqrt(kz ** 2 + kxx ** 2) * box
    slack = torch.rad2deg(torch.atan2(torch.full_like(radius, 0.5), torch.clamp(radius, min=1e-6)))
    measured = (angle >= tilt_min - slack) & (angle <= tilt_max + slack)
    on_axis = (kz == 0) & (kxx == 0)
    return (measured | on_axis).to(torch.float32)


def centred_wedge(box: int, tilt_min: float = -60.0, tilt_max: float = 60.0, device=None) -> torch.Tensor:
    """The full-grid wedge with zero frequency at voxel ``box // 2`` (rotatable)."""
    return torch.fft.fftshift(wedge_mask(box, tilt_min, tilt_max, rfft=False, device=device))


def to_rfft_layout(centred: torch.Tensor) -> torch.Tensor:
    """A centred full-grid Fourier weight (..., z, y, x) back to the rFFT layout."""
    box = centred.shape[-1]
    full = torch.fft.ifftshift(centred, dim=(-3, -2, -1))
    return full[..., : box // 2 + 1]

