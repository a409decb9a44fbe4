"""The package as installed: manifest, console command, Qt-free core, small files."""

from __future__ import annotations

import ast
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


MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60


def _long_functions(tree: ast.AST, prefix: str = "") -> list[tuple[str, int]]:
    """(qualified name, lines from ``def`` to its last line) for every function over the limit."""
    found = []
    for node in ast.iter_child_nodes(tree):
        name = prefix
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}."
            lines = node.end_lineno - node.lineno + 1
            if not isinstance(node, ast.ClassDef) and lines > MAX_FUNCTION_LINES:
                found.append((name[:-1], lines))
        found += _long_functions(node, name)
    return found


def test_files_and_functions_stay_small():
    """No file in src/ over 400 lines and no function over 60, so each stays single-purpose."""
    files = sorted((ROOT / "src").rglob("*.py"))
    assert len(files) > 40
    long_files, long_functions = [], []
    for path in files:
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT).as_posix()
        if len(text.splitlines()) > MAX_FILE_LINES:
            long_files.append(f"{where} ({len(text.splitlines())} lines)")
        long_functions += [f"{where}:{name} ({lines} lines)"
                           for name, lines in _long_functions(ast.parse(text, filename=where))]
    assert not long_files, f"files over {MAX_FILE_LINES} lines: " + ", ".join(long_files)
    assert not long_functions, (f"functions over {MAX_FUNCTION_LINES} lines: "
                                + ", ".join(long_functions))


def test_the_size_check_names_offenders():
    """The walker finds a long method inside a class and a long function nested in another."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    code = f"class A:\n  def big(self):\n{body}\n\ndef outer():\n  def inner():\n{body}\n  return 1\n"
    found = dict(_long_functions(ast.parse(code)))
    assert found["A.big"] == MAX_FUNCTION_LINES + 1
    assert found["outer.inner"] == MAX_FUNCTION_LINES + 1
    assert found["outer"] == MAX_FUNCTION_LINES + 3
    assert "A" not in found
