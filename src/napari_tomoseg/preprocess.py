"""The band-pass and scaling a network sees, in two modes.

``eman2``: EMAN2's e2tomoseg_preproc exactly (see eman2_filters.py): 3D
Gaussian low-pass exp(-f^2/c^2) at c = 0.25 cycles/pixel and high-pass at
"5 pixels" (c = 2.5/nx) over the whole volume, normalisation over all
voxels, clamping at +-3 sigma. It holds the (binned) volume in memory. The
``eman2`` network uses it.

``slices`` (the U-Net's): the same steps slice by slice so they stream
through any tomogram in bounded memory. A deliberate deviation from
EMAN2, kept because saved U-Net models depend on it: 2D filters per slice
(nothing along z), written with the conventional sigma, exp(-f^2/2s^2)
with s = 0.25, and a high-pass with s = 5/max(ny, nx) (EMAN2's low-pass is
stronger: 0.37 vs 0.61 at f = 0.25; its high-pass much weaker). Statistics
come from 12 slices spread through the volume, so every slice is scaled
alike. Both modes divide by 3 so the network sees about [-1, 1].
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .errors import InvalidSettingsError
from .features import feature_default
from .io.mrc import read_slices


@dataclass(frozen=True)
class PreprocessSettings:
    """Stored in every model file. In ``eman2`` mode the two cut-offs are EMAN2's
    cutoff_abs and cutoff_pixels; files without ``mode`` are ``slices``."""

    lowpass_sigma: float = 0.25  # cycles/pixel; 0 disables
    highpass_pixels: float = 5.0  # Fourier pixels; 0 disables
    clamp_sigma: float = 3.0
    invert: bool = False
    binning: int = 1
    mode: str = "slices"  # or "eman2"

    def __post_init__(self):
        if self.mode not in ("slices", "eman2"):
            raise InvalidSettingsError(f"unknown preprocessing mode '{self.mode}'; "
                                       "choose 'slices' or 'eman2'.")
        if self.binning < 1 or int(self.binning) != self.binning:
            raise InvalidSettingsError("binning must be a whole number >= 1.")
        if self.clamp_sigma <= 0:
            raise InvalidSettingsError("clamp_sigma must be positive.")

    def to_dict(self) -> dict:
        return asdict(self)


WORKING_VOXEL_SIZE = 20.0  # Angstrom: networks see the tomogram binned to about this
# Per feature, where the realistic benchmark measured better (docs/engine.md, "Membranes at
# 10 A"): a U-Net for a 4-nm bilayer, binned to 20 A, draws it 2 voxels wide and misplaces
# its edges; at 10 A, Dice from 5 boxes rose from 0.50 / 0.56 to 0.61 / 0.69 (training /
# other cell, six box draws; the weakest draw 0.30 -> 0.52), for about 5x the training
# time (183 s against 30-37 s on one 2-core host).
FEATURE_WORKING_VOXEL_SIZE = {"membrane": 10.0}
MIN_TILE = 32  # pixels: a box binned below this holds too little context


def default_preprocessing(voxel_size: float, box_size: int = 64, invert: bool = False,
                          architecture: str = "unet", feature: str | None = None
                          ) -> PreprocessSettings:
    """EMAN2-style preprocessing at a binning that brings the voxel size near 20 A (a U-Net
    for membranes: 10 A, ``FEATURE_WORKING_VOXEL_SIZE``; matched by the feature name's last
    word).

    At 10 A/voxel a tilt series at SNR 0.1 leaves single voxels mostly noise;
    binning by 2 averages 8 voxels and quarters the work per slice. On the
    realistic benchmark (benchmarks/bench_realistic.py, 5 ribosome boxes) it
    raised Dice at the calibrated threshold from 0.50 to 0.76 (0.74 on the
    second cell). Tomograms already at >= 15 A are not binned.
    """
    working = WORKING_VOXEL_SIZE if architecture != "unet" else feature_default(
        FEATURE_WORKING_VOXEL_SIZE, feature, WORKING_VOXEL_SIZE)
    binning = max(1, int(round(working / max(voxel_size, 1e-6))))
    while binning > 1 and box_size // binning < MIN_TILE:
        binning -= 1
    return PreprocessSettings(binning=binning, invert=invert,
                              mode="eman2" if architecture == "eman2" else "slices")


def bin_slab(slab: np.ndarray, factor: int) -> np.ndarray:
    """Mean-shrink a (z, y, x) slab by an integer factor in y and x (z is done by the caller)."""
    if factor == 1:
        return np.asarray(slab, dtype=np.float32)
    nz, ny, nx = slab.shape
    ny, nx = ny // factor * factor, nx // factor * factor
    trimmed = np.asarray(slab[:, :ny, :nx], dtype=np.float32)
    return trimmed.reshape(nz, ny // factor, factor, nx // factor, factor).mean(axis=(2, 4))


def unbin_slices(prob: np.ndarray, factor: int, ny: int, nx: int) -> np.ndarray:
    """(n, y, x) maps on the binned grid back onto the (n, ny, nx) full-resolution grid.

    Bilinear onto the part the binned grid covers (binned pixel i is
    full-resolution pixels i*b..i*b+b-1, so nothing is stretched), then the
    rows and columns that binning dropped repeat the last ones.
    """
    if factor == 1 and prob.shape[1:] == (ny, nx):
        return prob
    import torch
    from torch.nn import functional as F

    yb, xb = prob.shape[1] * factor, prob.shape[2] * factor
    up = F.interpolate(torch.as_tensor(np.ascontiguousarray(prob), dtype=torch.float32)[None],
                       size=(yb, xb), mode="bilinear", align_corners=False)[0].numpy()
    return np.pad(up[:, :ny, :nx], ((0, 0), (0, max(ny - yb, 0)), (0, max(nx - xb, 0))),
                  mode="edge")


def bin_volume_z(slab: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each group of ``factor`` slices (a trailing partial group is averaged too)."""
    if factor == 1:
        return slab
    groups = [slab[i:i + factor].mean(axis=0) for i in range(0, slab.shape[0], factor)]
    return np.stack(groups).astype(np.float32)


def _transfer(shape: tuple[int, int], settings: PreprocessSettings) -> np.ndarray:
    ky = np.fft.fftfreq(shape[0])
    kx = np.fft.rfftfreq(shape[1])
    s2 = ky[:, None] ** 2 + kx[None, :] ** 2
    transfer = np.ones_like(s2)
    if settings.lowpass_sigma > 0:
        transfer *= np.exp(-s2 / (2 * settings.lowpass_sigma ** 2))
    if settings.highpass_pixels > 0:
        sigma = settings.highpass_pixels / max(shape)
        transfer *= 1.0 - np.exp(-s2 / (2 * sigma ** 2))
    return transfer.astype(np.float32)


def filter_slices(slab: np.ndarray, settings: PreprocessSettings) -> np.ndarray:
    """Band-pass every slice of a (z, y, x) float slab in Fourier space."""
    slab = np.asarray(slab, dtype=np.float32)
    if settings.lowpass_sigma <= 0 and settings.highpass_pixels <= 0:
        return slab
    transfer = _transfer(slab.shape[-2:], settings)
    spectrum = np.fft.rfft2(slab, axes=(-2, -1)) * transfer
    return np.fft.irfft2(spectrum, s=slab.shape[-2:], axes=(-2, -1)).astype(np.float32)


@dataclass(frozen=True)
class SliceStatistics:
    mean: float
    std: float


def measure_statistics(volume: np.ndarray, settings: PreprocessSettings,
                       n_slices: int = 12) -> SliceStatistics:
    """Mean and std of the filtered (and binned) tomogram, from evenly spread slices."""
    nz = volume.shape[0]
    picks = np.unique(np.linspace(nz * 0.1, nz * 0.9 - 1, min(n_slices, nz)).astype(int))
    picks = picks[(picks >= 0) & (picks < nz)] if len(picks) else np.array([nz // 2])
    filtered = filter_slices(bin_slab(np.asarray(volume[picks]), settings.binning), settings)
    finite = filtered[np.isfinite(filtered)]
    std = float(finite.std()) if finite.size else 1.0
    return SliceStatistics(mean=float(finite.mean()) if finite.size else 0.0,
                           std=std if std > 0 else 1.0)


def normalise(filtered: np.ndarray, stats: SliceStatistics,
              settings: PreprocessSettings) -> np.ndarray:
    out = (filtered - stats.mean) / stats.std
    np.clip(out, -settings.clamp_sigma, settings.clamp_sigma, out=out)
    if settings.invert:
        out *= -1
    out /= 3.0
    return out.astype(np.float32)


class Preprocessor:
    """Preprocess any slab of one tomogram consistently (statistics fixed at creation)."""

    def __init__(self, volume: np.ndarray, settings: PreprocessSettings = PreprocessSettings()):
        if volume.ndim != 3:
            raise InvalidSettingsError(f"a tomogram must be 3D, not {volume.ndim}D.")
        self.volume = volume
        self.settings = settings
        b = settings.binning
        self.shape = (-(-volume.shape[0] // b), volume.shape[1] // b, volume.shape[2] // b)
        self._whole = _eman2_whole(volume, settings) if settings.mode == "eman2" else None
        self.stats = (SliceStatistics(0.0, 1.0) if self._whole is not None
                      else measure_statistics(volume, settings))

    def slab(self, z0: int, z1: int) -> np.ndarray:
        """Preprocessed slices z0..z1 of the binned tomogram; out-of-range slices are 0."""
        b = self.settings.binning
        nzb = self.shape[0]
        out = np.zeros((z1 - z0,) + self.shape[1:], np.float32)
        lo, hi = max(z0, 0), min(z1, nzb)
        if hi <= lo:
            return out
        if self._whole is not None:
            out[lo - z0:hi - z0] = self._whole[lo:hi]
            return out
        raw = read_slices(self.volume, lo * b, min(hi * b, self.volume.shape[0])).astype(np.float32)
        binned = bin_volume_z(bin_slab(raw, b), b)
        out[lo - z0:hi - z0] = normalise(filter_slices(binned, self.settings), self.stats,
                                         self.settings)
        return out

    def whole(self) -> np.ndarray:
        return self.slab(0, self.shape[0])


class SharedSlices:
    """One Preprocessor read by several networks in one pass (``jobs.segment``).

    Networks that segment a tomogram in step ask for overlapping slabs; the
    slices computed last stay in memory (at most ``keep``), so each slice is
    read, binned and filtered once for all of them. Same interface as
    Preprocessor for ``iter_segment``.
    """

    def __init__(self, preprocessor: Preprocessor, keep: int = 32):
        self.preprocessor = preprocessor
        self.settings, self.shape = preprocessor.settings, preprocessor.shape
        self.keep = max(1, keep)
        self._slices: dict[int, np.ndarray] = {}  # binned z -> slice; the lowest z go first
        self.computed = 0  # slices preprocessed so far (each once while it is kept)

    def slab(self, z0: int, z1: int) -> np.ndarray:
        missing = [z for z in range(z0, z1) if z not in self._slices]
        if missing:
            lo, hi = missing[0], missing[-1] + 1
            for z, plane in zip(range(lo, hi), self.preprocessor.slab(lo, hi)):
                self._slices.setdefault(z, plane)
            self.computed += hi - lo
        out = np.stack([self._slices[z] for z in range(z0, z1)]) if z1 > z0 else \
            np.zeros((0,) + self.shape[1:], np.float32)
        for z in sorted(self._slices)[:max(0, len(self._slices) - self.keep)]:
            if not z0 <= z < z1:
                del self._slices[z]
        return out


def _eman2_whole(volume: np.ndarray, settings: PreprocessSettings) -> np.ndarray:
    """The whole binned volume through EMAN2's e2tomoseg_preproc chain, divided by 3."""
    from .eman2_filters import eman2_preprocess_volume

    b = settings.binning
    nz = volume.shape[0]
    binned = np.empty((-(-nz // b), volume.shape[1] // b, volume.shape[2] // b), np.float32)
    step = 16 * b  # bin a few slices at a time: never a float32 copy of the whole raw volume
    for z in range(0, nz, step):
        raw = read_slices(volume, z, min(z + step, nz))
        binned[z // b:z // b + -(-raw.shape[0] // b)] = bin_volume_z(bin_slab(raw, b), b)
    out = eman2_preprocess_volume(binned, settings.lowpass_sigma or None,
                                  settings.highpass_pixels or None,
                                  nsigma=settings.clamp_sigma, invert=settings.invert)
    return (out / 3.0).astype(np.float32)
