"""A binned pyramid of a (memory-mapped) tomogram for napari's multiscale display."""

from __future__ import annotations

import numpy as np


class _Planes:
    """A plain array-like over the memory map: dask reads it chunk by chunk.

    Handing dask the ``np.memmap`` itself made ``from_array`` touch every page
    (1 GB resident for a 512 MB file); through this wrapper it reads only
    the chunks asked for.
    """

    def __init__(self, volume):
        self.volume = volume
        self.shape = tuple(volume.shape)
        self.dtype = np.dtype(volume.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, key):
        return np.asarray(self.volume[key])


def multiscale_pyramid(volume: np.ndarray, min_size: int = 512, chunk: int = 256) -> list:
    """Dask arrays binned 2x per level in y and x (z kept) until the largest side <= min_size.

    Nothing is read here: each level reads (and averages) only the chunks
    napari asks for, so a 4k x 4k x 1k file opens at once.
    """
    import dask.array as da

    base = da.from_array(_Planes(volume), chunks=(1, chunk, chunk), name=f"tomogram-{id(volume):x}",
                         meta=np.empty((0, 0, 0), dtype=volume.dtype))
    levels = [base]
    while max(levels[-1].shape[1:]) > min_size:
        current = levels[-1]
        even = current[:, : current.shape[1] // 2 * 2, : current.shape[2] // 2 * 2]
        levels.append(da.coarsen(np.mean, even, {1: 2, 2: 2}).astype(volume.dtype))
    return levels
