"""Merge per-feature probability maps into one label volume, written atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from ..errors import InvalidSettingsError
from ..io.mrc import (VolumeInfo, check_finite_volume, open_volume, require_voxel_size,
                      write_volume)
from ..io.probability_header import LABELS_MARK, legend_labels
from ..merge import MergeSettings, check_same_grid, merge_slab
from ..probability_maps import as_probability, header_scale, probability_scale
from ..small_pieces import drop_small_pieces, voxels_of
from .progress import Job, Progress

SLAB = 16


Sources = Mapping[str, np.ndarray | str | os.PathLike]  # arrays or MRC files, by feature


def _map_names(maps: Sources) -> dict[str, str]:
    """How errors name each map: its file, else its feature."""
    return {f: f"the {f} map" if isinstance(s, np.ndarray) else f"{s} (the {f} map)"
            for f, s in maps.items()}


def _files(maps: Sources) -> dict[str, str | os.PathLike]:
    """The maps given as files: only they have a header to check."""
    return {f: s for f, s in maps.items() if not isinstance(s, np.ndarray)}


def map_infos(maps: Sources, given_voxel_size: float | None = None) -> dict[str, VolumeInfo]:
    """Each map file's header, refused without a usable, cubic voxel size (unless
    ``given_voxel_size``, --voxel-size, replaces it) or off the others' grid: a header
    without one was merged as 1 A, and 10 x 10 x 20 A voxels as cubes."""
    files = _files(maps)
    return _on_one_grid({f: open_volume(s)[1] for f, s in files.items()}, files,
                        given_voxel_size)


def _on_one_grid(infos: Mapping[str, VolumeInfo], sources: Sources,
                 given: float | None) -> dict[str, VolumeInfo]:
    """The check pick, trace and segment make of one file, then all three sizes compared."""
    checked = {f: require_voxel_size(info, sources[f], given) for f, info in infos.items()}
    check_same_grid({f: (i.voxel_size, i.origin) for f, i in checked.items()})
    return checked


def _open_maps(maps: Sources, infos: Mapping[str, VolumeInfo] | None) -> dict[str, np.ndarray]:
    """Arrays as given; files memory-mapped, and checked to share one voxel grid (unless
    ``infos``, ``map_infos``' answer, already says so: its warnings are not said twice)."""
    opened = {f: open_volume(s) for f, s in _files(maps).items()}
    if infos is None:
        _on_one_grid({f: info for f, (_, info) in opened.items()}, maps, None)
    return {f: opened[f][0] if f in opened else s for f, s in maps.items()}


def _scales(maps: Sources, arrays: Mapping[str, np.ndarray],
            names: Mapping[str, str]) -> dict[str, float]:
    """Each map's scale to 0-1, refusing maps that are not probabilities (a tomogram) before
    any slab is merged; NaN first, as its range read 'from nan to nan: is it a tomogram?'."""
    for feature, array in arrays.items():
        source = maps[feature]
        check_finite_volume(array, f"the {feature} map" if isinstance(source, np.ndarray)
                            else source)
    return {f: (None if isinstance(maps[f], np.ndarray) else header_scale(maps[f], a.dtype))
            or probability_scale(a, names[f]) for f, a in arrays.items()}


def merge_maps(maps: Sources, settings: MergeSettings,
               output: str | os.PathLike | None, voxel_size: float | tuple[float, float, float],
               origin: tuple[float, float, float], overwrite: bool = False,
               infos: Mapping[str, VolumeInfo] | None = None) -> Job[np.ndarray]:
    """Labels (0 = nothing, i + 1 = ``settings.features[i]``), slab by slab.

    ``maps`` are arrays or MRC files (0-1 floats or 0-255 integers). With
    ``output`` the labels are written there at the end, atomically. Pieces of a feature
    smaller than ``settings.min_size`` (nm^3) are dropped once all slabs are merged.
    ``infos``: the files' headers as ``map_infos`` checked them (e.g. with --voxel-size).
    """
    arrays = _open_maps({f: maps[f] for f in settings.features}, infos)
    names = _map_names({f: maps[f] for f in settings.features})
    shapes = {f: a.shape for f, a in arrays.items()}
    if len(set(shapes.values())) != 1:
        raise InvalidSettingsError(f"probability maps differ in shape: {shapes}.")
    shape = next(iter(shapes.values()))
    scales = _scales(maps, arrays, names)
    labels = np.zeros(shape, np.uint8 if len(arrays) < 255 else np.uint16)
    nz = shape[0]
    for z in range(0, nz, SLAB):
        part = {}
        for feature, array in arrays.items():
            values = np.asarray(array[z:z + SLAB], dtype=np.float32)
            part[feature] = as_probability(values, scales[feature], names[feature])
        labels[z:z + SLAB] = merge_slab(part, settings)
        yield Progress(min(z + SLAB, nz), nz + 1, "merging")
    # an artifact without a label of its own only removes voxels: no value is its
    labelled = [f for f in settings.features
                if settings.label_artifacts or f not in settings.artifacts]
    for feature in labelled:  # whole pieces: only once every slab is merged
        smallest = settings.min_size(feature)
        if smallest > 0:
            yield Progress(nz, nz + 1, f"dropping pieces of {feature} under {smallest:g} nm^3")
            drop_small_pieces(labels, settings.label_of(feature), voxels_of(smallest, voxel_size))
    if output is not None:
        legend = legend_labels({settings.label_of(f): f for f in labelled})
        write_volume(output, labels, voxel_size, origin, overwrite=overwrite,
                     labels=(LABELS_MARK, *legend))  # never taken for a tomogram by a glob
    yield Progress(nz + 1, nz + 1, "merged")
    return labels
