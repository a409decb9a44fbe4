"""The live preview of a training: the network's probability on the slice in view."""

from __future__ import annotations

import numpy as np

from ..preprocess import Preprocessor, unbin_slices
from .inference import predict_planes, stack_context


def _preview_planes(pre: Preprocessor, z: int, context: int, region) -> np.ndarray:
    b = pre.settings.binning
    zb = z // b
    planes = stack_context(pre.slab(zb - context, zb + context + 1), context)
    if region is not None:
        ys, xs = region
        planes = planes[..., ys.start // b:(ys.stop + b - 1) // b, xs.start // b:(xs.stop + b - 1) // b]
    return planes


class Previewer:
    """The network's probability on the slice in view, every ``preview_every_s`` seconds."""

    def __init__(self, pre: Preprocessor, network, preview_z, region, settings, device):
        self.pre, self.preview_z, self.region = pre, preview_z, region
        self.context = getattr(network, "context", 0)  # slices each side the network reads
        self.every, self.device = settings.preview_every_s, device
        self.last = -np.inf
        self.cache: dict[int, np.ndarray] = {}

    def __call__(self, network, elapsed: float, force: bool, final: bool = False):
        """The probability on the slice in view: single predictions while training (fast),
        the model's own (averaged rotations) for the weights that are kept."""
        if self.preview_z is None or not (force or elapsed - self.last >= self.every):
            return None, None
        z = int(self.preview_z() if callable(self.preview_z) else self.preview_z)
        if z not in self.cache:
            self.cache = {z: _preview_planes(self.pre, z, self.context, self.region)}
        network.eval()
        image = predict_planes(network, self.cache[z], self.device,
                               rotations=None if final else 1)
        b = self.pre.settings.binning
        if b > 1:  # back onto the tomogram's grid (or the preview region's)
            ny, nx = self._full_shape()
            image = unbin_slices(image, b, ny, nx)
        image = image[0]
        self.last = elapsed
        return image, z

    def _full_shape(self) -> tuple[int, int]:
        if self.region is None:
            return self.pre.volume.shape[1], self.pre.volume.shape[2]
        ys, xs = self.region
        return ys.stop - ys.start, xs.stop - xs.start
