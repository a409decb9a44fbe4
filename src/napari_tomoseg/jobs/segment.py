"""Segment a tomogram: every model's probability map streamed into its own MRC."""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InvalidSettingsError
from ..nn.fast_forward import PRECISIONS
from ..nn.inference import iter_segment
from ..nn.model_file import TrainedModel
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
                     options: SegmentOptions = SegmentOptions()) -> Job[dict[str, Path]]:
    """{feature: written map}. Progress counts slices over all models; its payload is
    ``(feature, SegmentProgress)`` with the slab just finished, for live display.

    Cancelling removes the map being written; maps already finished stay.
    """
    if len(models) != len(outputs):
        raise InvalidSettingsError("give one output file per model.")
    nz = volume.shape[0]
    total = nz * len(models)
    written: dict[str, Path] = {}
    for index, (model, output) in enumerate(zip(models, outputs)):
        slabs = iter_segment(volume, model, voxel_size, output, origin=origin,
                             batch_slices=options.batch_slices, dtype=options.dtype,
                             device=options.device, rescale=options.rescale,
                             overwrite=options.overwrite, precision=options.precision)
        with closing(slabs):
            for update in slabs:
                yield Progress(index * nz + update.done, total,
                               f"segmenting {model.feature}: {update.done}/{nz} slices",
                               payload=(model.feature, update))
        written[model.feature] = Path(output)
    return written
