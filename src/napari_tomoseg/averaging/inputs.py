"""What averaging is given, checked before any search: boxes, reference, symmetry, band."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidSettingsError

if TYPE_CHECKING:
    from .refine import AverageSettings


def checked_inputs(particles: np.ndarray, voxel_size: float, s: AverageSettings,
                   reference: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The particles and reference as arrays, or an error saying what is wrong with them."""
    particles = np.asarray(particles)
    if particles.ndim != 4 or particles.shape[1:] != (s.box,) * 3:
        raise InvalidSettingsError(f"particles must be (n, {s.box}, {s.box}, {s.box}) boxes.")
    if len(particles) < 4:
        raise InvalidSettingsError("averaging needs at least 4 particles (2 per half set).")
    if voxel_size <= 0:
        raise InvalidSettingsError("the voxel size must be positive.")
    _check_search_band(s, voxel_size)
    if reference is not None:
        reference = np.asarray(reference, dtype=np.float32)
        if reference.shape != (s.box,) * 3:
            raise InvalidSettingsError(f"the reference is {reference.shape}, the boxes are {s.box}^3.")
    elif s.symmetry.upper() != "C1":  # the start's axis lies as its first particle did:
        raise InvalidSettingsError(  # symmetrised about z, it was smeared (both halves alike)
            f"symmetry {s.symmetry} needs a reference whose symmetry axis is z (as RELION's): "
            "without one the start's axis lies anywhere. Average in C1 first, then align the "
            "result's axis to z and use it as the reference.")
    return particles, reference


def _check_search_band(s: AverageSettings, voxel_size: float) -> None:
    """The first search compares Fourier shells from 4 (the high-pass) to the start's
    low-pass plus its 1.5-shell cosine edge: a small box at a fine voxel size held none,
    every score was NaN, every particle took the first orientation, and a resolution was
    reported. Refused below one shell of band (a sliver of the edge aligns on noise)."""
    shells = s.start_cutoff(voxel_size) * s.box
    if shells < 3.5:
        smallest = int(np.ceil(3.5 / s.start_cutoff(voxel_size) / 2)) * 2
        resolution = voxel_size / s.start_cutoff(voxel_size)
        raise InvalidSettingsError(
            f"a {s.box}-voxel box at {voxel_size:g} A is too small to align at the start "
            f"resolution of {resolution:.0f} A (it keeps {shells:.1f} Fourier shells; the "
            f"lowest 4 are left out): use a box of at least {smallest} voxels, or a finer "
            "--start-resolution.")
