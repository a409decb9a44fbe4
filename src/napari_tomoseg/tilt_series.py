"""Tilt-series geometry: projection, CTF, IMOD alignment and weighted back-projection.

One tilt axis along y (IMOD's convention after alignment): a tilt only
mixes z and x, so every y row is an independent 2D problem and the whole
volume is handled by one ``grid_sample`` call per tilt with the y rows as
channels. Projection is ray-driven (linear interpolation along x in each
z-plane) and back-projection voxel-driven (linear interpolation along the
detector), the usual pair: adjoint up to interpolation error, so the
missing wedge and its streaks in a simulated tomogram come from the
geometry, not from a filter that imitates them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import InvalidAlignmentError, InvalidSettingsError

ProgressCallback = Callable[[int, int, str], None]


def tilt_angles(minimum: float = -60.0, maximum: float = 60.0, step: float = 3.0) -> np.ndarray:
    """Tilt angles in degrees, both ends included."""
    if step <= 0 or maximum < minimum:
        raise InvalidSettingsError("tilt range needs minimum <= maximum and a positive step.")
    count = int(round((maximum - minimum) / step)) + 1
    return np.linspace(minimum, maximum, count)


def _norm(index: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel index -> grid_sample coordinate (align_corners=True)."""
    return index * (2.0 / max(size - 1, 1)) - 1.0


def project(volume: np.ndarray, angles_deg: np.ndarray,
            progress: ProgressCallback | None = None) -> np.ndarray:
    """Line integrals through a (z, y, x) volume, tilted about y: (tilt, y, x)."""
    vol = torch.as_tensor(np.ascontiguousarray(volume, dtype=np.float32))
    nz, ny, nx = vol.shape
    planes = vol.permute(1, 0, 2).unsqueeze(0)  # (1, y, z, x): y rows as channels
    z = torch.arange(nz, dtype=torch.float32) - (nz - 1) / 2
    u = torch.arange(nx, dtype=torch.float32) - (nx - 1) / 2
    out = np.empty((len(angles_deg), ny, nx), dtype=np.float32)
    for i, angle in enumerate(np.deg2rad(np.asarray(angles_deg, dtype=float))):
        c, s = float(np.cos(angle)), float(np.sin(angle))
        # the ray through detector pixel u crosses plane z at x = (u - z sin) / cos
        x = (u[None, :] - z[:, None] * s) / c + (nx - 1) / 2
        zz = (z[:, None] + (nz - 1) / 2).expand_as(x)
        grid = torch.stack([_norm(x, nx), _norm(zz, nz)], dim=-1).unsqueeze(0)
        sampled = F.grid_sample(planes, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=True)  # (1, y, z, u)
        out[i] = (sampled[0].sum(dim=1) / c).numpy()
        if progress:
            progress(i + 1, len(angles_deg), "projecting")
    return out


def backproject(tilt_series: np.ndarray, angles_deg: np.ndarray, thickness: int,
                progress: ProgressCallback | None = None) -> np.ndarray:
    """Smear each (filtered) projection back through a (thickness, y, x) volume."""
    series = torch.as_tensor(np.ascontiguousarray(tilt_series, dtype=np.float32))
    _, ny, nx = series.shape
    nz = int(thickness)
    z = torch.arange(nz, dtype=torch.float32) - (nz - 1) / 2
    x = torch.arange(nx, dtype=torch.float32) - (nx - 1) / 2
    volume = torch.zeros((1, ny, nz, nx), dtype=torch.float32)
    zero = torch.zeros((nz, nx))
    for i, angle in enumerate(np.deg2rad(np.asarray(angles_deg, dtype=float))):
        c, s = float(np.cos(angle)), float(np.sin(angle))
        u = x[None, :] * c + z[:, None] * s + (nx - 1) / 2
        grid = torch.stack([_norm(u, nx), zero], dim=-1).unsqueeze(0)
        row = series[i].unsqueeze(0).unsqueeze(2)  # (1, y, 1, u)
        volume += F.grid_sample(row, grid, mode="bilinear", padding_mode="zeros",
                                align_corners=True)
        if progress:
            progress(i + 1, len(angles_deg), "back-projecting")
    return volume[0].permute(1, 0, 2).contiguous().numpy()


def radial_weights(n: int, cutoff: float = 0.35, falloff: float = 0.05) -> np.ndarray:
    """R-weighting |k| along x with a Gaussian roll-off past ``cutoff`` (cycles/pixel).

    The same radial filter IMOD applies by default (cutoff 0.35, falloff
    0.035-0.05); the DC term keeps a small weight so the mean survives.
    """
    k = np.abs(np.fft.rfftfreq(n))
    weights = np.maximum(k, 1.0 / (2 * n))
    beyond = k > cutoff
    weights[beyond] *= np.exp(-((k[beyond] - cutoff) ** 2) / (2 * falloff ** 2))
    return weights


def weighted_backprojection(tilt_series: np.ndarray, angles_deg: np.ndarray, thickness: int,
                            cutoff: float = 0.35, falloff: float = 0.05,
                            progress: ProgressCallback | None = None) -> np.ndarray:
    """Reconstruct a (thickness, y, x) tomogram from an aligned tilt series."""
    series = np.asarray(tilt_series, dtype=np.float32)
    series = series - series.mean(axis=(1, 2), keepdims=True)
    nx = series.shape[-1]
    spectrum = np.fft.rfft(series, axis=-1) * radial_weights(nx, cutoff, falloff)
    filtered = np.fft.irfft(spectrum, n=nx, axis=-1).astype(np.float32)
    return backproject(filtered, angles_deg, thickness, progress)


def ctf_2d(shape: tuple[int, int], pixel_size: float, defocus_um: float,
           voltage_kv: float = 300.0, cs_mm: float = 2.7,
           amplitude_contrast: float = 0.07) -> np.ndarray:
    """Phase-contrast transfer function on an rfft2 grid (underfocus positive)."""
    volts = voltage_kv * 1e3
    wavelength = 12.2643247 / np.sqrt(volts * (1 + volts * 0.978466e-6))  # Angstrom
    ky = np.fft.fftfreq(shape[0], d=pixel_size)
    kx = np.fft.rfftfreq(shape[1], d=pixel_size)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    defocus = defocus_um * 1e4
    cs = cs_mm * 1e7
    chi = np.pi * wavelength * defocus * k2 - 0.5 * np.pi * cs * wavelength ** 3 * k2 ** 2
    phase = np.arcsin(amplitude_contrast)
    return -np.sin(chi + phase)


def apply_ctf(tilt_series: np.ndarray, pixel_size: float, defocus_um: float,
              phase_flip: bool = True) -> np.ndarray:
    """Convolve each image with the CTF; optionally phase-flip it back as processing would."""
    ctf = ctf_2d(tilt_series.shape[-2:], pixel_size, defocus_um)
    transfer = ctf * np.sign(ctf) if phase_flip else ctf
    spectrum = np.fft.rfft2(tilt_series, axes=(-2, -1)) * transfer
    return np.fft.irfft2(spectrum, s=tilt_series.shape[-2:], axes=(-2, -1)).astype(np.float32)


def read_imod_xf(path) -> np.ndarray:
    """IMOD .xf file: one row ``a11 a12 a21 a22 dx dy`` per tilt -> (n, 2, 3)."""
    try:
        rows = np.loadtxt(path, ndmin=2)
    except ValueError as exc:
        raise InvalidAlignmentError(f"{path}: not an IMOD .xf file ({exc}).") from None
    if rows.shape[1] != 6:
        raise InvalidAlignmentError(f"{path}: an IMOD .xf file has 6 numbers per line, "
                                    f"not {rows.shape[1]}.")
    return np.stack([np.stack([rows[:, 0], rows[:, 1], rows[:, 4]], axis=1),
                     np.stack([rows[:, 2], rows[:, 3], rows[:, 5]], axis=1)], axis=1)


def apply_imod_xf(image: np.ndarray, xf: np.ndarray, output_shape=None) -> np.ndarray:
    """Align one image with an IMOD transform (about the image centre, shifts in pixels).

    IMOD maps a raw position r to an aligned position r' = A (r - c) + c' + d,
    with c and c' the centres of input and output; we sample the raw image at
    r = A^-1 (r' - c' - d) + c.
    """
    from scipy.ndimage import map_coordinates

    ny, nx = image.shape
    out_ny, out_nx = output_shape or image.shape
    a = xf[:, :2]
    d = xf[:, 2]
    inverse = np.linalg.inv(a)
    yy, xx = np.mgrid[0:out_ny, 0:out_nx].astype(np.float64)
    px = xx - (out_nx - 1) / 2 - d[0]
    py = yy - (out_ny - 1) / 2 - d[1]
    rx = inverse[0, 0] * px + inverse[0, 1] * py + (nx - 1) / 2
    ry = inverse[1, 0] * px + inverse[1, 1] * py + (ny - 1) / 2
    fill = float(np.mean(image))
    return map_coordinates(image, [ry, rx], order=1, mode="constant", cval=fill).astype(np.float32)
