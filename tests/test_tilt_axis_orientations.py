"""Orientations that keep the tilt axis: the missing wedge stays as the tomogram holds it.

A tilt series about y leaves a slice sharper along y than along x; a tile turned by 90
degrees shows the opposite, an anisotropy no tomogram of that series has. With
``symmetry="wedge"`` training turns tiles only by flips, 180 degrees and small angles,
and predictions average the flips that keep the axis.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_tomoseg.annotations import Box, crop_slice
from napari_tomoseg.errors import InvalidSettingsError
from napari_tomoseg.nn.inference import predict_planes
from napari_tomoseg.nn.model_file import TrainedModel, load_model, save_model
from napari_tomoseg.nn.models import build_model, default_parameters
from napari_tomoseg.nn.tiles import TileBank
from napari_tomoseg.preprocess import PreprocessSettings, Preprocessor

PLAIN = PreprocessSettings(lowpass_sigma=0.0, highpass_pixels=0.0)


def _angle_from_y(label: np.ndarray) -> float:
    """Degrees between the principal axis of a label's pixels and y."""
    yy, xx = np.nonzero(label > 0.5)
    cov = np.cov(np.stack([yy, xx]).astype(float))
    _, vectors = np.linalg.eigh(cov)
    dy, dx = vectors[:, -1]
    return float(np.degrees(np.arctan2(abs(dx), abs(dy))))


@pytest.mark.parametrize("wedge", [True, False])
def test_wedge_augmentation_keeps_a_line_along_the_tilt_axis(wedge):
    truth = np.zeros((4, 96, 96), np.float32)
    truth[:, :, 46:50] = 1  # a line along y, the tilt axis
    box = Box("membrane", 2, 48, 48, 32, True)
    box.mask = (crop_slice(truth[2], box.corner(), 32) > 0).astype(np.uint8)
    bank = TileBank(Preprocessor(truth, PLAIN), [box], context=0)
    _, labels, _ = bank.batch(np.random.default_rng(0), 64, augment=True, wedge=wedge)
    angles = [_angle_from_y(label[0].numpy()) for label in labels]
    if wedge:  # flips and 180 degrees keep it along y; the jitter is at most 10 degrees
        assert max(angles) < 11
    else:
        assert max(angles) > 45


@pytest.mark.parametrize("symmetry", ["wedge", "any"])
def test_predictions_average_exactly_their_orientations(symmetry):
    """The averaged prediction of a (random, so unsymmetric) network commutes with each
    orientation averaged, and a wedge network's not with a quarter turn."""
    torch.manual_seed(0)
    network = build_model("unet", {"context": 0, "base": 4, "levels": 2, "rotations": 4,
                                   "symmetry": symmetry}).eval()
    planes = np.random.default_rng(1).normal(size=(1, 1, 32, 32)).astype(np.float32)

    def predict(p: np.ndarray) -> np.ndarray:
        return predict_planes(network, np.ascontiguousarray(p), tile=None)[0]

    prob = predict(planes)
    flipped_x = predict(planes[..., ::-1])[..., ::-1]
    flipped_y = predict(planes[..., ::-1, :])[::-1, :]
    turned = np.rot90(predict(np.rot90(planes, 1, axes=(-2, -1))), -1)
    if symmetry == "wedge":
        np.testing.assert_allclose(flipped_x, prob, atol=1e-5)
        np.testing.assert_allclose(flipped_y, prob, atol=1e-5)
        assert np.abs(turned - prob).max() > 1e-3
    else:
        np.testing.assert_allclose(turned, prob, atol=1e-5)


def test_model_files_keep_their_orientations(tmp_path):
    """A new model records its orientations; one from before them was trained on tiles
    turned every way and must be averaged that way, whatever today's default."""
    for feature, symmetry in (("ribosome", "wedge"), ("ribosomes", "wedge"), ("membrane", "any"),
                              (None, "any")):
        assert default_parameters("unet", feature)["symmetry"] == symmetry, feature
    assert default_parameters("unet", "ribosome", {"symmetry": "any"})["symmetry"] == "any"
    for symmetry, recorded in (("wedge", True), ("any", True), ("any", False)):
        parameters = {"context": 0, "base": 4, "levels": 2}
        if recorded:
            parameters["symmetry"] = symmetry
        model = TrainedModel(network=build_model("unet", {**parameters, "symmetry": symmetry}),
                             architecture="unet", parameters=parameters,
                             preprocess=PreprocessSettings(), voxel_size=10.0, box_size=32)
        save_model(model, tmp_path / "m.pt")
        assert load_model(tmp_path / "m.pt").network.symmetry == symmetry
    with pytest.raises(InvalidSettingsError, match="symmetry must be one of"):
        build_model("unet", {"symmetry": "tilted"})
