"""The live preview while training: when it is drawn, and that a slow one cannot crowd out
the training (a whole slice of a large tomogram costs seconds, a step a fraction of one)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_tomoseg.nn.models import build_model
from napari_tomoseg.nn.training import TrainingSettings
from napari_tomoseg.nn.training_preview import PREVIEW_SHARE, Previewer
from napari_tomoseg.preprocess import PreprocessSettings, Preprocessor


class SteppedClock:
    """A clock each preview reads twice (start, end): every preview costs ``cost`` seconds."""

    def __init__(self, cost: float):
        self.cost, self.now, self.reads = cost, 0.0, 0

    def __call__(self) -> float:
        self.reads += 1
        if self.reads % 2 == 0:
            self.now += self.cost
        return self.now


def _previewer(every: float, cost: float) -> tuple[Previewer, object]:
    volume = np.random.default_rng(0).normal(size=(8, 32, 32)).astype(np.float32)
    torch.manual_seed(0)
    network = build_model("unet", {"context": 1, "base": 4, "levels": 2, "rotations": 1}).eval()
    settings = TrainingSettings(preview_every_s=every)
    pre = Preprocessor(volume, PreprocessSettings())
    return Previewer(pre, network, 4, None, settings, "cpu", clock=SteppedClock(cost)), network


def test_a_cheap_preview_comes_every_preview_every_s():
    previewer, network = _previewer(every=2.0, cost=0.1)
    image, z = previewer(network, 0.0, force=True)
    assert z == 4 and image.shape == (32, 32) and np.all((image >= 0) & (image <= 1))
    assert previewer(network, 2.0, force=False) == (None, None)  # 2.0 s after 0.1 s
    assert previewer(network, 2.11, force=False)[0] is not None


def test_a_slow_preview_takes_at_most_its_share_of_the_training():
    previewer, network = _previewer(every=2.0, cost=3.0)
    assert previewer(network, 0.0, force=True)[0] is not None
    wait = 3.0 * (1 / PREVIEW_SHARE - 1)  # 12 s of training per 3-s preview
    for elapsed in (2.0, 5.0, 3.0 + wait - 0.01):
        assert previewer(network, elapsed, force=False) == (None, None)
    assert previewer(network, 3.0 + wait + 1e-6, force=False)[0] is not None
    assert previewer(network, 3.0 + wait + 0.5, force=True)[0] is not None  # the last one


@pytest.mark.parametrize("cost", [0.0, 5.0])
def test_preview_every_zero_previews_after_every_step(cost):
    previewer, network = _previewer(every=0.0, cost=cost)
    assert all(previewer(network, float(t), force=False)[0] is not None for t in range(3))


def test_the_preview_is_the_networks_own_probability():
    """Previews run on the frozen copy segmentation uses (BatchNorm folded, bfloat16 where the
    CPU has it): the same map as the training network's, to that precision."""
    from napari_tomoseg.nn.fast_forward import bfloat16_pays
    from napari_tomoseg.nn.inference import predict_planes, stack_context

    previewer, network = _previewer(every=2.0, cost=0.1)
    with torch.no_grad():  # BatchNorm statistics of their own, not the identity
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    planes = stack_context(previewer.pre.slab(3, 6), 1)  # slice 4, the one in view
    with torch.no_grad():  # an untrained network's map is nearly flat: logits of spread 2
        logits = network.eval()(torch.from_numpy(planes))
        scale = 2 / logits.std()
        network.head.bias.copy_(-scale * (logits.mean() - network.head.bias))
        network.head.weight.mul_(scale)
    network.train()  # as training leaves it: the copy is previewed, the network stays
    image, z = previewer(network, 0.0, force=True, final=True)
    assert z == 4 and network.training
    expected = predict_planes(network.eval(), planes)[0]
    # bfloat16 (where the CPU has it) rounds each layer, and this head magnifies it
    close = 0.05 if bfloat16_pays(torch.device("cpu")) else 1e-4
    assert np.abs(image - expected).mean() < close
    assert np.corrcoef(image.ravel(), expected.ravel())[0, 1] > 0.99
    assert image.std() > 0.1  # a map with something in it, not a constant
