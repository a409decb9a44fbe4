"""Fast inference gives the eager network's numbers: tiles, folded BatchNorm, FFT convolutions.

Also: segmentation leaves the trained model as it was, and a binned model's
probability lands on the tomogram's grid.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from napari_tomoseg.errors import InvalidSettingsError
from napari_tomoseg.io.mrc import open_volume
from napari_tomoseg.nn.fast_forward import (FFTConv2d, fold_batchnorm, inference_network,
                                            receptive_halo, tiled_forward)
from napari_tomoseg.nn.inference import ZUpsampler, iter_segment, predict_planes, segment
from napari_tomoseg.nn.model_file import TrainedModel, load_model, save_model
from napari_tomoseg.nn.models import build_model
from napari_tomoseg.preprocess import PreprocessSettings

CPU = torch.device("cpu")
TILE = 64  # the planes below are 152 x 216 after padding: 3 x 4 tiles, the last ones partial


ARCHITECTURES = {"unet": ("unet", None), "eman2": ("eman2", None),
                 "unet-stem3d": ("unet", {"context": 2, "stem3d": 8})}


def _network(name: str) -> nn.Module:
    """A fresh network with BatchNorm statistics that are not the identity, in eval mode.

    The U-Net's convolutions are doubled: at initialisation a pixel 40 px away
    changes the output below float rounding, and the tests must see a short halo.
    """
    torch.manual_seed(0)
    architecture, parameters = ARCHITECTURES[name]
    network = build_model(architecture, parameters)
    for module in network.modules():
        if architecture == "unet" and isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
            module.weight.data *= 2.0
        if isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.1, 0.1)
    return network.eval()


def _planes(network: nn.Module, height: int = 150, width: int = 212) -> np.ndarray:
    rng = np.random.default_rng(1)
    channels = 2 * network.context + 1
    return rng.uniform(-1, 1, (2, channels, height, width)).astype(np.float32)


def _eager(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return network(x)


def test_receptive_halo_follows_the_deepest_path():
    # U-Net: 3x3 pairs at strides 1, 2, 4, 8 down and 4, 2, 1 up, plus pooling and
    # transposed convolutions: 51 pixels, 56 on its 8-pixel grid; eman2: 7 + 1 + 14 + 14
    assert receptive_halo(build_model("unet")) == 56
    assert receptive_halo(build_model("eman2")) == 36
    assert receptive_halo(build_model("unet", {"levels": 2, "base": 8, "context": 1})) == 24
    # the 3D stem's convolutions each add a pixel in y and x (their z extent does not count):
    # 4 of them push that 2-level U-Net past its 24, onto the next multiple of 4
    assert receptive_halo(build_model("unet", {"levels": 2, "base": 8, "context": 4,
                                               "stem3d": 4})) == 28


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_tiles_equal_the_whole_slice_at_tile_borders_too(architecture):
    network = _network(architecture)
    x = torch.from_numpy(_planes(network, 152, 216))  # padded size: multiples of 8
    whole = _eager(network, x)
    halo = receptive_halo(network)
    with torch.inference_mode():
        tiled = tiled_forward(network, x, TILE, halo)
    assert tiled.shape == whole.shape
    assert float((tiled - whole).abs().max()) < 1e-4
    stride = network.output_stride
    for border in (TILE, 2 * TILE):  # rows either side of each seam (columns: 3 seams)
        edge = slice(border // stride - 1, border // stride + 1)
        assert float((tiled[..., edge, :] - whole[..., edge, :]).abs().max()) < 1e-4
    for border in (TILE, 2 * TILE, 3 * TILE):
        edge = slice(border // stride - 1, border // stride + 1)
        assert float((tiled[..., edge] - whole[..., edge]).abs().max()) < 1e-4
    assert float(whole.abs().max()) > 1e-2  # a real signal was compared
    with torch.inference_mode():  # and a halo 16 px short would have been caught
        short = tiled_forward(network, x, TILE, halo - 16)
    assert float((short - whole).abs().max()) > 1e-4


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_fast_path_probability_equals_the_eager_whole_slice(architecture):
    network = _network(architecture)
    planes = _planes(network)  # 150 x 212: not a multiple of the tile nor of 8
    reference = predict_planes(network, planes, CPU, tile=None)
    fast = inference_network(network, CPU)
    tiled = predict_planes(fast, planes, CPU, tile=TILE)
    assert tiled.shape == (2, 150, 212)
    assert float(np.abs(tiled - reference).max()) < 1e-4


@pytest.mark.parametrize("architecture", list(ARCHITECTURES))
def test_small_planes_sent_together_equal_one_at_a_time(architecture):
    """Held-out tiles (48 px) go many per forward call; each must come out as if alone."""
    network = _network(architecture)
    rng = np.random.default_rng(3)
    planes = rng.uniform(-1, 1, (12, 2 * network.context + 1, 48, 48)).astype(np.float32)
    together = predict_planes(network, planes, CPU)
    alone = np.concatenate([predict_planes(network, planes[i:i + 1], CPU) for i in range(12)])
    assert together.shape == (12, 48, 48)
    assert float(np.abs(together - alone).max()) < 1e-5


def test_folded_batchnorm_gives_the_same_output_and_leaves_the_original():
    network = _network("unet")
    folded = fold_batchnorm(network)
    x = torch.from_numpy(_planes(network, 64, 64))
    assert float((_eager(folded, x) - _eager(network, x)).abs().max()) < 1e-4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in network.modules()) == 14


def test_the_3d_stem_runs_once_over_consecutive_slices_with_the_same_numbers():
    """Segmentation's batches are consecutive slices with their neighbours: the frozen
    stem runs once over the slab (one call, batch 1); any other batch window by window."""
    from napari_tomoseg.nn.inference import stack_context

    network = _network("unet-stem3d")
    slab = np.random.default_rng(3).uniform(-1, 1, (6 + 2 * network.context, 40, 48))
    consecutive = torch.from_numpy(stack_context(slab.astype(np.float32), network.context))
    fast = inference_network(network, CPU)
    assert not any(isinstance(m, nn.BatchNorm3d) for m in fast.modules())  # folded too
    batches: list[int] = []
    fast.stem.stem.register_forward_hook(  # (batch, depth) of each call
        lambda module, args, out: batches.append(tuple(args[0].shape[:3:2])))
    for order in (torch.arange(6), torch.tensor([4, 0, 5, 2, 1, 3])):
        x = consecutive[order]
        reference = _eager(network, x)
        with torch.no_grad():
            out = fast(x)
        assert float((out - reference).abs().max()) < 1e-4
    depth = 2 * network.context + 1
    assert batches == [(1, 6 + depth - 1), (6, depth)]  # one slab; shuffled: window by window
    batches.clear()  # segmentation's path: slices small against the tile go several at once
    planes = consecutive.numpy()
    np.testing.assert_allclose(  # unmirrored: the slices' own size decides the batches
        predict_planes(fast, planes, CPU, tile=64, rotations=1, mirror=False),
        predict_planes(network, planes, CPU, tile=64, rotations=1, mirror=False), atol=1e-5)
    assert batches == [(1, 2 + depth - 1)] * 3  # 64 x 64 px hold two 40 x 48 slices
    batches.clear()  # mirrored sides (the network's edge) are overhead: still two per call
    assert fast.edge == "mirror"
    np.testing.assert_allclose(predict_planes(fast, planes, CPU, tile=64, rotations=1),
                               predict_planes(network, planes, CPU, tile=64, rotations=1),
                               atol=1e-5)
    assert batches == [(1, 2 + depth - 1)] * 3


def test_fft_convolution_equals_conv2d():
    torch.manual_seed(2)
    conv = nn.Conv2d(3, 5, 15, padding=7)
    x = torch.randn(2, 3, 70, 45)
    with torch.no_grad():
        assert float((FFTConv2d(conv)(x) - conv(x)).abs().max()) < 1e-4
    assert not FFTConv2d.applies(nn.Conv2d(3, 5, 3, padding=1))
    assert not FFTConv2d.applies(nn.Conv2d(3, 5, 15, padding=0))


def _trained(network: nn.Module, binning: int = 1, voxel_size: float = 10.0) -> TrainedModel:
    return TrainedModel(network=network, architecture="unet", parameters={},
                        preprocess=PreprocessSettings(binning=binning), voxel_size=voxel_size,
                        box_size=64)


def test_segmentation_leaves_the_trained_model_as_it_was():
    torch.manual_seed(0)
    network = build_model("unet", {"levels": 2, "base": 8, "context": 1}).train()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    model = _trained(network)
    volume = np.random.default_rng(0).normal(size=(6, 40, 48)).astype(np.float32)
    segment(volume, model, 10.0, device="cpu", tile=16)
    assert network.training and all(p.requires_grad for p in network.parameters())
    after = network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(isinstance(m, nn.BatchNorm2d) for m in network.modules())
    loss = network(torch.randn(2, 3, 32, 32)).mean()  # training can continue
    loss.backward()
    assert network.down[0][0].weight.grad is not None


class _PassThrough(nn.Module):
    """Probability = the preprocessed image (clamped): shows where a feature lands."""

    output_stride = 1
    context = 0

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, 0, 1, 1] = 1.0
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    @staticmethod
    def probability(output: torch.Tensor) -> torch.Tensor:
        return output.clamp(0.0, 1.0)


def test_binned_segmentation_lands_on_the_tomograms_grid(tmp_path):
    shape, centre, radius = (20, 64, 80), np.array([9.0, 30.0, 45.0]), 5.0
    zz, yy, xx = np.indices(shape)
    distance = np.sqrt((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2)
    volume = (distance <= radius).astype(np.float32)
    model = _trained(_PassThrough(), binning=2)
    origin = (5.0, -7.0, 11.0)
    path = tmp_path / "binned.mrc"
    updates = list(iter_segment(volume, model, 10.0, path, origin=origin, dtype="float32",
                                device="cpu"))
    assert updates[-1].path == path
    prob, info = open_volume(path)
    assert prob.shape == shape
    assert info.voxel_size == (10.0,) * 3 and info.origin == origin
    weights = np.where(prob > 0.5 * prob.max(), prob, 0.0)
    centroid = np.array([(weights * axis).sum() / weights.sum() for axis in (zz, yy, xx)])
    assert np.abs(centroid - centre).max() <= 1.0, centroid


@pytest.mark.parametrize("binning, nz", [(2, 20), (2, 21), (3, 17)])
@pytest.mark.parametrize("slab", [1, 3, 50])
def test_binned_slices_are_interpolated_linearly_in_z(binning, nz, slab):
    """A binned slice's value belongs at its centre, i*b + (b-1)/2: a map that is linear in z
    comes back linear on every full slice, whatever the slab size (no steps of b slices)."""
    nzb = -(-nz // binning)
    starts = np.arange(nzb) * binning
    centres = (starts + np.minimum(starts + binning, nz) - 1) / 2  # the last group may be short
    binned = np.broadcast_to(centres[:, None, None], (nzb, 2, 3)).astype(np.float32)
    upsample, parts, ranges = ZUpsampler(binning, nz, nzb), [], []
    for zb0 in range(0, nzb, slab):
        z0, z1, part = upsample.push(zb0, binned[zb0:zb0 + slab])
        assert part.shape == (z1 - z0, 2, 3)
        parts.append(part)
        ranges.append((z0, z1))
    assert ranges[0][0] == 0 and ranges[-1][1] == nz
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))  # contiguous, no gaps
    full = np.concatenate(parts)[:, 0, 0]
    expected = np.clip(np.arange(nz), centres[0], centres[-1])
    np.testing.assert_allclose(full, expected, atol=1e-5)


def test_bfloat16_path_stays_close_to_float32_and_only_where_asked():
    """bfloat16 changes rounding, not results: probabilities within a few hundredths of the
    float32 path (on the realistic benchmark Dice moved by at most 0.0015); the FFT
    network (eman2) and an explicit float32 are never lowered."""
    from napari_tomoseg.nn.fast_forward import bfloat16_pays

    network = _network("unet")
    planes = _planes(network, 100, 120)  # 2 x 2 tiles: bfloat16 is slow on a CPU without it
    exact = predict_planes(inference_network(network, CPU, "float32"), planes, CPU, tile=TILE)
    lowered = inference_network(network, CPU, "bfloat16")
    assert next(lowered.parameters()).dtype == torch.bfloat16
    rounded = predict_planes(lowered, planes, CPU, tile=TILE)
    assert rounded.dtype == np.float32
    difference = np.abs(rounded - exact)
    assert 0 < float(difference.max()) < 0.05 and float(difference.mean()) < 0.005
    assert next(inference_network(network, CPU, "float32").parameters()).dtype == torch.float32
    auto = inference_network(network, CPU, "auto")
    assert (next(auto.parameters()).dtype == torch.bfloat16) == bfloat16_pays(CPU)
    eman2 = inference_network(_network("eman2"), CPU, "bfloat16")
    assert all(p.dtype == torch.float32 for p in eman2.parameters())
    with pytest.raises(ValueError, match="precision"):
        inference_network(network, CPU, "half")


def test_segment_options_refuse_an_unknown_precision():
    from napari_tomoseg.errors import InvalidSettingsError
    from napari_tomoseg.jobs.segment import SegmentOptions

    with pytest.raises(InvalidSettingsError, match="precision"):
        SegmentOptions(precision="float8")


def test_averaged_quarter_turns_make_the_map_turn_with_the_slice():
    """With rotations=4 the map of a turned slice is the turned map (no orientation bias);
    a single prediction is not, so the test can tell them apart."""
    planes = np.random.default_rng(3).uniform(-1, 1, (2, 5, 64, 96)).astype(np.float32)
    turned = np.ascontiguousarray(np.rot90(planes, 1, axes=(-2, -1)))
    gaps = {}
    for rotations in (1, 4):
        torch.manual_seed(0)
        network = build_model("unet", {"rotations": rotations}).eval()
        straight = predict_planes(network, planes, CPU)
        gaps[rotations] = float(np.abs(predict_planes(network, turned, CPU)
                                       - np.rot90(straight, 1, axes=(-2, -1))).max())
    assert gaps[4] < 1e-5
    assert gaps[1] > 1e-3
    with pytest.raises(InvalidSettingsError, match="rotations"):
        build_model("unet", {"rotations": 3})


def test_model_files_keep_how_their_threshold_was_chosen(tmp_path):
    """New U-Nets average 4 quarter turns; a file without the setting (older) keeps single
    predictions, on which its stored threshold was chosen."""
    old = {"context": 1, "base": 8, "levels": 2}
    for parameters, expected in ((old, 1), ({**old, "rotations": 4}, 4)):
        model = TrainedModel(network=build_model("unet", parameters), architecture="unet",
                             parameters=parameters, preprocess=PreprocessSettings(),
                             voxel_size=10.0, box_size=64)
        loaded = load_model(save_model(model, tmp_path / f"r{expected}.pt"))
        assert loaded.network.rotations == expected
        assert inference_network(loaded.network, CPU).rotations == expected
    assert build_model("unet").rotations == 4 and build_model("eman2").rotations == 1


class _PoolTwice(torch.nn.Module):
    """A stride-2 network that passes its input through (2x2 mean): where a map lands."""

    output_stride = 2
    rotations = 1

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # for its device

    def forward(self, x):
        return torch.nn.functional.avg_pool2d(x[:, :1], 2)

    @staticmethod
    def probability(output):
        return output


@pytest.mark.parametrize("width, scale", [(255, 1.0), (1023, 1.0), (250, 2.0), (1000, 1.4)])
def test_a_stride_two_or_rescaled_map_lands_where_it_was_computed(width, scale):
    """One resize to the final size stretched maps of the eman2 network (stride 2) and of
    rescaled models towards the origin: up to 2.5 px at the far edge of a slice."""
    from napari_tomoseg.nn.inference import predict_planes

    x = np.arange(width, dtype=np.float32)
    centre = width - 24.5
    disc = np.exp(-((x - centre) ** 2) / (2 * 6.0 ** 2))
    planes = np.broadcast_to(disc, (1, 1, 16, width)).copy()
    prob = predict_planes(_PoolTwice().eval(), planes, scale=scale, tile=None)
    profile = prob[0, 8]
    found = float((profile * x).sum() / profile.sum())
    assert abs(found - centre) < 0.35, found - centre
