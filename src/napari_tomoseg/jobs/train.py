"""Train one feature's network from the boxes, and keep it on disk whatever happens."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np

from ..annotations import Box, check_boxes, check_boxes_fit
from ..errors import InvalidSettingsError
from ..feature_files import previous_model_file, shift_previous_models, stopped_model_file
from ..features import FEATURE_COLOURS
from ..io.paths import check_writable
from ..nn.model_file import TrainedModel, save_model_or_rescue
from ..nn.ensemble_training import iter_train_members
from ..nn.training import TrainingSettings, TrainingUpdate
from ..preprocess import PreprocessSettings, default_preprocessing
from .checkpoints import Checkpoints
from .progress import Job, Progress


@contextlib.contextmanager
def _signals_held():
    """Ctrl-C and SIGTERM wait while the model is saved (a second one would delete the
    half-written file and lose the model); only the main thread can hold them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in held.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)


def _describe(update: TrainingUpdate, checkpoints: Checkpoints) -> str:
    text = f"step {update.step}/{update.total}, loss {update.loss:.4f}"
    if update.member is not None:
        text = f"network {update.member[0]} of {update.member[1]}: " + text
    if update.held_out is not None and update.held_out.dice == update.held_out.dice:
        text += f", held-out Dice {update.held_out.dice:.3f}"
    if checkpoints.failed:
        text += f" (no checkpoint: {checkpoints.failed})"
    return text


def train_feature(volume: np.ndarray, voxel_size: float, boxes: list[Box], feature: str,
                  settings: TrainingSettings = TrainingSettings(),
                  preprocess: PreprocessSettings | None = None,
                  start_from: TrainedModel | None = None,
                  output: str | os.PathLike | None = None, overwrite: bool = True,
                  colour: str | None = None,
                  preview_z: int | Callable[[], int] | None = None) -> Job[TrainedModel]:
    """The trained model, saved at ``output``; progress payloads are ``TrainingUpdate``s.

    Cancelling ends training early: the best weights so far are kept and
    saved, as when training stops by itself (beside an earlier model, as
    ``NAME.stopped.pt``, when no held-out check chose them yet). While it runs,
    the best weights so far are written to ``NAME.checkpoint.pt`` every minute,
    so a kill keeps them (``jobs.checkpoints``). A model file
    replaced at ``output`` is kept as ``NAME.previous.pt``. A model continued from
    ``start_from`` keeps that model's preprocessing, step count and history.
    """
    check_boxes(boxes, feature)
    own = [b for b in boxes if b.feature == feature]
    if start_from is not None:
        check_continuable(start_from, voxel_size, preprocess)
        preprocess = start_from.preprocess
    elif preprocess is None:
        preprocess = default_preprocessing(voxel_size, own[0].size,
                                           architecture=settings.architecture, feature=feature)
    check_boxes_fit(own, volume.shape, preprocess.binning)
    if output is not None:
        output = Path(output)
        if output.exists() and not overwrite:
            raise FileExistsError(f"{output} exists; use --overwrite or another --output.")
        check_writable(output.parent)  # before training, not after
    model, checkpoints = None, Checkpoints(output)
    colour = colour or FEATURE_COLOURS.get(feature, "#f2c94c")
    updates = iter_train_members(volume, boxes, voxel_size, settings, preprocess,
                                 feature=feature, colour=colour, start_from=start_from,
                                 preview_z=preview_z)
    try:
        with closing(updates):
            for update in updates:
                model = update.model
                checkpoints.offer(update.best, update.snapshot)
                yield Progress(update.step, update.total, _describe(update, checkpoints),
                               payload=update)
    except (GeneratorExit, KeyboardInterrupt):  # cancelled, Ctrl-C or SIGTERM mid-step:
        if model is not None and output is not None:  # the best weights so far are worth keeping
            with _signals_held():
                _keep(model, output, stopped=True)
            checkpoints.discard()
        raise
    except Exception as exc:  # diverged, out of memory, a bug: the best weights still count
        if model is not None and output is not None:
            _keep_after_failure(model, output, exc, checkpoints)
        raise
    if model is None:
        raise InvalidSettingsError("training stopped before its first step.")
    if output is not None:
        with _signals_held():  # a time limit landing in the save must not lose the model
            _keep(model, output, stopped=False)
        checkpoints.discard()
    return model


def replaces_earlier(model: TrainedModel, earlier_exists: bool, stopped: bool) -> bool:
    """Whether a trained ``model`` takes the place of the feature's earlier one.

    Not when training was stopped before its first held-out check: those weights were
    never scored (threshold 0.5), and a Stop a few steps in replaced a good model with
    them, and a second such Stop overwrote the good model's backup too."""
    return not (stopped and earlier_exists and model.info.get("unchecked"))


def _keep(model: TrainedModel, output: Path, stopped: bool) -> Path:
    """Save ``model`` where it belongs: over ``output`` (the model it replaces kept as
    ``NAME.previous.pt``, only now that it is replaced; earlier ones as ``-2`` ... ``-5``),
    or beside it as ``NAME.stopped.pt`` when it must not replace it."""
    if not replaces_earlier(model, output.exists(), stopped):
        return save_model_or_rescue(model, stopped_model_file(output))
    if output.exists():  # the earlier ones move down a place (``MODEL_GENERATIONS`` kept)
        shift_previous_models(output)
    return save_model_or_rescue(model, output, backup=previous_model_file(output))


def _keep_after_failure(model: TrainedModel, output: Path, exc: Exception,
                        checkpoints: Checkpoints) -> None:
    """Save a failed run's best weights as ``NAME.stopped.pt`` (never over the earlier
    model) and name the file on ``exc`` (``kept_model``): a divergence or an out-of-memory
    preview an hour in lost the whole training. The first error stays the one reported;
    the run's checkpoint goes once the weights are kept."""
    try:
        with _signals_held():
            exc.kept_model = save_model_or_rescue(model, stopped_model_file(output))
        exc.add_note(f"the best weights so far are kept in {exc.kept_model}")  # a traceback
    except Exception as again:  # noqa: BLE001 - reported with the error that ended training
        rescued = getattr(again, "rescued", None)
        if rescued is not None:
            exc.kept_model = rescued
        else:
            exc.add_note(f"the best weights so far could not be kept: {again}")
        return
    try:
        checkpoints.discard()
    except OSError:  # the weights are kept; a checkpoint left over is harmless
        pass


def check_continuable(start_from: TrainedModel, voxel_size: float,
                      preprocess: PreprocessSettings | None) -> None:
    """A continued model keeps its binning, contrast and scale: other ones asked for were
    ignored without a word, and a tomogram of another voxel size taught the network at the
    wrong scale while the model was stamped with the new size."""
    if abs(float(voxel_size) - start_from.voxel_size) > 0.05 * start_from.voxel_size:
        raise InvalidSettingsError(
            f"the model to continue was trained at {start_from.voxel_size:g} A per voxel and "
            f"this tomogram has {float(voxel_size):g} A: continue it on a tomogram of its voxel "
            "size, or train a new model.")
    if preprocess is not None and preprocess.to_dict() != start_from.preprocess.to_dict():
        raise InvalidSettingsError(
            "the model to continue keeps its own preprocessing (binning "
            f"{start_from.preprocess.binning}, invert {start_from.preprocess.invert}); other "
            "binning or contrast is for a new model.")
