"""Thick slabs and display filters computed for the plane in view only.

Nothing here changes the tomogram: the result is a new 2D image for
display, computed from the ``thickness`` slices around the current one
(IMOD's slicer thickness), so scrolling a memory-mapped 4k tomogram reads
only those slices.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InvalidSettingsError


def slab(volume: np.ndarray, axis: int, index: int, thickness: int = 1,
         mode: str = "mean") -> np.ndarray:
    """Mean (or sum) of ``thickness`` planes centred on ``index`` along ``axis``.

    Planes outside the volume are left out (the slab is thinner at the edges).
    """
    if thickness < 1:
        raise InvalidSettingsError("the slab thickness must be at least 1 slice.")
    if mode not in ("mean", "sum"):
        raise InvalidSettingsError("slab mode must be 'mean' or 'sum'.")
    size = volume.shape[axis]
    if not 0 <= index < size:
        raise InvalidSettingsError(f"slice {index} is outside 0..{size - 1}.")
    lo = max(0, index - (thickness - 1) // 2)
    hi = min(size, index + thickness // 2 + 1)
    take = [slice(None)] * volume.ndim
    take[axis] = slice(lo, hi)
    block = np.asarray(volume[tuple(take)], dtype=np.float32)
    total = block.sum(axis=axis, dtype=np.float64).astype(np.float32)
    return total if mode == "sum" else total / (hi - lo)


@dataclass(frozen=True)
class DisplaySettings:
    """A display filter: low-pass and high-pass in nm, contrast percentiles, invert."""

    thickness: int = 1
    lowpass_nm: float = 0.0  # Gaussian with this sigma removed above; 0 = off
    highpass_nm: float = 0.0  # subtract a Gaussian of this size; 0 = off (bandpass with both)
    invert: bool = False
    percentiles: tuple[float, float] = (0.5, 99.5)

    def __post_init__(self):
        if self.thickness < 1 or self.lowpass_nm < 0 or self.highpass_nm < 0:
            raise InvalidSettingsError("thickness >= 1 and non-negative filter sizes are needed.")
        if self.highpass_nm and self.lowpass_nm and self.highpass_nm <= self.lowpass_nm:
            raise InvalidSettingsError("the high-pass size must be larger than the low-pass size.")


def display_plane(volume: np.ndarray, axis: int, index: int, voxel_size: float,
                  settings: DisplaySettings = DisplaySettings()) -> tuple[np.ndarray, tuple[float, float]]:
    """The filtered slab to show and its robust contrast limits (outliers ignored)."""
    image = slab(volume, axis, index, settings.thickness)
    to_pixels = 10.0 / voxel_size  # nm -> voxels
    if settings.lowpass_nm:
        image = ndimage.gaussian_filter(image, settings.lowpass_nm * to_pixels)
    if settings.highpass_nm:
        image = image - ndimage.gaussian_filter(image, settings.highpass_nm * to_pixels)
    if settings.invert:
        image = -image
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, settings.percentiles) if finite.size else (0.0, 1.0)
    if hi <= lo:
        hi = lo + 1.0
    return image.astype(np.float32), (float(lo), float(hi))


class SlabCache:
    """The last few displayed planes, so scrolling back and forth costs nothing."""

    def __init__(self, volume: np.ndarray, voxel_size: float, size: int = 32):
        self.volume = volume
        self.voxel_size = voxel_size
        self.size = size
        self._planes: OrderedDict = OrderedDict()

    def get(self, axis: int, index: int, settings: DisplaySettings):
        key = (axis, index, settings)
        if key in self._planes:
            self._planes.move_to_end(key)
            return self._planes[key]
        plane = display_plane(self.volume, axis, index, self.voxel_size, settings)
        self._planes[key] = plane
        if len(self._planes) > self.size:
            self._planes.popitem(last=False)
        return plane
