"""Shared fixtures: tiny synthetic cells, written once per session."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_tomoseg.synthetic import CellSpec, ImagingSpec, simulate, write_synthetic

TINY = CellSpec(shape=(32, 96, 96), voxel_size=20.0, n_vesicles=2, n_microtubules=1, n_actin=2,
                ribosome_density_per_um3=20000.0)


def pytest_configure(config):
    """Under pytest-xdist each worker gets one torch thread: two workers with two threads each
    on two cores slow each other many times over."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def one_network_per_feature():
    """Tests train one network for every feature, ribosomes too: three would triple the
    suite's training. Session-wide, so fixtures of any scope train one too; tests of the
    ensemble default ask for it (mark ``feature_members``, below)."""
    from napari_tomoseg.nn import models

    product = models.FEATURE_ENSEMBLES
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(models, "FEATURE_ENSEMBLES", {})
        yield product


@pytest.fixture(autouse=True)
def _feature_members_when_marked(request, monkeypatch, one_network_per_feature):
    if request.node.get_closest_marker("feature_members") is not None:
        from napari_tomoseg.nn import models

        monkeypatch.setattr(models, "FEATURE_ENSEMBLES", one_network_per_feature)


@pytest.fixture(scope="session")
def tiny_result():
    return simulate(TINY, ImagingSpec(tilt_step=6.0), seed=3)


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory, tiny_result):
    folder = tmp_path_factory.mktemp("tiny")
    return write_synthetic(tiny_result, folder, name="tiny", origin=(-150.0, 320.0, 1200.0))


def _blobs(shape, centres, radius, rng=None) -> np.ndarray:
    """A probability map of Gaussian blobs at known centres (plus noise with ``rng``)."""
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    prob = np.zeros(shape, np.float32)
    for c in centres:
        d2 = (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2
        prob = np.maximum(prob, np.exp(-d2 / (2 * (radius / 1.5) ** 2)))
    if rng is not None:
        prob = np.clip(prob + rng.normal(0, 0.05, shape), 0, 1).astype(np.float32)
    return prob


@pytest.fixture
def blobs():
    """``_blobs``, for the picking tests of the core and of the widget."""
    return _blobs


def _write_version1_box_folder(folder, boxes):
    """A box folder as versions before 2 wrote it: boxes.json + masks.npz, two files."""
    import json
    from pathlib import Path

    from napari_tomoseg.annotations import box_record

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(folder / "masks.npz", **{
        b.id: np.asarray(b.mask, np.uint8) for b in boxes if b.mask is not None})
    (folder / "boxes.json").write_text(json.dumps(
        {"version": 1, "boxes": [box_record(b) for b in boxes]}, indent=1))
    return folder


@pytest.fixture
def version1_box_folder():
    """``_write_version1_box_folder``: the two-file layout that must still be read."""
    return _write_version1_box_folder


def _run_killed_at(kill_at: int, action) -> int:
    """Run ``action`` in a forked child that SIGKILLs itself right before its ``kill_at``-th
    file operation (os.open/fsync/replace/rename/unlink); returns the child's wait status
    (0: the action finished before the k-th operation)."""
    import os
    import signal

    pid = os.fork()
    if pid:
        return os.waitpid(pid, 0)[1]
    try:
        calls = [0]

        def counted(original):
            def call(*args, **kwargs):
                calls[0] += 1
                if calls[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                return original(*args, **kwargs)
            return call

        for name in ("open", "fsync", "replace", "rename", "unlink"):
            setattr(os, name, counted(getattr(os, name)))
        action()
    finally:
        os._exit(0)


@pytest.fixture
def run_killed_at():
    """Kill a save between any two of its file operations (crash-consistency tests)."""
    return _run_killed_at


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for a test (tiny averages), given back afterwards: a setting left
    behind would slow every later test of the session."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
