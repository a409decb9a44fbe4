"""The live preview of a training: the network's probability on the slice in view."""

from __future__ import annotations

import time

import numpy as np
import torch

from ..preprocess import Preprocessor, unbin_slices
from .fast_forward import inference_network
from .inference import predict_planes, stack_context

# At most this share of a training's time goes to previews. A whole 928 px slice costs a
# membrane network at 10 A (3D stem) 3.5 s on 2 cores in float32, against 0.4 s per step:
# previewing every 2 s spent 89% of a training on previews (bench_training_preview.py).
PREVIEW_SHARE = 0.2


def _preview_planes(pre: Preprocessor, z: int, context: int, region) -> np.ndarray:
    b = pre.settings.binning
    zb = z // b
    planes = stack_context(pre.slab(zb - context, zb + context + 1), context)
    if region is not None:
        ys, xs = region
        planes = planes[..., ys.start // b:(ys.stop + b - 1) // b, xs.start // b:(xs.stop + b - 1) // b]
    return planes


class Previewer:
    """The network's probability on the slice in view, ``preview_every_s`` seconds after the
    last one ended, or later where a preview is slow: previews take at most PREVIEW_SHARE
    of the training's time (``preview_every_s`` 0: after every step, whatever the cost)."""

    def __init__(self, pre: Preprocessor, network, preview_z, region, settings, device,
                 clock=time.perf_counter):
        self.pre, self.preview_z, self.region = pre, preview_z, region
        self.context = getattr(network, "context", 0)  # slices each side the network reads
        self.every, self.device = settings.preview_every_s, device
        self.clock = clock  # measures what each preview costs
        self.next_at = -np.inf  # training time (``elapsed``) of the next preview
        self.cache: dict[int, np.ndarray] = {}

    def __call__(self, network, elapsed: float, force: bool, final: bool = False):
        """The probability on the slice in view: single predictions while training (fast),
        the model's own (averaged rotations) for the weights that are kept."""
        if self.preview_z is None or not (force or elapsed >= self.next_at):
            return None, None
        started = self.clock()
        z = int(self.preview_z() if callable(self.preview_z) else self.preview_z)
        if z not in self.cache:
            self.cache = {z: _preview_planes(self.pre, z, self.context, self.region)}
        # a frozen copy, as segmentation runs (BatchNorm folded; bfloat16 where the CPU has
        # it): a 928 px slice of a membrane network at 10 A in 1.5-1.7 s against 3.5-3.7 s
        fast = inference_network(network, torch.device(self.device), "auto")
        image = predict_planes(fast, self.cache[z], self.device, rotations=None if final else 1)
        b = self.pre.settings.binning
        if b > 1:  # back onto the tomogram's grid (or the preview region's)
            ny, nx = self._full_shape()
            image = unbin_slices(image, b, ny, nx)
        cost = self.clock() - started
        if self.every > 0:
            self.next_at = elapsed + cost + max(self.every, cost * (1 / PREVIEW_SHARE - 1))
        return image[0], z

    def _full_shape(self) -> tuple[int, int]:
        if self.region is None:
            return self.pre.volume.shape[1], self.pre.volume.shape[2]
        ys, xs = self.region
        return ys.stop - ys.start, xs.stop - xs.start
