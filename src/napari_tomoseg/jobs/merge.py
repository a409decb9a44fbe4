"""Merge per-feature probability maps into one label volume, written atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from ..io.mrc import check_finite_slab, open_volume, write_volume
from ..io.probability_header import LABELS_MARK, legend_labels
from ..merge import MergeSettings, check_same_grid, merge_slab
from ..probability_maps import as_probability, header_scale, probability_scale
from .progress import Job, Progress

SLAB = 16


def _map_names(maps: Mapping[str, np.ndarray | str | os.PathLike]) -> dict[str, str]:
    """How errors name each map: its file, else its feature."""
    return {f: f"the {f} map" if isinstance(s, np.ndarray) else f"{s} (the {f} map)"
            for f, s in maps.items()}


def _open_maps(maps: Mapping[str, np.ndarray | str | os.PathLike]) -> dict[str, np.ndarray]:
    """Arrays as given; files memory-mapped, and checked to share one voxel grid."""
    arrays, grids = {}, {}
    for feature, source in maps.items():
        if isinstance(source, np.ndarray):
            arrays[feature] = source
        else:
            arrays[feature], info = open_volume(source)
            grids[feature] = (info.isotropic_voxel_size, info.origin)
    check_same_grid(grids)
    return arrays


def merge_maps(maps: Mapping[str, np.ndarray | str | os.PathLike], settings: MergeSettings,
               output: str | os.PathLike | None, voxel_size: float,
               origin: tuple[float, float, float], overwrite: bool = False) -> Job[np.ndarray]:
    """Labels (0 = nothing, i + 1 = ``settings.features[i]``), slab by slab.

    ``maps`` are arrays or MRC files (0-1 floats or 0-255 integers). With
    ``output`` the labels are written there at the end, atomically.
    """
    arrays = _open_maps({f: maps[f] for f in settings.features})
    names = _map_names({f: maps[f] for f in settings.features})
    shapes = {f: a.shape for f, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        from ..errors import InvalidSettingsError

        raise InvalidSettingsError(f"probability maps differ in shape: {shapes}.")
    shape = next(iter(shapes.values()))
    # refuses maps that are not probabilities (a tomogram) before any slab is merged
    scales = {f: (None if isinstance(maps[f], np.ndarray) else header_scale(maps[f], a.dtype))
              or probability_scale(a, names[f]) for f, a in arrays.items()}
    labels = np.zeros(shape, np.uint8 if len(arrays) < 255 else np.uint16)
    nz = shape[0]
    for z in range(0, nz, SLAB):
        part = {}
        for feature, array in arrays.items():
            values = np.asarray(array[z:z + SLAB], dtype=np.float32)
            check_finite_slab(values, z, f"the {feature} map")
            part[feature] = as_probability(values, scales[feature], names[feature])
        labels[z:z + SLAB] = merge_slab(part, settings)
        yield Progress(min(z + SLAB, nz), nz + 1, "merging")
    if output is not None:
        # an artifact without a label of its own only removes voxels: no value is its
        labelled = [f for f in settings.features
                    if settings.label_artifacts or f not in settings.artifacts]
        legend = legend_labels({settings.label_of(f): f for f in labelled})
        write_volume(output, labels, voxel_size, origin, overwrite=overwrite,
                     labels=(LABELS_MARK, *legend))  # never taken for a tomogram by a glob
    yield Progress(nz + 1, nz + 1, "merged")
    return labels
