"""From a synthetic cell to a tomogram: tilt series, noise, optional CTF, WBP, files.

The missing wedge, its streaks and the noise texture are produced the way
a microscope and a reconstruction program produce them, so a network that
works here faces the same difficulties as on real data.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import tilt_series as ts
from ..errors import InvalidSettingsError
from ..io.atomic import write_text
from ..io.mrc import quantise_int8, write_volume
from ..io.particles import TomogramFrame, particle_table, write_star
from ..features import FEATURE_COLOURS, FEATURES
from .cell import CellSpec, SyntheticCell, generate_cell
from .ribosome import reference_density

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class ImagingSpec:
    """How the cell is imaged: tilt scheme, noise, and the CTF (defocus 0 = none)."""

    tilt_min: float = -60.0
    tilt_max: float = 60.0
    tilt_step: float = 3.0
    snr: float = 0.5  # per tilt image: variance of signal / variance of noise
    defocus_um: float = 0.0
    phase_flip: bool = True


@dataclass
class SyntheticTomogram:
    tomogram: np.ndarray  # (z, y, x) float32, zero mean unit variance, protein dark
    cell: SyntheticCell
    imaging: ImagingSpec = field(default_factory=ImagingSpec)


def simulate(spec: CellSpec = CellSpec(), imaging: ImagingSpec = ImagingSpec(), seed: int = 0,
             progress: Progress | None = None) -> SyntheticTomogram:
    """Generate a cell, image it as a tilt series and reconstruct it by WBP."""
    if imaging.snr <= 0:
        raise InvalidSettingsError("the signal-to-noise ratio must be positive.")
    report = progress or (lambda step, total, message: None)
    report(0, 4, "building the cell")
    cell = generate_cell(spec, seed)
    angles = ts.tilt_angles(imaging.tilt_min, imaging.tilt_max, imaging.tilt_step)
    report(1, 4, f"projecting {len(angles)} tilts")
    # electrons are scattered by density: protein appears dark in the image
    series = -ts.project(cell.density, angles)
    if imaging.defocus_um > 0:
        series = ts.apply_ctf(series, spec.voxel_size, imaging.defocus_um, phase_flip=False)
    rng = np.random.default_rng(seed + 1_000_003)
    noise_sigma = float(np.sqrt(series.var() / imaging.snr))
    series = series + rng.normal(0.0, noise_sigma, series.shape).astype(np.float32)
    if imaging.defocus_um > 0 and imaging.phase_flip:
        ctf = ts.ctf_2d(series.shape[-2:], spec.voxel_size, imaging.defocus_um)
        spectrum = np.fft.rfft2(series, axes=(-2, -1)) * np.sign(ctf)
        series = np.fft.irfft2(spectrum, s=series.shape[-2:], axes=(-2, -1)).astype(np.float32)
    report(2, 4, "weighted back-projection")
    tomogram = ts.weighted_backprojection(series, angles, spec.shape[0])
    tomogram = (tomogram - tomogram.mean()) / max(float(tomogram.std()), 1e-12)
    report(4, 4, "done")
    return SyntheticTomogram(tomogram=tomogram.astype(np.float32), cell=cell, imaging=imaging)


def write_synthetic(result: SyntheticTomogram, folder: str | os.PathLike, name: str = "synthetic",
                    origin: tuple[float, float, float] = (0.0, 0.0, 0.0),
                    overwrite: bool = False, reference_box: int | None = None,
                    compact: bool = False) -> dict[str, Path]:
    """Write tomogram, per-feature labels, particles (STAR) and a manifest.

    Files: ``{name}.mrc``, ``{name}_{feature}.mrc`` (uint8 0/1 as int8),
    ``{name}_ribosomes.star``, ``ribosome_reference.mrc`` (the true density,
    for checking averages) and ``{name}.json`` (every setting, for reproducing).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    spec = result.cell.spec
    voxel = spec.voxel_size
    box = reference_box or default_reference_box(voxel)
    reference = reference_density(box, voxel)
    if not overwrite:  # all or nothing: a new tomogram beside an older cell's labels
        check_synthetic_outputs(folder, name, voxel, compact, reference)
    written: dict[str, Path] = {}
    tomogram = quantise_int8(result.tomogram) if compact else result.tomogram
    written["tomogram"] = write_volume(folder / f"{name}.mrc", tomogram, voxel, origin,
                                       overwrite=overwrite)
    label_suffix = ".mrc.gz" if compact else ".mrc"
    for feature in FEATURES:
        written[feature] = write_volume(folder / f"{name}_{feature}{label_suffix}",
                                        result.cell.labels[feature].astype(np.int8), voxel, origin,
                                        overwrite=overwrite)
    frame = TomogramFrame(name=name, shape=spec.shape, voxel_size=voxel, origin=origin,
                          tilt_series_pixel_size=voxel)  # simulated unbinned
    cell = result.cell
    table = particle_table(cell.particles, rot=cell.angles[:, 0], tilt=cell.angles[:, 1],
                           psi=cell.angles[:, 2], feature=["ribosome"] * len(cell.particles))
    written["particles"] = write_star(folder / f"{name}_ribosomes.star", table, frame,
                                      overwrite=overwrite)
    written["reference"] = folder / REFERENCE_FILE
    if not _same_reference(written["reference"], reference, voxel):  # shared by the cells
        write_volume(written["reference"], reference, voxel, overwrite=True)  # of a folder
    manifest = {
        "name": name,
        "cell": asdict(spec),
        "imaging": asdict(result.imaging),
        "origin_zyx_angstrom": list(origin),
        "features": {f: {"file": written[f].name, "colour": FEATURE_COLOURS[f],
                         "voxels": int(cell.labels[f].sum())} for f in FEATURES},
        "n_ribosomes": int(len(cell.particles)),
        "files": {k: p.name for k, p in written.items()},
    }
    manifest_path = folder / f"{name}.json"
    write_text(manifest_path, json.dumps(manifest, indent=2))
    written["manifest"] = manifest_path
    return written


REFERENCE_FILE = "ribosome_reference.mrc"


def default_reference_box(voxel_size: float) -> int:
    """The reference's box: a 250 A ribosome with a margin (0.8 diameters a side, + 8)."""
    return int(2 * round(0.8 * 250 / voxel_size)) + 8


def synthetic_outputs(folder: str | os.PathLike, name: str, compact: bool = False) -> list[Path]:
    """The files ``write_synthetic`` writes for a cell called ``name`` (reference included)."""
    folder = Path(folder)
    labels = ".mrc.gz" if compact else ".mrc"
    return [folder / f"{name}.mrc", *(folder / f"{name}_{f}{labels}" for f in FEATURES),
            folder / f"{name}_ribosomes.star", folder / REFERENCE_FILE, folder / f"{name}.json"]


def check_synthetic_outputs(folder: str | os.PathLike, name: str, voxel_size: float,
                            compact: bool = False, reference: np.ndarray | None = None) -> None:
    """Refuse before any work when a cell's file exists; the shared reference only when it
    differs from the one of ``voxel_size`` (default box unless ``reference`` is given): a
    second cell of another voxel size replaced it under the first one's manifest."""
    if reference is None:
        reference = reference_density(default_reference_box(voxel_size), voxel_size)
    for path in synthetic_outputs(folder, name, compact):
        if path.name == REFERENCE_FILE and _same_reference(path, reference, voxel_size):
            continue
        if path.exists():
            raise FileExistsError(f"{path} exists; use --overwrite or another --name or folder.")


def _same_reference(path: Path, density: np.ndarray, voxel: float) -> bool:
    from ..io.mrc import open_volume

    if not path.is_file():
        return False
    try:
        data, info = open_volume(path, check_finite=False)
    except Exception:  # noqa: BLE001 - unreadable: not the same reference
        return False
    return (data.shape == density.shape and abs(info.isotropic_voxel_size - voxel) < 1e-3
            and np.allclose(data, density, atol=1e-5))
