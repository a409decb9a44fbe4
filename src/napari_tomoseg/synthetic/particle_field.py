"""A field of randomly oriented particles imaged with a missing wedge.

The controlled test bed for subtomogram averaging: known positions, known
RELION angles and the true density, without the crowding of a whole cell.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from .. import tilt_series as ts
from ..errors import InvalidSettingsError
from .ribosome import RIBOSOME_DIAMETER_NM, SPECIES, reference_density, render_blobs


@dataclass
class ParticleField:
    tomogram: np.ndarray  # (z, y, x) float32, zero mean unit variance, protein dark
    zyx: np.ndarray  # (n, 3) true centres in voxels
    angles: np.ndarray  # (n, 3) RELION (rot, tilt, psi) in degrees
    species: np.ndarray  # (n,) species name of each particle
    voxel_size: float
    tilt_range: tuple[float, float]

    def reference(self, box: int, species: str = "ribosome") -> np.ndarray:
        """The true density in the reference orientation (protein bright)."""
        return reference_density(box, self.voxel_size, species)


def simulate_particle_field(count: int = 200, voxel_size: float = 15.0, snr: float = 0.05,
                            tilt_min: float = -60.0, tilt_max: float = 60.0, tilt_step: float = 3.0,
                            species_fractions: dict[str, float] | None = None,
                            jitter: float = 2.0, seed: int = 0) -> ParticleField:
    """Particles on a jittered grid in a two-layer slab, projected, noised and reconstructed.

    ``snr`` is the per-tilt-image variance ratio of signal to noise.
    """
    if count < 1 or voxel_size <= 0 or snr <= 0:
        raise InvalidSettingsError("a particle field needs count >= 1, voxel size > 0 and snr > 0.")
    fractions = species_fractions or {"ribosome": 1.0}
    unknown = set(fractions) - set(SPECIES)
    if unknown:
        raise InvalidSettingsError(f"unknown species {sorted(unknown)}; known: {sorted(SPECIES)}.")
    rng = np.random.default_rng(seed)
    diameter = RIBOSOME_DIAMETER_NM * 10 / voxel_size
    spacing = int(np.ceil(diameter * 1.35 + 2 * jitter))
    per_layer = int(np.ceil(count / 2))
    side = int(np.ceil(np.sqrt(per_layer)))
    margin = spacing
    shape = (2 * spacing + margin, side * spacing + margin, side * spacing + margin)
    grid = np.array([(layer, i, j) for layer in range(2) for i in range(side) for j in range(side)])
    grid = grid[rng.permutation(len(grid))[:count]]
    zyx = (grid + 0.5) * spacing + margin / 2 + rng.uniform(-jitter, jitter, (count, 3))
    angles = Rotation.random(count, random_state=rng).as_euler("ZYZ", degrees=True)
    names = list(fractions)
    weights = np.array([fractions[k] for k in names], dtype=float)
    species = np.array(names)[rng.choice(len(names), size=count, p=weights / weights.sum())]
    density = np.zeros(shape, np.float32)
    for centre, euler, kind in zip(zyx, angles, species):
        render_blobs(shape, centre, voxel_size, tuple(euler), out=density, species=str(kind))
    tilts = ts.tilt_angles(tilt_min, tilt_max, tilt_step)
    series = -ts.project(density, tilts)
    noise = np.sqrt(series.var() / snr)
    series = series + rng.normal(0.0, noise, series.shape).astype(np.float32)
    tomogram = ts.weighted_backprojection(series, tilts, shape[0])
    tomogram = (tomogram - tomogram.mean()) / max(float(tomogram.std()), 1e-12)
    return ParticleField(tomogram.astype(np.float32), zyx, angles, species, voxel_size,
                         (tilt_min, tilt_max))


def write_particle_field(field: ParticleField, folder, name: str = "particles",
                         box: int = 32, overwrite: bool = False) -> dict:
    """Tomogram MRC, true positions and angles as RELION 5 STAR, true density MRC."""
    from pathlib import Path

    from ..io.mrc import write_volume
    from ..io.particles import TomogramFrame, particle_table, write_star

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # simulated unbinned: the tilt series has the tomogram's pixel size
    frame = TomogramFrame(name=name, shape=field.tomogram.shape, voxel_size=field.voxel_size,
                          tilt_series_pixel_size=field.voxel_size)
    table = particle_table(field.zyx, rot=field.angles[:, 0], tilt=field.angles[:, 1],
                           psi=field.angles[:, 2], feature=list(field.species))
    return {
        "tomogram": write_volume(folder / f"{name}.mrc", field.tomogram, field.voxel_size,
                                 overwrite=overwrite),
        "particles": write_star(folder / f"{name}.star", table, frame, overwrite=overwrite),
        "reference": write_volume(folder / f"{name}_reference.mrc", field.reference(box),
                                  field.voxel_size, overwrite=True),
    }
