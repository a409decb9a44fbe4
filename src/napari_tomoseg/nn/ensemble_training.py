"""Training an ensemble (``TrainingSettings.members``): its networks one after another.

Each member is an ordinary training (``iter_train``) with its own seed (initial
weights, batches, augmentation, held-out quadrants), early stopping and threshold: member
k is exactly the network ``--seed`` s + k trains alone. The ensemble's map is the mean of
theirs and its threshold the mean of theirs. The updates are the members' own, counted over the whole ensemble; their model is
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
from .ensemble import Ensemble, members_of
from .model_file import TrainedModel
from .training import TrainingSettings, TrainingUpdate, iter_train
from .weight_copies import rounded


def _resolved(settings: TrainingSettings, start_from: TrainedModel | None,
              continued: list | None, feature: str | None) -> TrainingSettings:
    """Members and patience settled: a continued model's own count, else the user's or the
    feature's default (three networks for ribosomes)."""
    if start_from is not None:
        count = len(continued) if continued else 1
        if settings.members not in (None, count):
            raise InvalidSettingsError(f"the model to continue holds {count} network(s); it "
                                       f"continues with them, not {settings.members} (leave "
                                       "the number of networks out).")
        # its own architecture (the widget's box may say another): patience and rate follow it
        settings = replace(settings, members=count, architecture=start_from.architecture)
    return settings.for_feature(feature)


def iter_train_members(volume: np.ndarray, boxes: list[Box], voxel_size: float,
                       settings: TrainingSettings = TrainingSettings(),
                       preprocess: PreprocessSettings | None = None,
                       start_from: TrainedModel | None = None,
                       **kwargs) -> Iterator[TrainingUpdate]:
    """``iter_train`` for ``settings.members`` networks (one: exactly ``iter_train``)."""
    continued = members_of(start_from.network) if start_from is not None else None
    feature = kwargs.get("feature") or (boxes[0].feature if boxes else None)
    settings = _resolved(settings, start_from, continued, feature)
    count = settings.members
    if count == 1:
        yield from iter_train(volume, boxes, voxel_size, settings, preprocess,
                              start_from=start_from, **kwargs)
        return
    if start_from is not None:
        preprocess = start_from.preprocess
    elif preprocess is None:
        own = [b for b in boxes if b.feature == feature]
        preprocess = default_preprocessing(voxel_size, (own or boxes)[0].size,
                                           architecture=settings.architecture, feature=feature)
    kwargs["preprocessor"] = kwargs.get("preprocessor") or Preprocessor(volume, preprocess)
    done: list[TrainedModel] = []
    now: list[TrainedModel] = []  # the members of the model last yielded
    shown, last, taken = None, None, 0
    try:
        for k in range(count):
            member = replace(settings, seed=settings.seed + k, members=1)
            updates = iter_train(volume, boxes, voxel_size, member, preprocess,
                                 start_from=_member(start_from, continued, k), **kwargs)
            with closing(updates):
                for last in updates:
                    if len(now) == len(done):  # the member's first step: its model object
                        now = done + [last.model]  # stays, so the ensemble is made once;
                        shown = _ensemble(now)  # a cancel or error settles it (finally)
                    yield replace(last, step=taken + last.step,
                                  total=taken + (count - k) * settings.steps, model=shown,
                                  best=_checkpointed(done, last), snapshot=_snapshot(done, last),
                                  member=(k + 1, count))
            if len(now) == len(done):  # stopped before this member's first step
                break
            done, taken = now, taken + last.step
        if last is None:
            return
        final = _ensemble(done)
        yield replace(last, step=taken, total=taken, model=final, best=None, snapshot=None,
                      member=(len(done), count), preview=None, held_out=None)
    finally:  # cancelled or failed mid-member: it has its best weights by now (iter_train)
        if shown is not None and len(now) > len(done) and len(now) > 1:
            kept = done if now[-1].info.get("unchecked") else now
            settled = _ensemble(kept)
            for name in ("network", "parameters", "history", "info", "threshold"):
                setattr(shown, name, getattr(settled, name))  # the object a cancel keeps


def _checkpointed(done: list[TrainedModel], update: TrainingUpdate) -> TrainedModel | None:
    """What to checkpoint: the finished members with the new best weights of the member in
    training (a copy, from ``iter_train``), or on its first step the finished ones alone."""
    if update.best is not None:
        return _ensemble(done + [update.best])
    return _ensemble(done) if update.step == 1 and done else None


def _snapshot(done: list[TrainedModel], update: TrainingUpdate):
    """Without held-out checks: the finished members with a copy of the current one."""
    if update.snapshot is None:
        return None
    return lambda: _ensemble(done + [update.snapshot()])


def _member(start_from: TrainedModel | None, continued, k: int) -> TrainedModel | None:
    """Member k of a continued ensemble, with its own history and info."""
    if start_from is None:
        return None
    parameters = {key: v for key, v in start_from.parameters.items() if key != "members"}
    infos = start_from.info.get("members") or [{}] * len(continued)
    info = dict(infos[k])
    history = info.pop("history", [])
    return replace(start_from, network=continued[k], parameters=parameters,
                   history=history if isinstance(history, list) else [], info=info)


def _ensemble(models: list[TrainedModel]) -> TrainedModel:
    """The members as one model, its threshold the mean of theirs. Each chose its own on its
    own held-out quadrants, as each stopped on them; one split for all, and a threshold chosen
    for the mean map there, did worse on the benchmark (docs/engine.md, Ensembles). Each
    member's history is kept in its info; the model's is that of all members; its held-out
    numbers are the means of the members'."""
    if len(models) == 1:
        return models[0]
    first = models[0]
    info = {key: v for key, v in first.info.items() if key not in ("held_out", "unchecked")}
    if isinstance(info.get("training"), dict):  # the ensemble's, not its first network's
        info["training"] = {**info["training"], "members": len(models)}
    members = [{**m.info, "history": m.history} for m in models]
    network = Ensemble([m.network for m in models])
    network.train(False)
    threshold = float(np.mean([m.threshold for m in models]))
    held = [m.info.get("held_out") or {} for m in models]
    if all(h.get("dice") is not None for h in held):
        info["held_out"] = {"dice": rounded(float(np.mean([h["dice"] for h in held]))),
                            "dice_at_threshold": rounded(float(np.mean(
                                [h.get("dice_at_threshold") or h["dice"] for h in held]))),
                            "threshold": threshold, "interval": None, "step": None,
                            "mean_of_members": True}
    return replace(first, network=network, parameters={**first.parameters,
                                                       "members": len(models)},
                   history=[point for m in models for point in m.history],
                   info={**info, "members": members}, threshold=threshold)
