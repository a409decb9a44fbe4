"""Training an ensemble (``TrainingSettings.members``): its networks one after another.

Each member is an ordinary training (``iter_train``) with its own seed (initial
weights, batches, augmentation) and early stopping; all hold out the same quadrant
of each box, so the ensemble's threshold is then chosen on pixels no member trained
on. The updates are the members' own, counted over the whole ensemble; their model is
the ensemble of the members so far, so a cancel keeps every finished member and the
best weights of the one in training. A continued ensemble continues each member.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace

import numpy as np

from ..annotations import Box
from ..errors import InvalidSettingsError
from ..preprocess import PreprocessSettings, Preprocessor, default_preprocessing
from .devices import pick_device
from .ensemble import Ensemble, members_of
from .model_file import TrainedModel
from .tiles import tile_bank_for
from .training import TrainingSettings, TrainingUpdate, iter_train
from .validation import score_held_out
from .weight_copies import rounded


def iter_train_members(volume: np.ndarray, boxes: list[Box], voxel_size: float,
                       settings: TrainingSettings = TrainingSettings(),
                       preprocess: PreprocessSettings | None = None,
                       start_from: TrainedModel | None = None,
                       **kwargs) -> Iterator[TrainingUpdate]:
    """``iter_train`` for ``settings.members`` networks (one: exactly ``iter_train``)."""
    continued = members_of(start_from.network) if start_from is not None else None
    count = len(continued) if continued else settings.members
    if start_from is not None and settings.members not in (1, count):
        raise InvalidSettingsError(f"the model to continue holds {len(continued or [0])} "
                                   f"network(s); it continues with them, not {settings.members}.")
    if count == 1:
        yield from iter_train(volume, boxes, voxel_size, settings, preprocess,
                              start_from=start_from, **kwargs)
        return
    if start_from is not None:
        preprocess = start_from.preprocess
    elif preprocess is None:
        preprocess = default_preprocessing(voxel_size, boxes[0].size,
                                           architecture=settings.architecture)
    kwargs["preprocessor"] = kwargs.get("preprocessor") or Preprocessor(volume, preprocess)
    done: list[TrainedModel] = []
    now: list[TrainedModel] = []  # the members of the model last yielded
    shown, last = None, None
    try:
        for k in range(count):
            member = replace(settings, seed=settings.seed + k, holdout_seed=settings.split_seed,
                             members=1)
            updates = iter_train(volume, boxes, voxel_size, member, preprocess,
                                 start_from=_member(start_from, continued, k), **kwargs)
            with closing(updates):
                for last in updates:
                    now, shown = done + [last.model], _ensemble(done + [last.model])
                    yield replace(last, step=k * settings.steps + last.step,
                                  total=count * settings.steps, model=shown,
                                  best=_ensemble(done) if last.step == 1 and done else None,
                                  snapshot=None, member=(k + 1, count))
            if len(now) == len(done):  # stopped before this member's first step
                break
            done = now
        if last is None:
            return
        final = _calibrated(_ensemble(done), boxes, settings, kwargs["preprocessor"])
        yield replace(last, step=count * settings.steps, total=count * settings.steps,
                      model=final, best=final, member=(len(done), count), preview=None)
    finally:  # cancelled mid-member: that member has its best weights by now (iter_train)
        if shown is not None and len(now) > len(done) and len(now) > 1:
            settled = _ensemble(done if now[-1].info.get("unchecked") else now)
            for name in ("network", "parameters", "history", "info", "threshold"):
                setattr(shown, name, getattr(settled, name))  # the object a cancel keeps


def _member(start_from: TrainedModel | None, continued, k: int) -> TrainedModel | None:
    if start_from is None:
        return None
    parameters = {key: v for key, v in start_from.parameters.items() if key != "members"}
    infos = start_from.info.get("members") or [{}] * len(continued)
    return replace(start_from, network=continued[k], parameters=parameters, history=[],
                   info=dict(infos[k]))


def _ensemble(models: list[TrainedModel]) -> TrainedModel:
    """The members as one model; its threshold the mean of theirs until it is calibrated."""
    if len(models) == 1:
        return models[0]
    first = models[0]
    info = {key: v for key, v in first.info.items() if key not in ("held_out", "unchecked")}
    return replace(first, network=Ensemble([m.network for m in models]),
                   parameters={**first.parameters, "members": len(models)},
                   history=list(models[-1].history),
                   info={**info, "members": [m.info for m in models]},
                   threshold=float(np.mean([m.threshold for m in models])))


def _calibrated(model: TrainedModel, boxes: list[Box], settings: TrainingSettings,
                pre: Preprocessor) -> TrainedModel:
    """The ensemble's threshold chosen on the held-out quadrants all its members left out."""
    if not isinstance(model.network, Ensemble) or not settings.hold_out:
        return model
    own = [b for b in boxes if b.feature == model.feature]
    bank = tile_bank_for(model.network.members[0], pre, own, holdout=0.25,
                         seed=settings.split_seed)
    if not bank.has_holdout:
        return model
    final = score_held_out(model.network, bank, pick_device(settings.device))
    model.threshold = final.threshold
    model.info["held_out"] = {"dice": rounded(final.dice), "threshold": final.threshold,
                              "dice_at_threshold": rounded(final.dice_at_threshold),
                              "loss": round(final.loss, 5), "step": None,
                              "interval": ([round(v, 4) for v in final.interval]
                                           if final.interval else None)}
    return model
