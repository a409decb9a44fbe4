"""Shared fixtures: tiny synthetic cells, written once per session."""

from __future__ import annotations

import pytest

from napari_tomoseg.synthetic import CellSpec, ImagingSpec, simulate, write_synthetic

TINY = CellSpec(shape=(32, 96, 96), voxel_size=20.0, n_vesicles=2, n_microtubules=1, n_actin=2,
                ribosome_density_per_um3=20000.0)


@pytest.fixture(scope="session")
def tiny_result():
    return simulate(TINY, ImagingSpec(tilt_step=6.0), seed=3)


@pytest.fixture(scope="session")
def tiny_files(tmp_path_factory, tiny_result):
    folder = tmp_path_factory.mktemp("tiny")
    return write_synthetic(tiny_result, folder, name="tiny", origin=(-150.0, 320.0, 1200.0))
