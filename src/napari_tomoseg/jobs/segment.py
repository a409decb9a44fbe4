"""Segment a tomogram: every model's probability map streamed into its own MRC."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidSettingsError
from ..nn.fast_forward import PRECISIONS
from ..nn.inference import capped_batch, iter_segment, working_preprocess
from ..nn.model_file import TrainedModel
from ..preprocess import PreprocessSettings, Preprocessor, SharedSlices
from .progress import Job, Progress


@dataclass(frozen=True)
class SegmentOptions:
    """How maps are computed and stored; the same for every face."""

    dtype: str = "float16"  # or float32, uint8 (0-255)
    device: str = "auto"
    batch_slices: int = 4
    rescale: bool = True  # resample when the model was trained at another voxel size
    overwrite: bool = False
    precision: str = "auto"  # bfloat16 where the CPU has it; "float32": reproducible maps

    def __post_init__(self):
        if self.dtype not in ("float16", "float32", "uint8"):
            raise InvalidSettingsError(f"the map type must be float16, float32 or uint8, "
                                       f"not {self.dtype!r}.")
        if self.precision not in PRECISIONS:
            raise InvalidSettingsError(f"precision must be one of {', '.join(PRECISIONS)}, "
                                       f"not {self.precision!r}.")
        if self.batch_slices < 1:
            raise InvalidSettingsError("segment at least one slice per batch.")


def segment_tomogram(volume: np.ndarray, voxel_size: float, origin: tuple[float, float, float],
                     models: Sequence[TrainedModel], outputs: Sequence[str | os.PathLike],
                     options: SegmentOptions = SegmentOptions(),
                     tomogram: str | None = None) -> Job[dict[str, Path]]:
    """{feature: written map}, every model in one pass over the tomogram.

    The models advance slab by slab together, and models with the same
    preprocessing share it (``SharedSlices``): each slice is read, binned and
    filtered once, not once per feature, and all maps fill from the top down
    at the same pace. Progress counts slices over all models; its payload is
    ``(feature, SegmentProgress)`` with the slab just finished, for live
    display. Cancelling removes every map not yet finished. ``tomogram``: its name
    (rlnTomoName), kept in each map's header.
    """
    if len(models) != len(outputs):
        raise InvalidSettingsError("give one output file per model.")
    if not models:
        return {}
    if len({m.feature for m in models}) != len(models):
        raise InvalidSettingsError("give one model per feature.")
    if len({Path(o).resolve() for o in outputs}) != len(outputs):
        raise InvalidSettingsError("give each model its own output file.")
    nz = volume.shape[0]
    total = nz * len(models)
    settings = {m.feature: working_preprocess(m, voxel_size, options.rescale)[0] for m in models}
    shared = _shared_preprocessing(volume, models, settings, options.batch_slices)
    runs = [iter_segment(volume, model, voxel_size, output, origin=origin,
                         batch_slices=options.batch_slices, dtype=options.dtype,
                         device=options.device, rescale=options.rescale,
                         overwrite=options.overwrite, precision=options.precision,
                         preprocessor=shared.get(settings[model.feature]), tomogram=tomogram)
            for model, output in zip(models, outputs)]
    done = [0] * len(models)
    written: dict[str, Path] = {}
    try:
        while len(written) < len(models):
            for index, (model, slabs) in enumerate(zip(models, runs)):
                if model.feature in written:
                    continue
                update = next(slabs)
                done[index] = update.done
                if update.path is not None:
                    written[model.feature] = update.path
                yield Progress(sum(done), total,
                               f"segmenting {model.feature}: {update.done}/{nz} slices",
                               payload=(model.feature, update))
    finally:  # an unfinished map's partial file goes with its generator, whatever the others do
        errors = []
        for slabs in runs:
            try:
                slabs.close()
            except Exception as exc:  # noqa: BLE001 - close the rest first, then report
                errors.append(exc)
        if errors:
            raise errors[0]
    return {model.feature: written[model.feature] for model in models}


def _shared_preprocessing(volume: np.ndarray, models: Sequence[TrainedModel],
                          working: dict[str, PreprocessSettings],
                          batch_slices: int) -> dict[PreprocessSettings, SharedSlices]:
    """One cached preprocessing per settings that two or more models use.

    The cache holds what one step of all of them reads (a batch, as ``iter_segment``
    caps it, and the widest context) twice over; a model alone reads its slabs directly.
    """
    shared: dict[PreprocessSettings, SharedSlices] = {}
    for settings in set(working.values()):  # each model's, for this tomogram's voxel size
        users = [m for m in models if working[m.feature] == settings]
        if len(users) < 2:
            continue
        pre = Preprocessor(volume, settings)
        batch = capped_batch(batch_slices, pre.shape)
        context = max(getattr(m.network, "context", 0) for m in users)
        shared[settings] = SharedSlices(pre, keep=2 * (batch + 2 * context))
    return shared
