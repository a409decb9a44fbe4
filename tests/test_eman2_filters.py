"""EMAN2 filter formulas, checked at hand-computed values.

Expected values follow cryoem/eman2 libEM/sparx/fourierfilter.cpp (Processor::EMFourierFilterFunc,
GAUSS_LOW_PASS / GAUSS_HIGH_PASS: exp(-f^2*omega), omega = 0.5/sigma^2) with sigma set by
NewFourierProcessor::preprocessandconvertpars (libEM/sparx/processor_sparx.h):
sigma = cutoff_abs/sqrt(2), and cutoff_abs = 0.5*cutoff_pixels/nx. Net: exp(-f^2/c^2).
"""

import numpy as np
import pytest

from napari_tomoseg.eman2_filters import (
    clampminmax_nsigma, cutoff_abs_from_freq, cutoff_abs_from_pixels, eman2_preprocess_volume,
    gauss_bandpass_3d, highpass_gauss, lowpass_gauss, rfft_frequency,
)


def test_lowpass_gauss_values():
    # exp(-(f/0.25)^2): f=0.1 -> exp(-0.16), f=0.25 -> exp(-1), f=0.5 -> exp(-4)
    got = lowpass_gauss(np.array([0.0, 0.1, 0.25, 0.5]), 0.25)
    assert got == pytest.approx([1.0, 0.8521437890, 0.3678794412, 0.0183156389], abs=1e-9)


def test_highpass_gauss_values_on_nx():
    # cutoff_pixels=5, nx=512 -> c = 2.5/512; at k Fourier pixels along x: 1 - exp(-(k/2.5)^2)
    assert cutoff_abs_from_pixels(5, 512) == pytest.approx(0.0048828125)
    f = np.array([0.0, 1.0, 2.5, 5.0]) / 512
    want = [0.0, 0.1478562110, 0.6321205588, 0.9816843611]
    assert highpass_gauss(f, 5, 512) == pytest.approx(want, abs=1e-9)
    assert highpass_gauss(f, cutoff_abs=2.5 / 512) == pytest.approx(want, abs=1e-9)
    with pytest.raises(ValueError):
        highpass_gauss(f, 5)


def test_cutoff_freq_uses_apix():
    assert cutoff_abs_from_freq(0.05, 10.0) == pytest.approx(0.5)  # 20 A at 10 A/px = Nyquist


def test_rfft_frequency_each_axis_in_its_own_pixels():
    f = rfft_frequency((4, 6, 8))
    assert f.shape == (4, 6, 5)
    want = np.sqrt((1 / 4) ** 2 + (2 / 6) ** 2 + (3 / 8) ** 2)
    assert f[1, 2, 3] == pytest.approx(want, rel=1e-6)
    assert f[3, 0, 0] == pytest.approx(0.25)  # index 3 of 4 wraps to -1/4
    assert f[2, 3, 4] == pytest.approx(np.sqrt(3 * 0.25), rel=1e-6)  # Nyquist on all three axes


def test_filtered_delta_spectrum_is_the_3d_lowpass():
    delta = np.zeros((16, 32, 32), np.float32)
    delta[0, 0, 0] = 1.0
    out = gauss_bandpass_3d(delta, lowpass_cutoff_abs=0.25, highpass_cutoff_pixels=None)
    spec = np.fft.rfftn(out.astype(np.float64))
    # f^2 = (2/16)^2 + (4/32)^2 + (8/32)^2 = 0.09375 -> exp(-0.09375/0.0625) = exp(-1.5)
    assert spec[2, 4, 8].real == pytest.approx(0.2231301601, abs=1e-6)
    assert spec[0, 0, 0].real == pytest.approx(1.0, abs=1e-6)
    assert out.dtype == np.float32


def _amplitude(out: np.ndarray, wave: np.ndarray) -> float:
    return float(2 * np.mean(out * wave) / np.mean(2 * wave * wave))


def test_oblique_sinusoid_lowpass_amplitude():
    z, y, x = np.meshgrid(np.arange(32), np.arange(64), np.arange(64), indexing="ij")
    wave = np.cos(2 * np.pi * (8 * x / 64 + 4 * z / 32)).astype(np.float32)
    out = gauss_bandpass_3d(wave, 0.25, None)
    # f^2 = (8/64)^2 + (4/32)^2 = 0.03125 -> exp(-0.5)
    assert _amplitude(out, wave) == pytest.approx(0.6065306597, abs=1e-5)


def test_highpass_acts_along_z_too():
    # A wave along z only is constant in every xy slice: a slice-by-slice 2D high-pass removes
    # it, EMAN2's 3D one keeps it. nz=32, nx=64, kz=2: f = 1/16, c_hp = 2.5/64.
    z = np.arange(32, dtype=np.float32)[:, None, None]
    wave = np.broadcast_to(np.cos(2 * np.pi * 2 * z / 32), (32, 48, 64)).astype(np.float32)
    out = gauss_bandpass_3d(wave, 0.25, 5.0)
    # lowpass exp(-0.0625) = 0.9394131 times highpass 1 - exp(-2.56) = 0.9226953
    assert _amplitude(out, wave) == pytest.approx(0.8667919798, abs=1e-5)


def test_highpass_removes_the_mean():
    vol = np.full((8, 16, 16), 5.0, np.float32)
    assert np.abs(gauss_bandpass_3d(vol, None, 5.0)).max() < 1e-5


def _heavy_tailed(shape=(24, 48, 40)) -> np.ndarray:
    rng = np.random.default_rng(12)
    return (rng.standard_t(3, size=shape) * 7 + 40).astype(np.float32)


def test_chain_normalises_then_clamps_at_3_sigma():
    vol = _heavy_tailed()
    free = eman2_preprocess_volume(vol, nsigma=None)
    assert abs(float(free.mean())) < 1e-5
    assert float(free.std()) == pytest.approx(1.0, abs=1e-5)
    assert free.max() > 3.5 and free.min() < -3.5  # the clamp has something to do
    out = eman2_preprocess_volume(vol)
    assert out.dtype == np.float32 and out.shape == vol.shape
    assert out.max() == pytest.approx(3.0, abs=1e-4)
    assert out.min() == pytest.approx(-3.0, abs=1e-4)
    np.testing.assert_allclose(out, np.clip(free, -3, 3), atol=1e-4)
    assert 0.001 < float(np.mean(np.abs(out) >= 3.0 - 1e-4)) < 0.05


def test_invert_flips_the_whole_chain():
    vol = _heavy_tailed((12, 32, 24))
    np.testing.assert_allclose(eman2_preprocess_volume(vol, invert=True),
                               -eman2_preprocess_volume(vol), atol=1e-5)


def test_clamp_without_normalize_uses_the_volume_statistics():
    vol = _heavy_tailed((12, 32, 24))
    filtered = gauss_bandpass_3d(vol)
    out = eman2_preprocess_volume(vol, normalize_volume=False)
    top = float(filtered.mean()) + 3 * float(filtered.std())
    assert float(out.max()) == pytest.approx(top, rel=1e-4)
    np.testing.assert_allclose(clampminmax_nsigma(filtered, 3.0), out, atol=1e-5)
