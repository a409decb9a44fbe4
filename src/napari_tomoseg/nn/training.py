"""Training a per-feature network from boxes, as a generator a GUI can drive.

``iter_train`` yields a ``TrainingUpdate`` after every step (step, loss,
elapsed time) and, every ``preview_every_s`` seconds, the current
network's probability on a chosen slice or region, so a viewer can show
the segmentation improving live. It stops within one step when ``stop``
is set or the consumer closes the generator; the model trained so far is
always available as ``update.model``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from ..annotations import Box, check_boxes
from ..errors import InvalidSettingsError, NonFiniteError
from ..preprocess import PreprocessSettings, Preprocessor
from .devices import pick_device
from .inference import _stack_context, predict_planes
from .model_file import TrainedModel
from .models import ARCHITECTURES, DEFAULT_PARAMETERS, build_model
from .tiles import TileBank

DEFAULT_ARCHITECTURE = "unet"
# Adam learning rates: EMAN2's own for its network; a measured good one for the U-Net
LEARNING_RATES = {"eman2": 1e-4, "unet": 1e-3}
BATCH_SIZES = {"eman2": 20, "unet": 16}


@dataclass(frozen=True)
class TrainingSettings:
    architecture: str = DEFAULT_ARCHITECTURE
    parameters: dict = field(default_factory=dict)
    steps: int = 400
    batch_size: int | None = None  # None: the architecture's default
    learning_rate: float | None = None
    seed: int = 0
    device: str = "auto"
    preview_every_s: float = 2.0
    augment: bool = True

    def __post_init__(self):
        if self.steps < 1:
            raise InvalidSettingsError("training needs at least one step.")
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidSettingsError("batch size must be at least 1.")

    def resolved_batch_size(self) -> int:
        return self.batch_size or BATCH_SIZES.get(self.architecture, 16)

    def resolved_learning_rate(self) -> float:
        return self.learning_rate or LEARNING_RATES.get(self.architecture, 1e-3)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainingUpdate:
    step: int
    total: int
    loss: float
    elapsed_s: float
    model: TrainedModel
    preview: np.ndarray | None = None  # probability on the preview slice/region
    preview_z: int | None = None


def _preview_planes(pre: Preprocessor, z: int, context: int, region) -> np.ndarray:
    b = pre.settings.binning
    zb = z // b
    planes = _stack_context(pre.slab(zb - context, zb + context + 1), context)
    if region is not None:
        ys, xs = region
        planes = planes[..., ys.start // b:(ys.stop + b - 1) // b, xs.start // b:(xs.stop + b - 1) // b]
    return planes


def iter_train(volume: np.ndarray, boxes: list[Box], voxel_size: float,
               settings: TrainingSettings = TrainingSettings(),
               preprocess: PreprocessSettings = PreprocessSettings(),
               feature: str | None = None, colour: str = "#f2c94c",
               start_from: TrainedModel | None = None,
               preview_z: int | Callable[[], int] | None = None,
               preview_region: tuple[slice, slice] | None = None,
               stop: threading.Event | None = None,
               preprocessor: Preprocessor | None = None) -> Iterator[TrainingUpdate]:
    """Train one feature's network on ``boxes``; see the module docstring.

    ``preview_z`` may be a function returning the slice in view, asked at
    every preview, so the preview follows the user through the tomogram.
    """
    feature = feature or (boxes[0].feature if boxes else "feature")
    boxes = [b for b in boxes if b.feature == feature]
    check_boxes(boxes, feature)
    if start_from is not None:  # continue: same network, same preprocessing
        preprocess = start_from.preprocess
        network = start_from.network
        architecture, parameters = start_from.architecture, start_from.parameters
        history = list(start_from.history)
    else:
        architecture = settings.architecture
        if architecture not in ARCHITECTURES:  # a clear error before any work
            build_model(architecture)
        parameters = {**DEFAULT_PARAMETERS[architecture], **settings.parameters}
        history = []
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    device = pick_device(settings.device)
    if start_from is None:  # a fresh network is initialised from the seed, on the CPU
        network = build_model(architecture, parameters)
    network.to(device)
    channels_last = device.type == "cpu" and getattr(network, "channels_last_on_cpu", False)
    if channels_last:  # large kernels run ~3x faster in this layout on CPU
        network.to(memory_format=torch.channels_last)
    pre = preprocessor or Preprocessor(volume, preprocess)
    context = getattr(network, "context", 0)
    bank = TileBank(pre, boxes, context)
    optimiser = torch.optim.Adam(network.parameters(), lr=settings.resolved_learning_rate())
    batch_size = settings.resolved_batch_size()
    planes_cache: dict[int, np.ndarray] = {}

    def preview_planes_for(z: int) -> np.ndarray:
        if z not in planes_cache:
            planes_cache.clear()
            planes_cache[z] = _preview_planes(pre, z, context, preview_region)
        return planes_cache[z]
    model = TrainedModel(network=network, architecture=architecture, parameters=parameters,
                         preprocess=preprocess, voxel_size=float(voxel_size),
                         box_size=int(boxes[0].size), feature=feature, colour=colour,
                         history=history,
                         info={"positives": int(sum(b.positive for b in boxes)),
                               "negatives": int(sum(not b.positive for b in boxes)),
                               "training": settings.to_dict()})
    first_step = history[-1][0] if history else 0
    start = time.perf_counter()
    last_preview = -np.inf
    for step in range(1, settings.steps + 1):
        if stop is not None and stop.is_set():
            break
        network.train()
        images, labels = bank.batch(rng, batch_size, augment=settings.augment)
        images, labels = images.to(device), labels.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        optimiser.zero_grad(set_to_none=True)
        loss = network.loss(network(images), labels)
        if not torch.isfinite(loss):  # stop before NaN reaches the weights; nothing is saved
            raise NonFiniteError(f"training of '{feature}' diverged at step {step} (loss "
                                 f"{float(loss)}). Check the tomogram for NaN voxels or lower "
                                 "the learning rate.")
        loss.backward()
        optimiser.step()
        value = float(loss.detach())
        history.append([first_step + step, value])
        elapsed = time.perf_counter() - start
        preview, z = None, None
        if preview_z is not None and (elapsed - last_preview >= settings.preview_every_s
                                      or step == settings.steps or step == 1):
            z = int(preview_z() if callable(preview_z) else preview_z)
            network.eval()
            preview = predict_planes(network, preview_planes_for(z), device)[0]
            if pre.settings.binning > 1:
                preview = np.kron(preview, np.ones((pre.settings.binning,) * 2, np.float32))
            last_preview = elapsed
        network.eval()
        yield TrainingUpdate(step=step, total=settings.steps, loss=value, elapsed_s=elapsed,
                             model=model, preview=preview, preview_z=z)
    network.eval()


def train(volume: np.ndarray, boxes: list[Box], voxel_size: float,
          settings: TrainingSettings = TrainingSettings(), progress=None, **kwargs) -> TrainedModel:
    """Run training to the end; ``progress(step, total, message)`` is told of each step."""
    model = None
    for update in iter_train(volume, boxes, voxel_size, settings, **kwargs):
        model = update.model
        if progress:
            progress(update.step, update.total, f"loss {update.loss:.4f}")
    if model is None:
        raise InvalidSettingsError("training stopped before its first step.")
    return model
