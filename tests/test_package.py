"""The package as installed: manifest, console command, Qt-free core."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]



def core_modules() -> list[str]:
    """Every module of the package outside ``_napari``, found on disk, not listed by hand.

    Walked with ``iter_modules`` (which imports nothing), so the Qt face is never imported here.
    """
    import pkgutil

    import napari_tomoseg

    found, todo = ["napari_tomoseg"], [(napari_tomoseg.__path__, "napari_tomoseg.")]
    while todo:
        path, prefix = todo.pop()
        for module in pkgutil.iter_modules(path, prefix):
            if module.name.rsplit(".", 1)[-1] == "_napari":
                continue
            found.append(module.name)
            if module.ispkg:
                folder = Path(module.module_finder.path) / module.name.rsplit(".", 1)[-1]
                todo.append(([str(folder)], module.name + "."))
    return sorted(found)


def test_core_never_imports_qt_or_napari():
    modules = core_modules()
    # the discovery itself: deep modules and subpackages are found, the Qt face is not
    assert {"napari_tomoseg.cli", "napari_tomoseg.session", "napari_tomoseg.nn.training",
            "napari_tomoseg.averaging.refine", "napari_tomoseg.io.copick_project"} <= set(modules)
    assert len(modules) > 40 and not any("_napari" in m for m in modules)
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
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
            "heavy = ('torch', 'napari_tomoseg.synthetic')\n"
            "print(','.join(m for m in heavy if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
