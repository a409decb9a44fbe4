"""Filaments traced through a probability map: ordered centre lines, and tubes of their diameter.

Why: a microtubule that runs across the tilt axis is mostly absent from the
tomogram (the missing wedge takes every wall whose normal lies near z), so a
network's map of it is patchy and a threshold keeps pieces. A filament is
long and locally straight: the map's mean inside a cylinder of the filament's
diameter, minus its mean in a sleeve around it, is highest on the axis along
the filament's direction, also where the map has gaps, and low on blobs and
sheets. The axis is the skeleton of where that contrast is high; a tube of
the known diameter drawn around it is the filament, whole. Measured on the
realistic cells (docs/engine.md, "Filaments traced").
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage, signal
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components, dijkstra
from scipy.spatial import cKDTree

from .errors import InvalidSettingsError
from .io.relion_euler import relion_angles
from .pick_checks import check_diameter
from .probability_maps import check_volume_map

SLEEVE = 2.0  # the sleeve compared reaches out to this many radii
SLAB = 64  # working slices convolved at once: bounds the memory on a whole tomogram


@dataclass(frozen=True)
class FilamentSettings:
    """How filaments are traced; lengths in Angstrom."""

    diameter: float = 250.0  # outer diameter: a microtubule 250, actin 70
    threshold: float = 0.5  # the map's threshold (the model's stored one)
    stretch: float = 3.0  # straight stretch compared, in diameters (shorter for curved ones)
    contrast: float = 0.5  # an axis where the tube beats its sleeve by this x the threshold
    min_length: float | None = None  # shorter centre lines are dropped; default one stretch
    directions: int = 60  # directions tried over the half sphere
    spacing: float | None = None  # between exported points; default the radius

    def __post_init__(self):
        for name in ("diameter", "stretch", "contrast"):
            if not np.isfinite(getattr(self, name)) or getattr(self, name) <= 0:
                raise InvalidSettingsError(f"the filament {name} must be a positive number.")
        if not 0 < self.threshold < 1:
            raise InvalidSettingsError("the threshold must lie between 0 and 1.")
        for name in ("min_length", "spacing"):
            value = getattr(self, name)
            if value is not None and (not np.isfinite(value) or value <= 0):
                raise InvalidSettingsError(f"the filament {name} must be a positive number "
                                           "of Angstrom.")
        if not 6 <= self.directions <= 1000:
            raise InvalidSettingsError("try between 6 and 1000 directions.")


@dataclass
class Filaments:
    """Centre lines (each (n, 3) z y x in the map's pixels, in order) and the tubes drawn
    around them (the map's shape; each tube numbered as its line, from 1)."""

    paths: list[np.ndarray]
    tubes: np.ndarray
    radius: float  # map pixels

    def lengths(self, voxel_size: float) -> list[float]:
        """Each centre line's length, Angstrom."""
        return [_length(path) * voxel_size for path in self.paths]

    def table(self, voxel_size: float, spacing: float) -> pd.DataFrame:
        """Points every ``spacing`` A along each filament, with RELION's helical columns:
        the filament (rlnHelicalTubeID, from 1), the distance along it and the tilt and
        psi priors that put a reference's z axis along the filament."""
        rows = []
        for number, path in enumerate(self.paths, start=1):
            points, along, direction = _resampled(path, spacing / voxel_size,
                                                  baseline=2 * self.radius)
            angles = axis_angles(direction[:, ::-1])  # x y z
            rows.append(pd.DataFrame({
                "z": points[:, 0], "y": points[:, 1], "x": points[:, 2], "filament": number,
                "track_length": along * voxel_size, "tilt_prior": angles[:, 1],
                "psi_prior": angles[:, 2]}))
        columns = ["z", "y", "x", "filament", "track_length", "tilt_prior", "psi_prior"]
        return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=columns)


def axis_angles(directions_xyz: np.ndarray) -> np.ndarray:
    """(n, 3) RELION (rot, tilt, psi) whose matrix A takes the z axis onto each direction
    (a point u of the reference sits at pos + A u): tilt and psi are fixed by it, rot
    (the turn about the filament) is left 0."""
    d = np.asarray(directions_xyz, float).reshape(-1, 3)
    norms = np.linalg.norm(d, axis=1, keepdims=True)
    if not np.all(norms > 0):
        raise InvalidSettingsError("a filament's direction must not be a zero vector.")
    d = d / norms
    helper = np.where(np.abs(d[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    first = np.cross(helper, d)
    first /= np.linalg.norm(first, axis=1, keepdims=True)
    matrices = np.stack([first, np.cross(d, first), d], axis=2)  # columns: A's x, y, z
    angles = relion_angles(matrices)
    angles[:, 0] = 0.0  # the turn about the axis is unknown: rot 0 (A's z is unchanged)
    return angles


def trace_filaments(probability: np.ndarray, voxel_size: float,
                    settings: FilamentSettings, scale: float = 1.0) -> Filaments:
    """``iter_trace`` run to its end: for scripts and benchmarks."""
    steps = iter_trace(probability, voxel_size, settings, scale)
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value


def iter_trace(probability: np.ndarray, voxel_size: float, settings: FilamentSettings,
               scale: float = 1.0) -> Generator[tuple[int, int], None, Filaments]:
    """Centre lines and tubes of the filaments in ``probability`` (values 0-1 once
    multiplied by ``scale``: 1/255 for a 0-255 map); yields (directions done, directions)
    as it goes, and stops where it is when closed.

    Works binned so that a radius of more than 9 voxels comes down to 4.5-9 (the contrast
    is smooth on that scale, and a radius of 12 voxels took 3.5 times as long as 6);
    paths and tubes come back on the map's grid, the tubes numbered as their centre lines
    (from 1; a voxel near two lines goes to the nearer).
    """
    check_volume_map(np.shape(probability), "tracing")
    if voxel_size <= 0:
        raise InvalidSettingsError("the voxel size must be positive.")
    radius_px = settings.diameter / 2 / voxel_size
    if radius_px < 1:
        raise InvalidSettingsError(f"a filament of {settings.diameter:g} A is under two voxels "
                                   f"of {voxel_size:g} A wide: too thin to trace here.")
    check_diameter(settings.diameter, np.shape(probability), voxel_size, what="filament")
    binning = working_binning(radius_px)
    work = _binned(probability, binning, scale)
    radius = radius_px / binning
    length = settings.stretch * 2 * radius
    best = np.full(work.shape, -np.inf, np.float32)
    axes = half_sphere(settings.directions)
    # mirrored beyond the faces: zeros there made every high stretch along a face a 'tube'
    padded = np.pad(work, _kernel_half(radius, length), mode="reflect")
    for done, direction in enumerate(axes):
        np.maximum(best, _convolved(padded, _contrast_kernel(direction, radius, length)),
                   out=best)
        yield done + 1, len(axes)
    del padded
    axis = best >= settings.contrast * settings.threshold
    del best
    min_length = (settings.min_length / voxel_size / binning if settings.min_length
                  else length)
    paths = [_smoothed(p, sigma=max(2.0, radius / 2)) for p in centre_lines(axis, min_length)]
    tubes = _tubes(paths, work.shape, radius, binning, probability.shape)
    last = np.array(probability.shape, float) - 1  # a part block's centre may lie past it
    return Filaments([np.clip(p * binning + (binning - 1) / 2, 0, last) for p in paths], tubes,
                     radius_px)


def working_binning(radius_px: float) -> int:
    """The binning tracing works at: a radius of 4.5-9 voxels once binned."""
    return max(1, round(radius_px / 6))


def working_shape(shape: tuple, binning: int) -> tuple[int, int, int]:
    """``_binned``'s grid: a part block in y and x dropped, one in z kept (averaged)."""
    return (-(-shape[0] // binning), shape[1] // binning, shape[2] // binning)


def half_sphere(n: int) -> np.ndarray:
    """About ``n`` unit vectors (z y x) spread evenly over the half sphere z >= 0."""
    i = np.arange(2 * n) + 0.5
    z = 1 - 2 * i / (2 * n)
    phi = np.pi * (1 + 5 ** 0.5) * i
    r = np.sqrt(1 - z * z)
    points = np.stack([z, r * np.sin(phi), r * np.cos(phi)], axis=1)
    return points[z >= 0]


def _kernel_half(radius: float, length: float) -> int:
    return int(np.ceil(np.hypot(length / 2, SLEEVE * radius)))


def _contrast_kernel(direction: np.ndarray, radius: float, length: float) -> np.ndarray:
    half = _kernel_half(radius, length)
    grid = np.mgrid[-half:half + 1, -half:half + 1, -half:half + 1].astype(np.float32)
    along = np.tensordot(direction.astype(np.float32), grid, axes=1)
    across = np.sqrt(np.maximum((grid ** 2).sum(0) - along ** 2, 0))
    within = np.abs(along) <= length / 2
    inside = within & (across <= radius)
    sleeve = within & (across > radius) & (across <= SLEEVE * radius)
    return (inside / inside.sum() - sleeve / sleeve.sum()).astype(np.float32)


def _convolved(padded: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``padded`` (the volume with a kernel's half on every side) convolved with ``kernel``:
    the volume's shape, SLAB slices at a time (symmetric kernels: the same as a
    correlation)."""
    half = kernel.shape[0] // 2
    shape = tuple(n - 2 * half for n in padded.shape)
    out = np.empty(shape, np.float32)
    for start in range(0, shape[0], SLAB):
        stop = min(start + SLAB, shape[0])
        out[start:stop] = signal.fftconvolve(padded[start:stop + 2 * half], kernel,
                                             mode="valid")
    return out


def centre_lines(axis: np.ndarray, min_length: float = 0.0) -> list[np.ndarray]:
    """Ordered centre lines of the skeleton of ``axis``, at least ``min_length`` voxels long:
    in each connected piece the longest path, then the longest of what is left, and so on
    (two crossing filaments give one whole line and two halves)."""
    from skimage.morphology import skeletonize

    skeleton = skeletonize(axis) if axis.any() else axis
    points = np.argwhere(skeleton).astype(float)
    if len(points) < 2:
        return []
    pairs = cKDTree(points).query_pairs(np.sqrt(3) + 1e-6, output_type="ndarray")
    steps = np.linalg.norm(points[pairs[:, 0]] - points[pairs[:, 1]], axis=1)
    graph = coo_matrix((steps, (pairs[:, 0], pairs[:, 1])), shape=(len(points),) * 2).tocsr()
    graph = graph + graph.T
    _, piece = connected_components(graph, directed=False)
    paths = []
    for members in np.split(np.argsort(piece, kind="stable"),
                            np.flatnonzero(np.diff(np.sort(piece))) + 1):
        if len(members) < 2 or np.sqrt(3) * (len(members) - 1) < min_length:
            continue  # too few voxels for a line that long: most pieces of a noisy map
        sub = graph[members][:, members]
        left = np.ones(len(members), bool)
        while left.sum() >= 2:
            path = _longest_path(sub, np.flatnonzero(left)[0], left)
            left[path] = False
            if len(path) >= 2 and _length(points[members[path]]) >= min_length:
                paths.append(points[members[path]])
    return paths


def _longest_path(graph, start: int, left: np.ndarray) -> np.ndarray:
    """The longest shortest path within the piece that holds ``start`` (two sweeps)."""
    keep = np.flatnonzero(left)
    sub = graph[keep][:, keep]
    origin = int(np.searchsorted(keep, start))
    distance = dijkstra(sub, indices=origin)
    far = int(np.argmax(np.where(np.isfinite(distance), distance, -1)))
    distance, previous = dijkstra(sub, indices=far, return_predecessors=True)
    end = int(np.argmax(np.where(np.isfinite(distance), distance, -1)))
    order = [end]
    while previous[order[-1]] >= 0:
        order.append(int(previous[order[-1]]))
    if len(order) == 1:  # an isolated voxel: take it out alone
        return keep[[origin]]
    return keep[np.array(order[::-1])]


def _length(path: np.ndarray) -> float:
    return float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())


def _smoothed(path: np.ndarray, sigma: float) -> np.ndarray:
    """``path`` smoothed along its length (a skeleton steps voxel by voxel and wanders
    across a wide ridge), as points half a voxel apart."""
    smooth = ndimage.gaussian_filter1d(path, sigma=sigma, axis=0, mode="nearest")
    return _resampled(smooth, 0.5)[0]


def _resampled(path: np.ndarray, step: float, baseline: float = 1.0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points every ``step`` pixels along ``path``, their distance along it and the unit
    direction there: the chord from ``baseline`` pixels before to as many after (a
    skeleton's ends hook aside over a few voxels)."""
    along = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(path, axis=0), axis=1))])

    def at(where: np.ndarray) -> np.ndarray:
        where = np.clip(where, 0.0, along[-1])
        return np.stack([np.interp(where, along, path[:, k]) for k in range(3)], axis=1)

    spots = np.arange(0.0, along[-1] + 1e-9, step)
    direction = at(spots + baseline) - at(spots - baseline)
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-9)
    return at(spots), spots, direction


def _binned(volume: np.ndarray, binning: int, scale: float = 1.0, slab: int = 16
            ) -> np.ndarray:
    """The preprocessing's block means (``bin_slab``, ``bin_volume_z``: a part block in y
    and x is dropped, one in z averaged) x ``scale``, clipped to 0-1 (values within the
    slack), read ``slab`` binned slices at a time: a memory-mapped float16 map is never
    copied whole."""
    from .preprocess import bin_slab, bin_volume_z

    parts = []
    for start in range(0, volume.shape[0], slab * binning):
        block = bin_volume_z(bin_slab(volume[start:start + slab * binning], binning), binning)
        parts.append(np.clip(block * np.float32(scale), 0.0, 1.0, dtype=np.float32))
    return np.concatenate(parts)


def _tubes(paths: list[np.ndarray], work_shape: tuple, radius: float, binning: int,
           shape: tuple, numbers: list[int] | None = None) -> np.ndarray:
    """Voxels within ``radius`` (working pixels) of a centre line, numbered as the nearest
    line (``numbers``, else from 1), on the map's grid."""
    numbers = numbers or list(range(1, len(paths) + 1))
    lines = np.zeros(work_shape, np.uint16 if max(numbers, default=0) > 255 else np.uint8)
    for number, path in zip(numbers, paths):
        lines[tuple(np.round(path).astype(int).T)] = number
    if not lines.any():
        return np.zeros(shape, lines.dtype)
    distance, nearest = ndimage.distance_transform_edt(lines == 0, return_indices=True)
    numbered = np.where(distance <= radius, lines[tuple(nearest)], 0).astype(lines.dtype)
    del nearest
    index = [np.minimum(np.arange(n) // binning, w - 1) for n, w in zip(shape, work_shape)]
    return numbered[np.ix_(*index)]
