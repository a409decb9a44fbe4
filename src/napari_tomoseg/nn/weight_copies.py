"""Copies of a running training's weights for a checkpoint (``jobs.checkpoints``).

Made while the training waits at a step, so the copy holds exactly the weights that
step chose (held-out checks) or would keep (no checks); the training's own network
is never touched.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from functools import partial

import numpy as np

from .model_file import TrainedModel
from .validation import EarlyStopping


def best_so_far(model: TrainedModel, stopper: EarlyStopping | None, first_step: int,
                step: int) -> TrainedModel | None:
    """On a step whose check found new best weights, a copy of ``model`` with them and the
    threshold of the single prediction that chose them, for a checkpoint (a killed
    training keeps these); else None."""
    if stopper is None or stopper.best is None or stopper.best_step != step:
        return None
    network = copy.deepcopy(model.network)
    stopper.restore(network)
    best = stopper.best
    held = {"step": first_step + stopper.best_step, "loss": round(best.loss, 5),
            "dice": rounded(best.dice), "dice_at_threshold": rounded(best.dice_at_threshold),
            "threshold": best.threshold, "interval": None}
    return replace(model, network=network, history=list(model.history), threshold=best.threshold,
                   info={**model.info, "held_out": held, "checkpoint": True})


def live_copy(model: TrainedModel, step_once) -> TrainedModel:
    """A copy of ``model`` with the weights a training without held-out checks keeps (the
    last, or their average), for a checkpoint. ``step_once`` is the training's step
    (``training._Step``), which holds the weight average."""
    network = copy.deepcopy(model.network)
    averaged = step_once.averaged is not None and step_once.done > 0
    if averaged:
        network.load_state_dict(step_once.kept(step_once.done).state_dict())
    network.eval()
    info = {**model.info, "checkpoint": True, **({"averaged": True} if averaged else {})}
    return replace(model, network=network, history=list(model.history), info=info)


def live_copier(model: TrainedModel, stopper: EarlyStopping | None,
                step_once) -> Callable[[], TrainedModel] | None:
    """``live_copy`` on demand for a training without held-out checks (with them, the
    checks' best weights are checkpointed instead: None)."""
    return partial(live_copy, model, step_once) if stopper is None else None


def rounded(value: float, digits: int = 4) -> float | None:
    return round(value, digits) if np.isfinite(value) else None
