"""An array that napari slices like the tomogram but shows filtered thick slabs."""

from __future__ import annotations

import numpy as np

from .display import DisplaySettings, SlabCache


class SlabView:
    """Read-only (z, y, x) array-like: indexing one plane returns its display slab.

    napari asks only for the plane in view (on any axis), so only the
    ``thickness`` slices around it are read and filtered; the tomogram's own
    data is never modified.
    """

    def __init__(self, volume: np.ndarray, voxel_size: float,
                 settings: DisplaySettings = DisplaySettings(), cache: SlabCache | None = None):
        self.volume = volume
        self.settings = settings
        self.cache = cache or SlabCache(volume, voxel_size)
        self.shape = tuple(volume.shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = 3
        self.size = int(np.prod(self.shape))

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        # napari asks for one plane as an integer or as a one-wide slice (i, i + 1)
        planes = [i for i, k in enumerate(key) if isinstance(k, (int, np.integer))
                  or (isinstance(k, slice) and k.step in (None, 1) and k.start is not None
                      and k.stop == k.start + 1)]
        if len(planes) != 1:
            # not a single plane (napari's 3D view): plain thin data, unfiltered
            return np.asarray(self.volume[key], dtype=np.float32)
        axis = planes[0]
        index = key[axis] if not isinstance(key[axis], slice) else key[axis].start
        plane, _ = self.cache.get(axis, int(index), self.settings)
        rest = tuple(k for i, k in enumerate(key) if i != axis)
        out = plane[rest]
        return np.expand_dims(out, axis) if isinstance(key[axis], slice) else out

    def __array__(self, dtype=None, copy=None):
        out = np.stack([self[i] for i in range(self.shape[0])])
        return out.astype(dtype) if dtype is not None else out

    def __len__(self) -> int:
        return self.shape[0]
