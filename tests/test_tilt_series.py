"""Projection and weighted back-projection: adjoint, geometrically right, aligned like IMOD."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tomoseg import tilt_series as ts


def test_backprojection_matches_the_adjoint_of_projection_on_smooth_data():
    """Ray-driven projection and voxel-driven back-projection interpolate along
    different axes, so they are adjoint up to interpolation error: tiny for
    band-limited data such as a tomogram."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(0)
    volume = gaussian_filter(rng.normal(size=(24, 5, 40)), (2, 0, 2)).astype(np.float32)
    angles = ts.tilt_angles(-60, 60, 15)
    series = gaussian_filter(rng.normal(size=(len(angles), 5, 40)), (0, 0, 2)).astype(np.float32)
    lhs = float(np.sum(ts.project(volume, angles) * series))
    # the 1/cos path length per plane cancels against the Jacobian of x -> u
    rhs = float(np.sum(volume * ts.backproject(series, angles, 24)))
    assert lhs == pytest.approx(rhs, rel=0.03)


def test_projection_of_a_slab_grows_with_path_length():
    volume = np.zeros((10, 4, 64), np.float32)
    volume[:, :, :] = 1.0
    series = ts.project(volume, np.array([0.0, 60.0]))
    assert series[0, 0, 32] == pytest.approx(10.0, rel=1e-4)
    assert series[1, 0, 32] == pytest.approx(20.0, rel=1e-3)


def test_wbp_puts_a_point_back_where_it_was():
    volume = np.zeros((24, 3, 48), np.float32)
    volume[7, 1, 30] = 1.0  # off-centre in z and x
    angles = ts.tilt_angles(-60, 60, 2)
    recon = ts.weighted_backprojection(ts.project(volume, angles), angles, 24)
    assert np.unravel_index(np.argmax(recon), recon.shape) == (7, 1, 30)
    # the missing wedge elongates the point along z more than along x
    assert recon[8, 1, 30] > recon[7, 1, 31]


def test_tilt_angles_and_bad_ranges():
    np.testing.assert_allclose(ts.tilt_angles(), np.arange(-60, 61, 3))
    with pytest.raises(ValueError):
        ts.tilt_angles(10, -10, 3)


def test_imod_transform_shifts_and_rotates_about_the_centre():
    image = np.zeros((31, 41), np.float32)
    image[15, 25] = 1.0  # 5 pixels right of the centre
    shift = np.array([[1.0, 0.0, -3.0], [0.0, 1.0, 2.0]])
    moved = ts.apply_imod_xf(image, shift)
    assert np.unravel_index(np.argmax(moved), moved.shape) == (17, 22)
    rotate90 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])  # x' = -y, y' = x
    turned = ts.apply_imod_xf(image, rotate90)
    assert np.unravel_index(np.argmax(turned), turned.shape) == (20, 20)


def test_read_imod_xf(tmp_path):
    path = tmp_path / "a.xf"
    path.write_text("1 0 0 1 2.5 -1\n0.5 0.1 -0.1 0.5 0 3\n")
    xf = ts.read_imod_xf(path)
    assert xf.shape == (2, 2, 3)
    np.testing.assert_allclose(xf[1], [[0.5, 0.1, 0.0], [-0.1, 0.5, 3.0]])


def test_ctf_has_zeros_and_phase_flip_makes_it_positive():
    ctf = ts.ctf_2d((128, 128), pixel_size=5.0, defocus_um=3.0)
    assert ctf.min() < -0.9 and ctf.max() > 0.9
    series = np.random.default_rng(1).normal(size=(1, 64, 64)).astype(np.float32)
    flipped = ts.apply_ctf(series, 5.0, 3.0, phase_flip=True)
    spectrum_ratio = np.fft.rfft2(flipped[0]) / np.fft.rfft2(series[0])
    assert np.all(spectrum_ratio.real > -1e-4)
