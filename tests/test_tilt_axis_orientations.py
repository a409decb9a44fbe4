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
    bank = TileBank(Preprocessor(truth, PLAIN), [box], context=0,
                    symmetry="wedge" if wedge else "any")
    _, labels, _ = bank.batch(np.random.default_rng(0), 64, augment=True)
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
    for feature in ("ribosome", "membrane", None):  # measured no better (docs/engine.md)
        assert default_parameters("unet", feature)["symmetry"] == "any", feature
    for feature in ("microtubule", "Microtubules"):  # reuse on crossing filaments
        assert default_parameters("unet", feature)["symmetry"] == "rewedge", feature
    assert default_parameters("unet", "microtubule", {"symmetry": "any"})["symmetry"] == "any"
    assert default_parameters("eman2", "microtubule")["symmetry"] == "any"
    assert default_parameters("unet", "membrane", {"symmetry": "wedge"})["symmetry"] == "wedge"
    assert default_parameters("unet", "membrane", {"symmetry": "wedge"})["stem3d"] == 16
    for symmetry, recorded in (("wedge", True), ("any", True), ("any", False)):
        parameters = {"context": 0, "base": 4, "levels": 2}
        if recorded:
            parameters["symmetry"] = symmetry
        model = TrainedModel(network=build_model("unet", {**parameters, "symmetry": symmetry,
                                                          "edge": "zeros"}),
                             architecture="unet", parameters=parameters,
                             preprocess=PreprocessSettings(), voxel_size=10.0, box_size=32)
        save_model(model, tmp_path / "m.pt")
        assert load_model(tmp_path / "m.pt").network.symmetry == symmetry
        # "any" is left out, so versions from before orientations read the file
        assert model.metadata()["format_version"] == (4 if symmetry == "wedge" else 3)
        assert ("symmetry" in model.metadata()["parameters"]) == (symmetry == "wedge")
    with pytest.raises(InvalidSettingsError, match="symmetry must be one of"):
        build_model("unet", {"symmetry": "tilted"})


@pytest.mark.parametrize("degrees, imaged", [(0, False), (20, False), (45, True), (90, True)])
def test_a_reimposed_wedge_removes_the_planes_a_tilt_series_does_not_record(degrees, imaged):
    """A tilt series about y to +-60 degrees records a plane only when its normal, in the
    x-z plane, lies more than 30 degrees from z (docs/engine.md, 'What the tilt series
    holds'); a turned tile gets the same treatment."""
    from napari_tomoseg.nn.tiles import reimpose_wedge

    z, _, x = np.mgrid[-16:17, 0:8, -32:32].astype(np.float32)
    normal = np.radians(degrees)
    distance = z * np.cos(normal) + x * np.sin(normal)
    plane = torch.from_numpy(np.exp(-distance ** 2 / 2.0))[None]  # a 2-voxel sheet
    kept = reimpose_wedge(plane)
    centre = (slice(None), slice(12, 21), slice(None), slice(24, 40))  # away from the edges
    ratio = float((kept[centre] * plane[centre]).sum() / (plane[centre] ** 2).sum())
    assert (ratio > 0.9) if imaged else (ratio < 0.2), ratio


def test_a_rewedge_network_trains_on_turned_slabs_with_the_wedge_imposed_again(tmp_path):
    """Slabs of +-8 slices are cut, turned and given the wedge; the network still sees its
    own 2k+1 slices, and held-out scoring uses the unturned tiles."""
    from napari_tomoseg.nn.tiles import reimpose_wedge

    truth = np.zeros((24, 96, 96), np.float32)
    truth[:, :, 46:50] = 1  # a wall along y: its normal (x) lies outside the wedge
    box = Box("membrane", 12, 48, 48, 32, True)
    box.mask = (crop_slice(truth[12], box.corner(), 32) > 0).astype(np.uint8)
    bank = TileBank(Preprocessor(truth, PLAIN), [box], context=2, symmetry="rewedge")
    assert bank.slabs.shape[1] == 17 and bank.images.shape[1] == 5
    assert torch.equal(bank.images, bank.slabs[:, 6:11])
    images, labels, _ = bank.batch(np.random.default_rng(0), 16, augment=True)
    assert images.shape[1] == 5 and images.shape[-1] == labels.shape[-1] == 32
    # a wall through every slice keeps its normal in the x-y plane whatever the in-plane
    # turn, and such a wall is what a tilt series records (k_z = 0): its contrast survives
    contrast = [float(img[2][lab[0] > 0.5].mean() - img[2][lab[0] < 0.5].mean())
                for img, lab in zip(images, labels)]
    assert min(contrast) > 0.5 * max(contrast)
    assert torch.allclose(reimpose_wedge(bank.slabs), bank.slabs, atol=0.05)
