"""A plane's sides: a network whose ``edge`` is "mirror" sees mirrored image there.

Ribosomes within 15 px of a tomogram's side lost most of their probability to the
convolutions' zeros and were every miss of the realistic benchmark's picks
(``inference.EDGE_MIRROR``); microtubule networks drew the mirror's seam as a filament,
so they keep the zeros, as do model files from before.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from napari_tomoseg.errors import InvalidModelError
from napari_tomoseg.nn.inference import predict_planes
from napari_tomoseg.nn.model_file import TrainedModel, load_model, save_model
from napari_tomoseg.nn.models import build_model, default_parameters
from napari_tomoseg.preprocess import PreprocessSettings

CPU = torch.device("cpu")


class BoxMean(nn.Module):
    """A network of known answer: the 9 x 9 mean, zero-padded as every convolution is,
    at full resolution or (as the eman2 network) on a grid of stride 2."""

    context = 0

    def __init__(self, stride: int = 1, edge: str = "mirror"):
        super().__init__()
        self.output_stride, self.edge = stride, edge
        self.conv = nn.Conv2d(1, 1, 9, padding=4, bias=False)
        nn.init.constant_(self.conv.weight, 1 / 81)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return F.avg_pool2d(y, self.output_stride) if self.output_stride > 1 else y

    def probability(self, output: torch.Tensor) -> torch.Tensor:
        return output


@pytest.mark.parametrize("stride", [1, 2])
def test_a_uniform_plane_stays_uniform_up_to_its_sides(stride):
    network = BoxMean(stride).eval()
    planes = np.full((2, 1, 40, 52), 0.6, np.float32)
    mirrored = predict_planes(network, planes, CPU)
    zeros = predict_planes(network, planes, CPU, mirror=False)
    assert mirrored.shape == zeros.shape == (2, 40, 52)
    np.testing.assert_allclose(mirrored, 0.6, atol=1e-5)
    assert zeros[0, 0, 0] < 0.6 * 0.5  # the zeros a corner saw without the mirror
    np.testing.assert_allclose(predict_planes(BoxMean(stride, "zeros").eval(), planes, CPU),
                               zeros, atol=1e-6)  # a network that keeps the zeros


@pytest.mark.parametrize("stride", [1, 2])
def test_the_mirror_moves_nothing_away_from_the_sides(stride):
    """A spot in the middle comes out where it was: the mirrored border is cut off again
    in whole output pixels (a crop one output pixel off would move it by ``stride``)."""
    network = BoxMean(stride).eval()
    planes = np.zeros((1, 1, 40, 52), np.float32)
    planes[0, 0, 20, 25] = 81.0
    mirrored = predict_planes(network, planes, CPU)
    zeros = predict_planes(network, planes, CPU, mirror=False)
    np.testing.assert_allclose(mirrored, zeros, atol=1e-5)
    if stride == 1:
        assert mirrored[0, 16:25, 21:30].min() == pytest.approx(1.0, abs=1e-5)
        assert mirrored[0, 15, 25] == pytest.approx(0.0, abs=1e-5)


def test_a_plane_too_small_to_mirror_fully_is_mirrored_as_far_as_it_goes():
    network = BoxMean().eval()
    planes = np.full((1, 1, 5, 7), 0.3, np.float32)
    np.testing.assert_allclose(predict_planes(network, planes, CPU), 0.3, atol=1e-5)


def test_new_unets_mirror_except_for_filaments_and_membranes_and_old_files_keep_zeros(tmp_path):
    assert default_parameters("unet", "ribosome")["edge"] == "mirror"
    assert default_parameters("unet", "vesicle")["edge"] == "mirror"
    assert default_parameters("unet", "plasma membrane")["edge"] == "zeros"
    assert default_parameters("unet", "membrane", {"stem3d": 0, "context": 2})["edge"] == "zeros"
    assert default_parameters("unet", "microtubules")["edge"] == "zeros"
    for symmetry in ("any", "rewedge"):  # orientations set by hand keep the filaments' zeros
        assert default_parameters("unet", "microtubule", {"symmetry": symmetry})["edge"] == "zeros"
    assert default_parameters("unet", "microtubule", {"edge": "mirror"})["edge"] == "mirror"
    assert "edge" not in default_parameters("eman2", "ribosome")  # the paper's, unmeasured
    small = {"context": 0, "base": 4, "levels": 2}
    for edge, version in (("mirror", 6), ("zeros", 3), (None, 3)):
        parameters = small if edge is None else {**small, "edge": edge}
        model = TrainedModel(network=build_model("unet", {**small, "edge": edge or "zeros"}),
                             architecture="unet", parameters=parameters,
                             preprocess=PreprocessSettings(), voxel_size=10.0, box_size=32)
        assert model.metadata()["format_version"] == version  # 6: older versions refuse it
        save_model(model, tmp_path / "m.pt")
        loaded = load_model(tmp_path / "m.pt")
        assert loaded.network.edge == (edge or "zeros")
        assert loaded.parameters["edge"] == (edge or "zeros")
    with pytest.raises(Exception, match="edge must be one of"):
        build_model("unet", {**small, "edge": "wrap"})
    payload = torch.load(tmp_path / "m.pt", weights_only=True)  # the last: no edge written
    assert '"edge"' not in payload["metadata"]
    payload["metadata"] = payload["metadata"].replace(  # now one naming an edge unknown here
        '"parameters": {', '"parameters": {"edge": "wrap", ', 1)
    torch.save(payload, tmp_path / "wrap.pt")
    with pytest.raises(InvalidModelError, match="'wrap' beyond a slice's sides"):
        load_model(tmp_path / "wrap.pt")
