"""Rotations in RELION's convention, SO(3) sampling and point-group symmetry.

Convention used throughout averaging, RELION's own: ``A`` is the matrix
RELION's ``Euler_angles2matrix(rot, tilt, psi)`` builds (src/euler.cpp; the
transpose of scipy's intrinsic ZYZ matrix). It rotates the reference into
the particle: ``particle(r) = ref(A^T r)``, so a point ``u`` of the
reference frame sits at ``pos + A u`` in the tomogram (RELION 5
``ParticleSet::getMatrix4x4`` maps particle space to tomogram space with A).
``r`` and ``u`` are (x, y, z) coordinates about the box centre. Matrices act
on (x, y, z), arrays are stored (z, y, x).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import InvalidSettingsError
from ..io.relion_euler import relion_angles, relion_matrices

__all__ = ["relion_angles", "relion_matrices", "angular_distance", "uniform_rotations",
           "local_rotations", "symmetry_operators"]


def angular_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle in degrees of the rotation taking each matrix in ``a`` to ``b``."""
    a = np.asarray(a, dtype=float).reshape(-1, 3, 3)
    b = np.asarray(b, dtype=float).reshape(-1, 3, 3)
    trace = np.einsum("nij,nij->n", a, b)  # trace(a^T b)
    return np.degrees(np.arccos(np.clip((trace - 1) / 2, -1.0, 1.0)))


def _super_fibonacci(count: int) -> np.ndarray:
    """Unit quaternions (w, x, y, z) spread evenly over SO(3) (Alexa, CVPR 2022)."""
    phi = np.sqrt(2.0)
    psi = 1.533751168755204288118041
    i = np.arange(count) + 0.5
    s = i / count
    r = np.sqrt(s)
    big_r = np.sqrt(1.0 - s)
    alpha = 2 * np.pi * i / phi
    beta = 2 * np.pi * i / psi
    return np.stack([r * np.sin(alpha), r * np.cos(alpha),
                     big_r * np.sin(beta), big_r * np.cos(beta)], axis=1)


def uniform_rotations(step_deg: float) -> np.ndarray:
    """Matrices covering all orientations with about ``step_deg`` between neighbours.

    The count is 8 pi^2 / step^3 (radians): ~550 at 30 degrees, ~4,400 at 15.
    A random orientation then lies a median of step/2 from its nearest
    sample (measured on the super-Fibonacci set used here).
    """
    if not 0.5 <= step_deg <= 180:
        raise InvalidSettingsError("the angular step must be between 0.5 and 180 degrees.")
    step = np.radians(step_deg)
    count = max(int(np.ceil(8 * np.pi ** 2 / step ** 3)), 1)
    quaternions = _super_fibonacci(count)
    return Rotation.from_quat(quaternions[:, [1, 2, 3, 0]]).as_matrix()


def local_rotations(step_deg: float, range_deg: float) -> np.ndarray:
    """Small rotations (identity first) on a grid of rotation vectors within ``range_deg``."""
    if step_deg <= 0 or range_deg < 0:
        raise InvalidSettingsError("local search needs a positive step and a non-negative range.")
    n = int(np.floor(range_deg / step_deg + 1e-9))
    axis = np.arange(-n, n + 1) * np.radians(step_deg)
    vectors = np.stack(np.meshgrid(axis, axis, axis, indexing="ij"), axis=-1).reshape(-1, 3)
    vectors = vectors[np.linalg.norm(vectors, axis=1) <= np.radians(range_deg) + 1e-9]
    vectors = vectors[np.argsort(np.linalg.norm(vectors, axis=1), kind="stable")]
    return Rotation.from_rotvec(vectors).as_matrix()


def symmetry_operators(symmetry: str) -> np.ndarray:
    """Matrices of the point group Cn or Dn (symmetry axis z, D's two-fold axes along x)."""
    text = (symmetry or "C1").strip().upper()
    try:
        order = int(text[1:])
    except ValueError:
        order = 0
    if text[:1] not in ("C", "D") or order < 1:
        raise InvalidSettingsError(f"unknown symmetry '{symmetry}': use C1, C2, ..., Cn or D2, ..., Dn.")
    angles = 360.0 * np.arange(order) / order
    about_z = Rotation.from_euler("z", angles[:, None], degrees=True).as_matrix().reshape(-1, 3, 3)
    if text[0] == "C":
        return about_z
    flip = Rotation.from_euler("x", 180.0, degrees=True).as_matrix()
    return np.concatenate([about_z, about_z @ flip])
