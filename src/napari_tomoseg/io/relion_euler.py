"""RELION's Euler angles (rot, tilt, psi) <-> rotation matrices, with scipy only.

``A = Euler_angles2matrix(rot, tilt, psi)`` in RELION's src/euler.cpp is the
transpose of scipy's intrinsic ZYZ rotation of the same angles. RELION uses
A to rotate the reference into the particle: ``particle(r) = ref(A^T r)``;
a point ``u`` of the reference frame sits at ``pos + A u`` in the tomogram.
Kept apart from ``averaging`` so that file I/O needs no torch.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.spatial.transform import Rotation


def relion_matrices(angles: np.ndarray) -> np.ndarray:
    """(n, 3) RELION (rot, tilt, psi) in degrees -> (n, 3, 3) matrices A."""
    angles = np.asarray(angles, dtype=float).reshape(-1, 3)
    return np.transpose(Rotation.from_euler("ZYZ", angles, degrees=True).as_matrix(), (0, 2, 1))


def relion_angles(matrices: np.ndarray) -> np.ndarray:
    """(n, 3, 3) matrices A -> (n, 3) RELION (rot, tilt, psi) in degrees, tilt in [0, 180]."""
    matrices = np.asarray(matrices, dtype=float).reshape(-1, 3, 3)
    with warnings.catch_warnings():  # tilt 0 or 180: rot and psi are not unique, scipy says so
        warnings.simplefilter("ignore", UserWarning)
        return Rotation.from_matrix(np.transpose(matrices, (0, 2, 1))).as_euler("ZYZ", degrees=True)
