"""The package as installed: manifest, console command, Qt-free core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CORE_MODULES = [
    "napari_tomoseg", "napari_tomoseg.cli", "napari_tomoseg.errors", "napari_tomoseg.io.mrc",
    "napari_tomoseg.io.particles", "napari_tomoseg.tilt_series", "napari_tomoseg.synthetic",
    "napari_tomoseg.layer_data", "napari_tomoseg.sample_files",
]


def test_core_never_imports_qt_or_napari():
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in CORE_MODULES)
        + "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('qtpy', 'PyQt5', 'PyQt6', 'PySide2', 'PySide6', 'napari', 'magicgui', 'superqt', 'vispy')]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_installed_manifest_is_the_top_level_file():
    from importlib.metadata import entry_points

    from npe2 import PluginManifest

    (entry,) = [e for e in entry_points(group="napari.manifest") if e.name == "napari-tomoseg"]
    module, filename = entry.value.split(":")
    from importlib.resources import files

    installed = files(module) / filename
    assert installed.read_bytes() == (ROOT / "napari.yaml").read_bytes()
    manifest = PluginManifest.from_distribution("napari-tomoseg")
    assert manifest.name == "napari-tomoseg"
    assert {s.key for s in manifest.contributions.sample_data} == {"synthetic_cell", "mpneumoniae"}


def test_npe2_validate_passes():
    npe2 = Path(sys.executable).parent / "npe2"
    out = subprocess.run([str(npe2), "validate", "napari-tomoseg"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "valid" in out.stdout


def test_console_command_is_installed():
    tomoseg = Path(sys.executable).parent / "tomoseg"
    out = subprocess.run([str(tomoseg), "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("napari-tomoseg ")


@pytest.mark.parametrize("name", ["synthetic/synthetic_cell.mrc", "mpneumoniae_20A.mrc"])
def test_shipped_samples_are_compact_and_valid(name):
    from napari_tomoseg.io.mrc import open_volume
    from napari_tomoseg.sample_files import sample_path

    path = sample_path(name)
    assert path.stat().st_size < 15e6
    data, info = open_volume(path)
    assert data.ndim == 3 and min(info.shape) >= 64


def test_mycoplasma_sample_has_cellular_contrast():
    """A cell, not noise: the slab-averaged tomogram varies on the scale of membranes and
    ribosomes far more than white noise would (a weak, cheap proxy for 'visible')."""
    import numpy as np
    from scipy import ndimage

    from napari_tomoseg.io.mrc import open_volume
    from napari_tomoseg.sample_files import MYCOPLASMA, sample_path

    data, info = open_volume(sample_path(MYCOPLASMA))
    assert info.voxel_size == (20.0, 20.0, 20.0)
    slab = np.asarray(data[56:72], dtype=np.float32).mean(axis=0)
    smooth = ndimage.gaussian_filter(slab, 4.0)
    shuffled = np.random.default_rng(0).permutation(slab.ravel()).reshape(slab.shape)
    assert smooth.std() > 3 * ndimage.gaussian_filter(shuffled, 4.0).std()


def test_annotation_session_does_not_import_the_simulator():
    """The session names features through ``features.py``; it must not pull in torch."""
    code = ("import sys, napari_tomoseg.session\n"
            "print(','.join(m for m in ('torch', 'napari_tomoseg.synthetic') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
