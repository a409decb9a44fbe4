"""EMAN2's tomoseg preprocessing, re-derived from EMAN2's source (cryoem/eman2), numpy only.

programs/e2tomoseg_preproc.py reads the whole tomogram as one 3D EMData and applies, in order:
optional inversion (multiply by -1), filter.lowpass.gauss:cutoff_abs=.25,
filter.highpass.gauss:cutoff_pixels=5, normalize, threshold.clampminmax.nsigma:nsigma=3.
(The revision with proctag "preproc" has "normalize" as proc3; an older one clamps without it.)
The network, not the preprocessing, then divides by 3 (programs/e2tomoseg_convnet.py,
load_particles and do_convolve); this module stops before that.

Both Gaussian filters go through Processor::EMFourierFilterFunc (libEM/sparx/fourierfilter.cpp):
one unpadded FFT of the whole volume, radial in 3D, with each axis' frequency measured in cycles
per pixel of that axis (index j -> j/n_axis, wrapped above n/2), so a thin z axis is filtered too.
"""

from __future__ import annotations

import numpy as np


def cutoff_abs_from_pixels(cutoff_pixels: float, nx: int) -> float:
    """cutoff_pixels -> cutoff_abs, relative to the x size only (not ny, nz, apix).

    NewFourierProcessor::preprocessandconvertpars (libEM/sparx/processor_sparx.h) takes
    0.5 * cutoff_pixels / nx, so 5 "pixels" means 2.5 Fourier pixels along x.
    """
    return 0.5 * float(cutoff_pixels) / float(nx)


def cutoff_abs_from_freq(cutoff_freq: float, apix: float) -> float:
    """cutoff_freq (1/Angstrom) -> cutoff_abs (cycles/pixel): times apix_x (same function)."""
    return float(cutoff_freq) * float(apix)


def lowpass_gauss(freq: np.ndarray, cutoff_abs: float) -> np.ndarray:
    """Transfer of filter.lowpass.gauss: exp(-f^2 / cutoff_abs^2), f in cycles/pixel.

    preprocessandconvertpars sets sigma = cutoff_abs / sqrt(2) and fourierfilter.cpp
    (GAUSS_LOW_PASS) multiplies by exp(-f^2 * 0.5 / sigma^2): the two factors cancel, so the
    filter is 1/e at f = cutoff_abs, not exp(-1/2) as with exp(-f^2 / (2 c^2)).
    """
    f = np.asarray(freq, dtype=np.float64)
    return np.exp(-(f * f) / float(cutoff_abs) ** 2)


def highpass_gauss(freq: np.ndarray, cutoff_pixels: float | None = None, nx: int | None = None,
                   *, cutoff_abs: float | None = None) -> np.ndarray:
    """Transfer of filter.highpass.gauss: 1 - exp(-f^2 / c^2) (fourierfilter.cpp, GAUSS_HIGH_PASS).

    c is cutoff_abs, or 0.5 * cutoff_pixels / nx (see cutoff_abs_from_pixels).
    """
    if cutoff_abs is None:
        if cutoff_pixels is None or nx is None:
            raise ValueError("give cutoff_abs, or cutoff_pixels with nx")
        cutoff_abs = cutoff_abs_from_pixels(cutoff_pixels, nx)
    f = np.asarray(freq, dtype=np.float64)
    return -np.expm1(-(f * f) / float(cutoff_abs) ** 2)


def _axis_freq_squared(shape: tuple[int, ...]) -> list[np.ndarray]:
    """Per-axis f^2 (cycles/pixel of that axis) on the rfftn grid, each broadcastable."""
    out = []
    for axis, n in enumerate(shape):
        f = np.fft.rfftfreq(n) if axis == len(shape) - 1 else np.fft.fftfreq(n)
        view = [1] * len(shape)
        view[axis] = f.size
        out.append((f * f).reshape(view).astype(np.float32))
    return out


def rfft_frequency(shape: tuple[int, ...]) -> np.ndarray:
    """|f| in cycles/pixel on the np.fft.rfftn grid of a real array of this shape (2D or 3D)."""
    return np.sqrt(sum(_axis_freq_squared(tuple(shape)))).astype(np.float32)


def gauss_bandpass_3d(volume: np.ndarray, lowpass_cutoff_abs: float | None = 0.25,
                      highpass_cutoff_pixels: float | None = 5.0, chunk: int = 16) -> np.ndarray:
    """Apply filter.lowpass.gauss then filter.highpass.gauss to the whole volume at once.

    EMAN2 does two FFT round trips; the product of both transfers in one is the same filter.
    The transfer is built `chunk` planes at a time, so memory stays about volume + spectrum
    (complex64, ~0.4 GB for 512x512x200). None or 0 skips a filter, like an empty --procN.
    """
    vol = np.asarray(volume, dtype=np.float32)
    use_lp = bool(lowpass_cutoff_abs)
    use_hp = bool(highpass_cutoff_pixels)
    if not (use_lp or use_hp):
        return vol.copy()
    spectrum = np.fft.rfftn(vol)
    f2 = _axis_freq_squared(vol.shape)
    rest = sum(f2[1:]) if vol.ndim > 1 else np.zeros(1, np.float32)
    c_hp = cutoff_abs_from_pixels(highpass_cutoff_pixels, vol.shape[-1]) if use_hp else 1.0
    for z0 in range(0, vol.shape[0], chunk):
        s2 = f2[0][z0:z0 + chunk] + rest
        transfer = np.ones_like(s2)
        if use_lp:
            transfer *= np.exp(-s2 / np.float32(lowpass_cutoff_abs) ** 2)
        if use_hp:
            transfer *= -np.expm1(-s2 / np.float32(c_hp) ** 2)
        spectrum[z0:z0 + chunk] *= transfer
    out = np.fft.irfftn(spectrum, s=vol.shape, axes=tuple(range(vol.ndim)))
    return out.astype(np.float32, copy=False)


def normalize(volume: np.ndarray) -> np.ndarray:
    """EMAN2 "normalize": (x - mean) / sigma, statistics over every voxel of the volume."""
    vol = np.asarray(volume, dtype=np.float32)
    mean = float(vol.mean(dtype=np.float64))
    sigma = float(vol.std(dtype=np.float64))
    return ((vol - mean) / (sigma if sigma > 0 else 1.0)).astype(np.float32, copy=False)


def clampminmax_nsigma(volume: np.ndarray, nsigma: float = 3.0) -> np.ndarray:
    """threshold.clampminmax.nsigma: clip to mean -/+ nsigma * sigma of this same volume."""
    vol = np.asarray(volume, dtype=np.float32)
    mean = float(vol.mean(dtype=np.float64))
    sigma = float(vol.std(dtype=np.float64))
    return np.clip(vol, mean - nsigma * sigma, mean + nsigma * sigma).astype(np.float32, copy=False)


def eman2_preprocess_volume(volume: np.ndarray, lowpass_cutoff_abs: float | None = 0.25,
                            highpass_cutoff_pixels: float | None = 5.0,
                            normalize_volume: bool = True, nsigma: float | None = 3.0,
                            invert: bool = False) -> np.ndarray:
    """The e2tomoseg_preproc default chain on a whole 2D/3D volume (float32 out).

    Order as in the program: invert, low-pass, high-pass, normalize, clamp. nsigma=None skips the
    clamp. No binning: e2tomoseg_preproc does not shrink. No /3: the network does that.
    """
    vol = np.asarray(volume, dtype=np.float32)
    if invert:
        vol = -vol
    out = gauss_bandpass_3d(vol, lowpass_cutoff_abs, highpass_cutoff_pixels)
    if normalize_volume:
        out = normalize(out)
    if nsigma is not None:
        out = clampminmax_nsigma(out, nsigma)
    return out
