"""Training a per-feature network from boxes, as a generator a GUI can drive.

``iter_train`` yields a ``TrainingUpdate`` after every step (step, loss,
elapsed time) and, every ``preview_every_s`` seconds, the current
network's probability on a chosen slice or region, so a viewer can show
the segmentation improving live. It stops within one step when ``stop``
is set or the consumer closes the generator; the model trained so far is
always available as ``update.model``.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from ..annotations import Box, check_boxes
from ..errors import InvalidSettingsError, NonFiniteError
from ..preprocess import PreprocessSettings, Preprocessor, default_preprocessing
from .devices import pick_device
from .model_file import TrainedModel
from .models import MAX_MEMBERS, build_model, default_ensemble, default_parameters
from .tiles import TileBank, tile_bank_for
from .training_preview import Previewer
from .weight_copies import best_so_far, live_copier, rounded
from .validation import EarlyStopping, HeldOutScore, score_held_out

DEFAULT_ARCHITECTURE = "unet"
# Adam learning rates: EMAN2's own for its network; a measured good one for the U-Net
LEARNING_RATES = {"eman2": 1e-4, "unet": 1e-3}
BATCH_SIZES = {"eman2": 20, "unet": 16}
TRAINING_PRECISIONS = ("float32", "bfloat16")
PATIENCE = 10  # held-out checks without gain before stopping (a feature's ensemble: its own)


@dataclass(frozen=True)
class TrainingSettings:
    architecture: str = DEFAULT_ARCHITECTURE
    parameters: dict = field(default_factory=dict)
    steps: int = 1500  # at most; training stops earlier when held-out pixels stop improving
    batch_size: int | None = None  # None: the architecture's default
    learning_rate: float | None = None
    seed: int = 0
    device: str = "auto"
    preview_every_s: float = 2.0
    augment: bool = True
    intensity_augment: float = 0.0  # contrast, offset and noise jitter (see tiles.jitter_intensity)
    hold_out: bool = True  # a quadrant of each box scores the network: early stop + threshold
    check_every: int = 20  # steps between held-out checks
    # checks without improvement before stopping; None: 10, or the feature's own for its
    # default ensemble (ribosomes: 5, the same picks from 2/3 of the steps; docs/engine.md)
    patience: int | None = None
    min_steps: int = 150
    # "bfloat16": mixed-precision steps on a CPU, 2x faster with the membrane stem on
    # avx512_bf16, but membrane Dice 0.03-0.07 lower over 6 seeds (docs/engine.md): opt-in
    precision: str = "float32"
    # exponential moving average of the weights that the held-out checks score and
    # training keeps (BatchNorm statistics measured anew for it); 0 keeps the raw weights
    average: float = 0.0
    # learning rate times this after every ``plateau_checks`` held-out checks without a gain
    # (0: constant rate); measured for membranes in docs/engine.md
    plateau_decay: float = 0.0
    plateau_checks: int = 3
    # networks trained one after another with seeds seed, seed + 1, ..., their probabilities
    # averaged (nn.ensemble_training); None: the feature's default (nn.models.FEATURE_ENSEMBLES)
    members: int | None = None
    holdout_seed: int | None = None  # chooses the held-out quadrants; None: seed

    def __post_init__(self):
        if self.precision not in TRAINING_PRECISIONS:
            raise InvalidSettingsError(f"precision must be one of "
                                       f"{', '.join(TRAINING_PRECISIONS)}, not {self.precision!r}.")
        if not 0.0 <= self.average < 1.0:
            raise InvalidSettingsError("average must be at least 0 and below 1.")
        if self.steps < 1:
            raise InvalidSettingsError("training needs at least one step.")
        if self.check_every < 1 or (self.patience is not None and self.patience < 1) \
                or self.min_steps < 0:
            raise InvalidSettingsError("check_every and patience must be at least 1.")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise InvalidSettingsError("the learning rate must be positive.")
        if self.batch_size is not None and self.batch_size < 1:
            raise InvalidSettingsError("batch size must be at least 1.")
        if "members" in self.parameters:  # an Ensemble cannot be trained as one network
            raise InvalidSettingsError("give the number of networks as members=, not as a "
                                       "network parameter.")
        if self.members is not None and not 1 <= self.members <= MAX_MEMBERS:
            raise InvalidSettingsError(f"train 1 to {MAX_MEMBERS} networks, not {self.members}.")
        if not 0.0 <= self.plateau_decay < 1.0 or self.plateau_checks < 1:
            raise InvalidSettingsError("plateau_decay must be at least 0 and below 1, "
                                       "plateau_checks at least 1.")

    def resolved_batch_size(self) -> int:
        return self.batch_size or BATCH_SIZES.get(self.architecture, 16)

    def resolved_learning_rate(self) -> float:
        return self.learning_rate or LEARNING_RATES.get(self.architecture, 1e-3)

    def for_feature(self, feature: str | None) -> TrainingSettings:
        """These settings with the feature's defaults where members or patience are open:
        its ensemble's patience only for its own number of networks (measured so), else 10."""
        members, patience = default_ensemble(self.architecture, feature) or (1, PATIENCE)
        if self.members not in (None, members):
            members, patience = self.members, PATIENCE
        return replace(self, members=members, patience=self.patience or patience)

    @property
    def split_seed(self) -> int:
        """The seed that chooses each box's held-out quadrant."""
        return self.seed if self.holdout_seed is None else self.holdout_seed

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
    held_out: HeldOutScore | None = None  # set on the steps where held-out pixels were scored
    # a copy holding the best weights so far, on the steps that found them (checkpoints)
    best: TrainedModel | None = None
    # without held-out checks: makes a copy of the weights that would be kept now, on demand
    # (a copy every step would cost more than the checkpoint every minute that uses it)
    snapshot: Callable[[], TrainedModel] | None = None
    member: tuple[int, int] | None = None  # (k, n): network k of an ensemble of n (from 1)


def _network_for(settings: TrainingSettings, start_from: TrainedModel | None,
                 preprocess: PreprocessSettings, feature: str | None = None):
    """(network, architecture, parameters, preprocessing, history): fresh or continued.

    A fresh network takes the defaults for ``feature`` (``models.default_parameters``),
    overridden by ``settings.parameters``.
    """
    if start_from is not None:  # continue: a copy of its network, same preprocessing
        # (the model given stays as it was, e.g. for an export while this one trains)
        return (copy.deepcopy(start_from.network), start_from.architecture, start_from.parameters,
                start_from.preprocess, list(start_from.history))
    architecture = settings.architecture
    parameters = default_parameters(architecture, feature, settings.parameters)
    torch.manual_seed(settings.seed)  # a fresh network is initialised from the seed, on the CPU
    return build_model(architecture, parameters), architecture, parameters, preprocess, []


class _Step:
    """One optimiser step on a batch from the bank; raises before NaN reaches the weights."""

    def __init__(self, network, bank: TileBank, settings: TrainingSettings, device, feature: str):
        self.network, self.bank, self.device, self.feature = network, bank, device, feature
        self.rng = np.random.default_rng(settings.seed)
        self.batch_size = settings.resolved_batch_size()
        self.augment = settings.augment
        self.intensity = settings.intensity_augment if settings.augment else 0.0
        self.channels_last = device.type == "cpu" and getattr(network, "channels_last_on_cpu",
                                                              False)
        if self.channels_last:  # large kernels run ~3x faster in this layout on CPU
            network.to(memory_format=torch.channels_last)
        self.optimiser = torch.optim.Adam(network.parameters(),
                                          lr=settings.resolved_learning_rate())
        # mixed precision: bfloat16 convolutions, float32 weights, BatchNorm and loss
        self.bfloat16 = device.type == "cpu" and settings.precision == "bfloat16"
        self.done = 0  # steps taken
        self.averaged = None
        if settings.average > 0:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.averaged = AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(
                settings.average), use_buffers=False)

    def kept(self, step: int):
        """The network the checks score and training keeps: the average when there is one,
        with BatchNorm statistics of its own (those of the raw weights do not fit it)."""
        if self.averaged is None:
            return self.network
        from torch.optim.swa_utils import update_bn

        rng = np.random.default_rng([step, 7])
        batches = [self.bank.batch(rng, self.batch_size, augment=self.augment)[0]
                   for _ in range(8)]
        update_bn(batches, self.averaged.module, self.device)
        return self.averaged.module

    def __call__(self, step: int) -> float:
        self.network.train()
        images, labels, weights = (t.to(self.device) for t in self.bank.batch(
            self.rng, self.batch_size, augment=self.augment, intensity=self.intensity))
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        self.optimiser.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bfloat16):
            output = self.network(images)
        loss = self.network.loss(output.float(), labels, weights)
        if not torch.isfinite(loss):  # stop before NaN reaches the weights; nothing is saved
            raise NonFiniteError(f"training of '{self.feature}' diverged at step {step} (loss "
                                 f"{float(loss)}). Check the tomogram for NaN voxels or lower "
                                 "the learning rate.")
        loss.backward()
        self.optimiser.step()
        if self.averaged is not None:
            self.averaged.update_parameters(self.network)
        self.done = step
        return float(loss.detach())


def _finish(model: TrainedModel, stopper: EarlyStopping | None, first_step: int,
            step_once: _Step) -> None:
    """Keep the best weights by held-out loss and the threshold chosen on held-out pixels.

    The checks that chose the weights used single predictions (cheap); the threshold
    is chosen on the prediction segmentation makes (averaged rotations), once. Without
    held-out pixels the weights kept are the last (their average, with ``average``).
    """
    model.network.eval()
    if model.info.get("held_out") or model.info.get("averaged"):
        return
    if stopper is None or stopper.best is None:
        if stopper is not None:  # stopped before the first check that may choose weights
            model.info["unchecked"] = True
        if step_once.averaged is not None and step_once.done > 0:
            try:
                model.network.load_state_dict(step_once.kept(step_once.done).state_dict())
            except Exception:  # noqa: BLE001 - e.g. out of memory on cancel: keep the last
                return  # weights rather than lose the model
            model.info["averaged"] = True
        return
    stopper.restore(model.network)
    try:
        final = score_held_out(model.network, step_once.bank, step_once.device)
    except Exception:  # noqa: BLE001 - e.g. out of memory on cancel: keep the weights, and
        final = stopper.best  # the threshold of the single prediction that chose them
    model.threshold = final.threshold
    model.info["held_out"] = {"step": first_step + stopper.best_step,
                              "loss": round(final.loss, 5),
                              "dice": rounded(final.dice),
                              "dice_at_threshold": rounded(final.dice_at_threshold),
                              "threshold": final.threshold,
                              "interval": ([round(v, 4) for v in final.interval]
                                           if final.interval else None)}


def _box_info(boxes: list[Box], settings: TrainingSettings) -> dict:
    return {"positives": int(sum(b.positive for b in boxes)),
            "negatives": int(sum(not b.positive for b in boxes)),
            "training": settings.to_dict()}


def _check_held_out(stopper: EarlyStopping | None, step_once: _Step, step: int,
                    settings: TrainingSettings) -> tuple[HeldOutScore | None, bool]:
    """(held-out score or None, stop now?) for this step.

    The first checks are noisy (a membrane's best loss came at step 40), so the best
    weights are chosen only from ``min_steps`` on.
    """
    if stopper is None or not (step % settings.check_every == 0 or step == settings.steps):
        return None, False
    network = step_once.kept(step)
    held = score_held_out(network, step_once.bank, step_once.device, rotations=1)
    warm = step >= min(settings.min_steps, settings.steps)
    done = warm and stopper.update(step, held, network)
    if warm and settings.plateau_decay and stopper.since_best \
            and stopper.since_best % settings.plateau_checks == 0:
        for group in step_once.optimiser.param_groups:
            group["lr"] *= settings.plateau_decay
    return held, done


def _one_network_of(feature: str | None, boxes: list[Box],
                    settings: TrainingSettings) -> tuple[str, list[Box], TrainingSettings]:
    """The feature, its boxes (checked) and the settings of one network: an ensemble's
    members come with their own patience (ensemble_training), else a single network's."""
    feature = feature or (boxes[0].feature if boxes else "feature")
    boxes = [b for b in boxes if b.feature == feature]
    check_boxes(boxes, feature)
    return feature, boxes, replace(settings, members=1,
                                   patience=settings.patience or PATIENCE)


def iter_train(volume: np.ndarray, boxes: list[Box], voxel_size: float,
               settings: TrainingSettings = TrainingSettings(),
               preprocess: PreprocessSettings | None = None,
               feature: str | None = None, colour: str = "#f2c94c",
               start_from: TrainedModel | None = None,
               preview_z: int | Callable[[], int] | None = None,
               preview_region: tuple[slice, slice] | None = None,
               stop: threading.Event | None = None,
               preprocessor: Preprocessor | None = None) -> Iterator[TrainingUpdate]:
    """Train one feature's network on ``boxes``; see the module docstring.

    ``preview_z`` may be a function returning the slice in view (the preview follows
    the user). Every ``check_every`` steps the held-out quadrants are scored; training
    ends after ``patience`` checks without improvement (never before
    ``min_steps``), with the best weights and their calibrated threshold.
    """
    feature, boxes, settings = _one_network_of(feature, boxes, settings)
    if preprocess is None:  # the default: binned towards 20 A (see default_preprocessing)
        preprocess = default_preprocessing(voxel_size, boxes[0].size,
                                           architecture=settings.architecture, feature=feature)
    network, architecture, parameters, preprocess, history = _network_for(
        settings, start_from, preprocess, feature)
    device = pick_device(settings.device)
    network.to(device)
    pre = preprocessor or Preprocessor(volume, preprocess)
    bank = tile_bank_for(network, pre, boxes, holdout=0.25 if settings.hold_out else 0.0,
                         seed=settings.split_seed)
    step_once = _Step(network, bank, settings, device, feature)
    stopper = EarlyStopping(settings.patience) if bank.has_holdout else None
    preview = Previewer(pre, network, preview_z, preview_region, settings, device)
    model = TrainedModel(network=network, architecture=architecture, parameters=parameters,
                         preprocess=preprocess, voxel_size=float(voxel_size),
                         box_size=int(boxes[0].size), feature=feature, colour=colour,
                         history=history, info=_box_info(boxes, settings),
                         threshold=start_from.threshold if start_from is not None else 0.5)
    first_step = history[-1][0] if history else 0
    start = time.perf_counter()
    try:
        for step in range(1, settings.steps + 1):
            if stop is not None and stop.is_set():
                break
            value = step_once(step)
            history.append([first_step + step, value])
            elapsed = time.perf_counter() - start
            held, done = _check_held_out(stopper, step_once, step, settings)
            last = done or step == settings.steps
            if last:  # the last preview shows the weights that are kept, not the last step's
                _finish(model, stopper, first_step, step_once)
            image, z = preview(network, time.perf_counter() - start, step == 1 or last,
                               final=last)  # the time now: after a held-out check
            network.eval()
            yield TrainingUpdate(step=step, total=settings.steps, loss=value, elapsed_s=elapsed,
                                 model=model, preview=image, preview_z=z, held_out=held,
                                 best=best_so_far(model, stopper, first_step, step),
                                 snapshot=live_copier(model, stopper, step_once))
            if done:
                break
    finally:  # also when the consumer closes the generator (cancel): keep the best weights
        _finish(model, stopper, first_step, step_once)


def train(volume: np.ndarray, boxes: list[Box], voxel_size: float,
          settings: TrainingSettings = TrainingSettings(), progress=None, **kwargs) -> TrainedModel:
    """Run training to the end; ``progress(step, total, message)`` is told of each step."""
    from .ensemble_training import iter_train_members  # it builds on this module

    model = None
    for update in iter_train_members(volume, boxes, voxel_size, settings, **kwargs):
        model = update.model
        if progress:
            progress(update.step, update.total, f"loss {update.loss:.4f}")
    if model is None:
        raise InvalidSettingsError("training stopped before its first step.")
    return model
