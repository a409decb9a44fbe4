"""An asymmetric, chiral ribosome-like density made of Gaussian blobs.

Built from blobs (not a voxel map) so that any orientation is rendered
exactly, without interpolation blur: a particle with RELION angles
(rot, tilt, psi) has its blobs at ``A @ c`` where ``A`` is the matrix
RELION builds from those angles (``Euler_angles2matrix``, src/euler.cpp),
which makes the particle density ``ref(A^T r)``: RELION's convention.
The blob layout has no mirror symmetry, so an average of the wrong hand
is detectably different from the truth.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

# (x, y, z) centre in nm, Gaussian sigma in nm, relative weight.
# Large subunit (a lumpy ~22 nm body), small subunit offset in +y and tilted
# towards +x, a stalk sticking out at +x+z and a beak at -x+y: chiral.
_BLOBS_NM = np.array([
    # large subunit
    [0.0, -3.0, 0.0, 5.0, 1.0],
    [4.0, -4.0, 3.0, 4.0, 0.8],
    [-4.5, -3.5, -2.0, 4.0, 0.8],
    [1.0, -6.5, -3.5, 3.5, 0.7],
    [-2.0, -2.0, 4.5, 3.5, 0.7],
    # small subunit
    [1.5, 5.0, 1.0, 3.5, 0.8],
    [-2.5, 6.0, -1.0, 3.0, 0.7],
    [3.5, 6.5, -2.5, 2.5, 0.5],
    # stalk (asymmetric protrusion) and beak
    [8.5, -2.0, 5.5, 1.8, 0.6],
    [10.5, -1.0, 7.0, 1.4, 0.5],
    [-5.0, 9.0, 1.5, 1.8, 0.5],
])

RIBOSOME_DIAMETER_NM = 25.0

# Blobs of each species: the full particle, and one missing its small subunit
# (a second class of the same size, for testing classification).
SPECIES = {"ribosome": slice(None), "large_subunit": np.r_[0:5, 8:10]}


def blob_parameters(voxel_size: float, species: str = "ribosome") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Blob centres (x, y, z) and sigmas in voxels, and weights."""
    scale = 10.0 / voxel_size  # nm -> voxels
    blobs = _BLOBS_NM[SPECIES[species]]
    return blobs[:, :3] * scale, blobs[:, 3] * scale, blobs[:, 4]


def relion_matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's rotation matrix A for ZYZ Euler angles in degrees (A = M^T)."""
    return Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).as_matrix().T


def render_blobs(shape: tuple[int, int, int], centre_zyx: np.ndarray, voxel_size: float,
                 angles: tuple[float, float, float] = (0.0, 0.0, 0.0),
                 out: np.ndarray | None = None, weight: float = 1.0,
                 species: str = "ribosome") -> np.ndarray:
    """Add one particle's density to ``out`` (z, y, x), only inside its bounding box."""
    out = np.zeros(shape, np.float32) if out is None else out
    centres, sigmas, weights = blob_parameters(voxel_size, species)
    rotated_xyz = centres @ relion_matrix(*angles).T  # rows: (A c)^T = c^T A^T
    rotated_zyx = rotated_xyz[:, ::-1] + np.asarray(centre_zyx, dtype=float)
    reach = float(np.max(np.abs(centres)) + 3 * sigmas.max()) + 1
    lo = np.maximum(np.floor(np.asarray(centre_zyx) - reach).astype(int), 0)
    hi = np.minimum(np.ceil(np.asarray(centre_zyx) + reach).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return out
    grids = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    box = np.zeros(tuple(hi - lo), np.float32)
    for (cz, cy, cx), sigma, w in zip(rotated_zyx, sigmas, weights):
        d2 = (grids[0] - cz) ** 2 + (grids[1] - cy) ** 2 + (grids[2] - cx) ** 2
        box += (w * np.exp(-d2 / (2 * sigma ** 2))).astype(np.float32)
    out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] += weight * box
    return out


def reference_density(box_size: int, voxel_size: float, species: str = "ribosome") -> np.ndarray:
    """The ribosome in its reference orientation, centred in a cubic box."""
    centre = np.full(3, box_size // 2, dtype=float)
    return render_blobs((box_size,) * 3, centre, voxel_size, species=species)


def mask_threshold() -> float:
    """Density above which a voxel counts as inside the particle (label)."""
    return 0.35
