"""A synthetic piece of cell: density plus exact per-feature ground truth.

Sizes are physical (nm) and converted with the voxel size, so the same
cell can be made at 10 or 20 A/voxel. Every object is drawn from the
seeded generator, so a seed gives the same cell on every machine.
Densities are relative to vitreous ice (0); protein about 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from ..errors import InvalidSettingsError
from ..features import FEATURE_COLOURS, FEATURES  # noqa: F401  (re-exported)
from . import ribosome as ribo
from .cell_ribosomes import add_ribosomes
from .distractors import add_distractors



@dataclass(frozen=True)
class CellSpec:
    """What to put in the synthetic cell; counts scale with the volume's area."""

    shape: tuple[int, int, int] = (128, 512, 512)  # (z, y, x) voxels
    voxel_size: float = 10.0  # Angstrom
    n_vesicles: int = 5
    organelle: bool = True
    plasma_membrane: bool = True
    n_microtubules: int = 3
    n_actin: int = 8
    ribosome_density_per_um3: float = 6000.0
    crowding: float = 1.0
    carbon_edge: bool = True
    distractor_density_per_um3: float = 0.0  # ribosome-sized complexes that are not ribosomes
    # empty ice above and below the cell (each side), as a reconstruction holds a specimen
    # with a margin, so particles at its surfaces are not cut by the volume's faces (a milled
    # lamella in vacuum would show a density step there: not modelled)
    ice_margin_nm: float = 0.0


@dataclass
class SyntheticCell:
    density: np.ndarray  # (z, y, x) float32
    labels: dict[str, np.ndarray]  # feature -> (z, y, x) uint8 0/1
    particles: np.ndarray  # (N, 3) ribosome centres, pixels (z, y, x)
    angles: np.ndarray  # (N, 3) RELION rot, tilt, psi in degrees
    spec: CellSpec = field(default_factory=CellSpec)


def _nm(spec: CellSpec, nanometres: float) -> float:
    return nanometres * 10.0 / spec.voxel_size


def _grid(shape):
    return np.ogrid[0:shape[0], 0:shape[1], 0:shape[2]]


def _bilayer_profile(distance: np.ndarray, spec: CellSpec) -> np.ndarray:
    """Two leaflets (head groups) 4 nm apart across a membrane's mid-surface."""
    sigma = max(_nm(spec, 0.8), 0.6)
    half = _nm(spec, 2.0)
    return (np.exp(-((distance - half) ** 2) / (2 * sigma ** 2))
            + np.exp(-((distance + half) ** 2) / (2 * sigma ** 2))).astype(np.float32)


def _membrane_label(distance: np.ndarray, spec: CellSpec) -> np.ndarray:
    return np.abs(distance) <= max(_nm(spec, 3.0), 1.0)


class _Canvas:
    """Accumulates density and labels; tracks space that particles must avoid."""

    def __init__(self, spec: CellSpec):
        self.spec = spec
        self.density = np.zeros(spec.shape, np.float32)
        self.labels = {name: np.zeros(spec.shape, np.uint8) for name in FEATURES}
        self.occupied = np.zeros(spec.shape, bool)

    def add_membrane(self, distance: np.ndarray, where=np.s_[:, :, :]) -> None:
        self.density[where] += _bilayer_profile(distance, self.spec)
        label = _membrane_label(distance, self.spec)
        self.labels["membrane"][where] |= label.astype(np.uint8)
        self.occupied[where] |= np.abs(distance) <= _nm(self.spec, 5.0)


def _sphere_box(spec: CellSpec, centre, radius: float, margin: float):
    lo = np.maximum(np.floor(np.asarray(centre) - radius - margin).astype(int), 0)
    hi = np.minimum(np.ceil(np.asarray(centre) + radius + margin).astype(int) + 1, spec.shape)
    return lo, hi


def _add_plasma_membrane(canvas: _Canvas, rng: np.random.Generator) -> np.ndarray:
    """A gently curved cell boundary across one side; returns the inside mask."""
    spec = canvas.spec
    nz, ny, nx = spec.shape
    radius = 2.5 * max(ny, nx)
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.sin(angle), np.cos(angle)])
    # centre far outside so the boundary crosses ~12% into the field
    centre_yx = np.array([ny / 2, nx / 2]) + direction * (radius - 0.38 * min(ny, nx))
    y, x = np.ogrid[0:ny, 0:nx]
    # the boundary is vertical through the slab: compute in 2D, broadcast over z
    distance = (np.sqrt((y - centre_yx[0]) ** 2 + (x - centre_yx[1]) ** 2) - radius)[None]
    canvas.add_membrane(distance.astype(np.float32))
    inside = np.broadcast_to(distance < 0, spec.shape)
    canvas.occupied |= ~inside
    return inside


def _add_vesicles(canvas: _Canvas, rng: np.random.Generator, inside: np.ndarray,
                  placed: list) -> None:
    spec = canvas.spec
    nz, ny, nx = spec.shape
    for _ in range(spec.n_vesicles * 20):
        if sum(1 for p in placed if p[2] == "vesicle") >= spec.n_vesicles:
            break
        radius = rng.uniform(_nm(spec, 18), _nm(spec, 45))
        radius = min(radius, 0.45 * nz + _nm(spec, 10))
        centre = np.array([rng.uniform(0.3, 0.7) * nz, rng.uniform(0, ny), rng.uniform(0, nx)])
        if not _free(centre, radius + _nm(spec, 8), placed):
            continue
        if not _fits_inside(inside, centre, (radius + _nm(spec, 8),) * 2, 0.0):
            continue
        lo, hi = _sphere_box(spec, centre, radius, _nm(spec, 6))
        z, y, x = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        distance = np.sqrt((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) - radius
        where = np.s_[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        canvas.add_membrane(distance, where)
        canvas.occupied[where] |= distance < 0  # no ribosomes inside vesicles
        placed.append((centre, radius, "vesicle"))


def _fits_inside(inside: np.ndarray, centre, semi_axes_yx, yaw: float) -> bool:
    """True if an ellipse (in the y-x plane, long axis at ``yaw``) stays inside the cell.

    Points of the ellipse outside the field of view are fine: objects may
    be cut by the edge of the tomogram, but not by the plasma membrane.
    """
    shape = np.array(inside.shape)
    t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
    b, a = semi_axes_yx
    u, v = a * np.cos(t), b * np.sin(t)
    x = centre[2] + u * np.cos(yaw) - v * np.sin(yaw)
    y = centre[1] + u * np.sin(yaw) + v * np.cos(yaw)
    z = np.full_like(x, centre[0])
    points = np.round(np.stack([z, y, x], axis=1)).astype(int)
    within = np.all((points >= 0) & (points < shape), axis=1)
    if not (0 <= int(centre[0]) < shape[0] and 0 <= int(centre[1]) < shape[1]
            and 0 <= int(centre[2]) < shape[2] and inside[tuple(np.asarray(centre, int))]):
        return False
    return bool(np.all(inside[tuple(points[within].T)]))


def _free(centre, radius, placed) -> bool:
    return all(np.linalg.norm(centre - c) > radius + r for c, r, _ in placed)


def _add_organelle(canvas: _Canvas, rng: np.random.Generator, inside: np.ndarray,
                   placed: list) -> None:
    """An elongated organelle with a double envelope (two bilayers ~20 nm apart)."""
    spec = canvas.spec
    nz, ny, nx = spec.shape
    yaw = rng.uniform(0, np.pi)
    semi = np.array([min(_nm(spec, 45), 0.42 * nz), min(_nm(spec, 70), 0.14 * min(ny, nx)),
                     min(_nm(spec, 140), 0.28 * max(ny, nx))])
    for _ in range(50):
        centre = np.array([nz / 2, rng.uniform(0.25, 0.75) * ny, rng.uniform(0.25, 0.75) * nx])
        if (_fits_inside(inside, centre, (semi[1] + _nm(spec, 30), semi[2] + _nm(spec, 30)), yaw)
                and _free(centre, semi[2], placed)):
            break
    else:
        return
    rotation = Rotation.from_euler("z", yaw).as_matrix()  # acts on (x, y, z)
    reach = semi.max() + _nm(spec, 30)
    lo, hi = _sphere_box(spec, centre, reach, 0)
    z, y, x = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    dx, dy, dz = x - centre[2], y - centre[1], z - centre[0]
    # coordinates in the organelle frame (u along its long axis)
    u = rotation[0, 0] * dx + rotation[1, 0] * dy
    v = rotation[0, 1] * dx + rotation[1, 1] * dy
    w = dz + 0 * u
    where = np.s_[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    for offset in (0.0, _nm(spec, 20)):
        a, b, c = semi[2] + offset, semi[1] + offset, semi[0] + offset
        rho = np.sqrt((u / a) ** 2 + (v / b) ** 2 + (w / c) ** 2)
        grad = np.sqrt((u / a ** 2) ** 2 + (v / b ** 2) ** 2 + (w / c ** 2) ** 2) / np.maximum(rho, 1e-6)
        distance = (rho - 1) / np.maximum(grad, 1e-6)
        canvas.add_membrane(distance, where)
        if offset == 0.0:
            lumen = distance < 0
            canvas.density[where] += 0.25 * lumen  # denser matrix
    outer = distance < 0
    canvas.occupied[where] |= outer
    placed.append((centre, semi[2] + _nm(spec, 20), "organelle"))


def _random_polyline(rng, spec: CellSpec, straight: bool, n_points: int = 60) -> np.ndarray:
    """A filament path (z, y, x) crossing the field, mostly parallel to the grid plane."""
    nz, ny, nx = spec.shape
    angle = rng.uniform(0, np.pi)
    direction = np.array([rng.uniform(-0.1, 0.1), np.sin(angle), np.cos(angle)])
    direction /= np.linalg.norm(direction)
    # through the central half, so a path crosses >= 0.7 of the field (not a corner stub)
    start = np.array([rng.uniform(0.25, 0.75) * n for n in (nz, ny, nx)])
    length = 2.0 * max(ny, nx)
    t = np.linspace(-length / 2, length / 2, n_points * 8)
    path = start[None, :] + t[:, None] * direction[None, :]
    if not straight:
        bend = np.cumsum(rng.normal(0, 0.015, size=(len(t), 3)), axis=0)
        bend[:, 0] *= 0.3
        path += np.cumsum(bend, axis=0) * (t[1] - t[0]) * 0.3
    path[:, 0] = np.clip(path[:, 0], _nm(spec, 15), nz - 1 - _nm(spec, 15))
    return path


def _clear_path(rng, spec: CellSpec, occupied: np.ndarray, radius: float, straight: bool,
                tries: int = 60) -> np.ndarray:
    """A filament path that does not run through membranes, organelles or vesicles.

    Paths are drawn until one keeps ``radius`` away from occupied space
    (checked on the centre line and six points around it); after ``tries``
    the one with the smallest obstructed share of its in-field points is used
    (a count would favour paths that run mostly outside the field).
    """
    offsets = np.array([[0, 0, 0], [radius, 0, 0], [-radius, 0, 0], [0, radius, 0],
                        [0, -radius, 0], [0, 0, radius], [0, 0, -radius]])
    shape = np.array(spec.shape)
    best, best_share = None, np.inf
    for _ in range(tries):
        path = _random_polyline(rng, spec, straight)
        points = np.round((_densify(path)[::4, None, :] + offsets[None]).reshape(-1, 3)).astype(int)
        points = points[np.all((points >= 0) & (points < shape), axis=1)]
        share = occupied[tuple(points.T)].mean() if len(points) else 1.0
        if share < best_share:
            best, best_share = path, share
        if share == 0:
            break
    return best


def _centreline_distance(spec: CellSpec, paths: list[np.ndarray], reach: float) -> np.ndarray:
    """Distance of every voxel to the nearest filament centre line (voxels).

    Exact within ``reach`` of a centre line (inf beyond): each path is cut
    into short straight segments and distances are computed only inside
    each segment's padded bounding box, which is ~100x cheaper than a
    Euclidean distance transform of the whole volume.
    """
    distance = np.full(spec.shape, np.inf, np.float32)
    upper = np.array(spec.shape)
    for path in paths:
        dense = _densify(path)
        points = dense[:: max(1, int(8 / 0.5))]
        if len(points) < 2 or not np.array_equal(points[-1], dense[-1]):
            points = np.vstack([points, dense[-1:]])
        for a, b in zip(points[:-1], points[1:]):
            lo = np.maximum(np.floor(np.minimum(a, b) - reach).astype(int), 0)
            hi = np.minimum(np.ceil(np.maximum(a, b) + reach).astype(int) + 1, upper)
            if np.any(hi <= lo):
                continue
            z, y, x = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            ab = b - a
            t = ((z - a[0]) * ab[0] + (y - a[1]) * ab[1] + (x - a[2]) * ab[2]) / max(ab @ ab, 1e-12)
            t = np.clip(t, 0.0, 1.0)
            d2 = ((z - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2
                  + (x - a[2] - t * ab[2]) ** 2)
            view = distance[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
            np.minimum(view, np.sqrt(d2).astype(np.float32), out=view)
    return distance


def _densify(path: np.ndarray) -> np.ndarray:
    steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
    n = max(int(np.ceil(steps.sum() / 0.5)), 2)
    s = np.concatenate([[0], np.cumsum(steps)])
    t = np.linspace(0, s[-1], n)
    return np.stack([np.interp(t, s, path[:, i]) for i in range(3)], axis=1)


def _sigmoid(value: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * value))).astype(np.float32)


def _add_filaments(canvas: _Canvas, rng: np.random.Generator, inside: np.ndarray) -> None:
    spec = canvas.spec
    if spec.n_microtubules:
        paths = [_clear_path(rng, spec, canvas.occupied, _nm(spec, 15), straight=True)
                 for _ in range(spec.n_microtubules)]
        outer, inner = _nm(spec, 12.5), _nm(spec, 8.0)
        r = _centreline_distance(spec, paths, outer + _nm(spec, 6))
        width = max(_nm(spec, 1.0), 0.5)
        wall = _sigmoid((outer - r) / width) - _sigmoid((inner - r) / width)
        wall *= inside
        canvas.density += 0.9 * wall.astype(np.float32)
        tube = (r <= outer) & inside
        canvas.labels["microtubule"] |= tube.astype(np.uint8)
        canvas.occupied |= r <= outer + _nm(spec, 3)
    if spec.n_actin:
        paths = [_clear_path(rng, spec, canvas.occupied, _nm(spec, 5), straight=False)
                 for _ in range(spec.n_actin)]
        radius = _nm(spec, 3.5)
        r = _centreline_distance(spec, paths, radius + _nm(spec, 5))
        width = max(_nm(spec, 0.8), 0.5)
        rod = _sigmoid((radius - r) / width) * inside
        free = ~canvas.occupied
        canvas.density += (0.9 * rod * free).astype(np.float32)
        canvas.labels["actin"] |= ((r <= max(radius, 1.0)) & inside & free).astype(np.uint8)
        canvas.occupied |= r <= radius + _nm(spec, 2)


def _add_crowding(canvas: _Canvas, rng: np.random.Generator, inside: np.ndarray) -> None:
    """Small proteins (5-10 nm) packed through the cytoplasm: the texture of a real cell."""
    spec = canvas.spec
    if spec.crowding <= 0:
        return
    points = np.zeros(spec.shape, np.float32)
    voxels_per_protein = (_nm(spec, 12.0)) ** 3
    n = int(spec.crowding * inside.sum() / voxels_per_protein)
    idx = tuple(rng.integers(0, s, n) for s in spec.shape)
    np.add.at(points, idx, rng.uniform(0.5, 1.5, n).astype(np.float32))
    blobs = ndimage.gaussian_filter(points, _nm(spec, 2.0))
    blobs *= 0.6 / max(float(blobs.max()), 1e-6) * 3
    blobs *= inside & ~canvas.occupied
    canvas.density += np.clip(blobs, 0, 0.8).astype(np.float32)


def _add_carbon(canvas: _Canvas, rng: np.random.Generator) -> None:
    """A carbon film with a straight edge across one corner, near the top of the ice."""
    spec = canvas.spec
    nz, ny, nx = spec.shape
    angle = rng.uniform(0, 2 * np.pi)
    normal = np.array([np.sin(angle), np.cos(angle)])
    offset = 0.36 * min(ny, nx)
    z, y, x = _grid(spec.shape)
    signed = (y - ny / 2) * normal[0] + (x - nx / 2) * normal[1] - offset
    thickness = _nm(spec, 12.0)
    top = max(int(0.08 * nz), 1)
    slab = (z >= top) & (z < top + thickness) & (signed > 0)
    canvas.density += 3.0 * slab.astype(np.float32)
    canvas.labels["carbon"] |= slab.astype(np.uint8)
    canvas.occupied |= np.broadcast_to(signed > -_nm(spec, 10), spec.shape) & (z < top + thickness + _nm(spec, 10))


def generate_cell(spec: CellSpec = CellSpec(), seed: int = 0) -> SyntheticCell:
    """Lay out and render a synthetic cell (density and ground-truth labels)."""
    if len(spec.shape) != 3 or min(spec.shape) < 16:
        raise InvalidSettingsError(f"a synthetic cell needs a 3D shape of at least 16 voxels a side, not {spec.shape}.")
    if spec.ice_margin_nm > 0:
        return _in_ice(spec, seed)
    rng = np.random.default_rng(seed)
    canvas = _Canvas(spec)
    inside = (_add_plasma_membrane(canvas, rng) if spec.plasma_membrane
              else np.ones(spec.shape, bool))
    if spec.carbon_edge:
        _add_carbon(canvas, rng)
    placed: list = []
    if spec.organelle:
        _add_organelle(canvas, rng, inside, placed)
    _add_vesicles(canvas, rng, inside, placed)
    _add_filaments(canvas, rng, inside)
    centres, angles = add_ribosomes(canvas, rng, inside)
    if spec.distractor_density_per_um3 > 0:
        add_distractors(canvas, rng, inside, centres, _nm(spec, ribo.RIBOSOME_DIAMETER_NM / 2))
    _add_crowding(canvas, rng, inside)
    return SyntheticCell(density=canvas.density, labels=canvas.labels,
                         particles=centres, angles=angles, spec=spec)


def ice_margin_slices(spec: CellSpec) -> int:
    """Slices of empty ice above (and below) the cell."""
    return int(round(_nm(spec, spec.ice_margin_nm)))


def _in_ice(spec: CellSpec, seed: int) -> SyntheticCell:
    """The cell made as thick as the volume less ``ice_margin_nm`` above and below, then set
    in empty ice: its surfaces cut what lies across them, as milling or blotting does."""
    margin = ice_margin_slices(spec)
    if spec.shape[0] - 2 * margin < 16:
        raise InvalidSettingsError(f"{spec.ice_margin_nm} nm of ice on each side leaves less than "
                                   f"16 slices of a {spec.shape[0]}-slice volume for the cell.")
    inner = replace(spec, shape=(spec.shape[0] - 2 * margin, *spec.shape[1:]), ice_margin_nm=0.0)
    cell = generate_cell(inner, seed)
    pad = ((margin, margin), (0, 0), (0, 0))
    return SyntheticCell(density=np.pad(cell.density, pad),
                         labels={k: np.pad(v, pad) for k, v in cell.labels.items()},
                         particles=cell.particles + [margin, 0, 0], angles=cell.angles, spec=spec)
