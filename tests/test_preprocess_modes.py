"""The two preprocessing modes, the default binning, and what old model files mean."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tomoseg.eman2_filters import eman2_preprocess_volume
from napari_tomoseg.errors import InvalidSettingsError
from napari_tomoseg.preprocess import PreprocessSettings, Preprocessor, default_preprocessing


def test_eman2_mode_is_the_eman2_chain_on_the_whole_volume():
    volume = np.random.default_rng(0).normal(size=(16, 48, 40)).astype(np.float32)
    pre = Preprocessor(volume, PreprocessSettings(mode="eman2"))
    expected = eman2_preprocess_volume(volume) / 3.0
    np.testing.assert_allclose(pre.slab(3, 9), expected[3:9], atol=1e-5)
    assert np.all(pre.slab(-2, 0) == 0)  # beyond the volume: zeros, as in slices mode
    # a wave along z survives EMAN2's 3D filter but not the per-slice one
    z = np.arange(32)[:, None, None]
    wave = np.broadcast_to(np.cos(2 * np.pi * 3 * z / 32), (32, 32, 32)).astype(np.float32)
    wave = wave + 0.01 * np.random.default_rng(1).normal(size=wave.shape).astype(np.float32)
    eman2 = Preprocessor(wave, PreprocessSettings(mode="eman2")).whole()
    slices = Preprocessor(wave, PreprocessSettings()).whole()
    assert np.corrcoef(eman2.ravel(), wave.ravel())[0, 1] > 0.9
    assert abs(np.corrcoef(slices.ravel(), wave.ravel())[0, 1]) < 0.2


def test_default_preprocessing_bins_towards_20_angstrom():
    assert default_preprocessing(10.0).binning == 2
    assert default_preprocessing(5.0).binning == 2  # a 64 px box keeps 32 px tiles
    assert default_preprocessing(5.0, box_size=128).binning == 4
    assert default_preprocessing(14.0).binning == 1
    assert default_preprocessing(28.0).binning == 1
    assert default_preprocessing(10.0, architecture="eman2").mode == "eman2"
    assert default_preprocessing(10.0).mode == "slices"
    with pytest.raises(InvalidSettingsError):
        PreprocessSettings(mode="imod")


def test_a_membrane_u_net_works_near_10_angstrom():
    """A bilayer binned to 20 A is 2 voxels wide: U-Nets for membranes work at 10 A (by the
    name's last word, as the 3D stem is chosen); other features and the eman2 net do not."""
    assert default_preprocessing(10.0, feature="membrane").binning == 1
    assert default_preprocessing(10.0, feature="Plasma membranes").binning == 1
    assert default_preprocessing(5.0, box_size=128, feature="membrane").binning == 2
    assert default_preprocessing(10.0, feature="membrane-bound vesicle").binning == 2
    assert default_preprocessing(10.0, feature="ribosome").binning == 2
    assert default_preprocessing(10.0, architecture="eman2", feature="membrane").binning == 2


def test_an_old_model_file_keeps_slices_mode_and_threshold_half(tmp_path):
    import json

    import torch

    from napari_tomoseg.nn.model_file import load_model, save_model
    from napari_tomoseg.nn.models import build_model
    from napari_tomoseg.nn.model_file import TrainedModel

    model = TrainedModel(build_model("unet", {"base": 4, "levels": 1, "context": 0}), "unet",
                         {"base": 4, "levels": 1, "context": 0}, PreprocessSettings(), 10.0, 32,
                         threshold=0.73)
    path = save_model(model, tmp_path / "m.pt")
    assert load_model(path).threshold == pytest.approx(0.73)
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["metadata"])
    del meta["threshold"], meta["preprocess"]["mode"]  # as written before these fields
    payload["metadata"] = json.dumps(meta)
    torch.save(payload, tmp_path / "old.pt")
    old = load_model(tmp_path / "old.pt")
    assert old.threshold == 0.5 and old.preprocess.mode == "slices"


def test_a_model_sees_planes_at_its_own_voxel_size():
    """A 40 A tomogram through a 20 A model is upsampled 2x before the network, not shrunk."""
    import torch

    from napari_tomoseg.nn.inference import segment
    from napari_tomoseg.nn.model_file import TrainedModel

    class Recorder(torch.nn.Module):
        output_stride = 1
        context = 0

        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.shapes = []

        def forward(self, x):
            self.shapes.append(tuple(x.shape[-2:]))
            return x[:, :1] * 0 + self.weight

        @staticmethod
        def probability(output):
            return output.clamp(0, 1)

    net = Recorder()
    model = TrainedModel(net, "unet", {}, PreprocessSettings(), voxel_size=20.0, box_size=32)
    volume = np.random.default_rng(0).normal(size=(4, 40, 48)).astype(np.float32)
    prob = segment(volume, model, 40.0)
    assert net.shapes[0] == (80, 96) and prob.shape == volume.shape


def test_binned_maps_return_to_the_full_grid_without_stretching():
    from napari_tomoseg.preprocess import bin_slab, unbin_slices

    x = np.arange(101, dtype=np.float32)
    ramp = np.broadcast_to(x, (2, 51, 101)).copy()
    back = unbin_slices(bin_slab(ramp, 2), 2, 51, 101)
    assert back.shape == (2, 51, 101)
    # binned pixel i holds the mean of x = 2i, 2i+1; bilinear back lands on x to 0.5 px
    assert np.abs(back[0, 10, 1:100] - x[1:100]).max() <= 0.5
