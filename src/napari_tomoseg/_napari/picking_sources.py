"""What the Pick tab picks from: which layers are probability maps, their calibrated
threshold, and the pick job it starts, which refuses a tomogram passed off as a map.

Kept apart from the widget so that the widget holds only its controls and their wiring.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from napari.layers import Image

from ..errors import InvalidVolumeError, TomosegError
from ..io.particles import TomogramFrame
from ..layer_data import clean_tomo_name, frame_from_metadata
from ..jobs.pick import pick_job
from ..jobs.progress import Job, Progress
from ..picking import PickSettings, less_round_text, too_many_dropped
from .layer_tags import has_role, incomplete_reason, tag_of, tomogram_key


def is_probability(layer) -> bool:
    """Tagged ``probability``, or an older map that carries its calibrated threshold."""
    return (isinstance(layer, Image) and layer.ndim == 3
            and (has_role(layer, "probability") or "threshold" in layer.metadata))


def check_chosen_map(layer, doing: str, verb: str) -> None:
    """A finished probability map is chosen, or a message says what to do (``doing``:
    'picking'; ``verb``: 'pick')."""
    if layer is None:
        raise TomosegError("open or compute a probability map first (Segment, or open a "
                           f"probability MRC): {doing} needs one.")
    why = incomplete_reason(layer)
    if why:
        raise TomosegError(f"'{layer.name}' {why}.")
    if not is_probability(layer):
        raise TomosegError(f"'{layer.name}' is not a probability map: {verb} from a map that "
                           "Segment computed or a probability MRC, not from a tomogram.")


def stored_threshold(layer) -> float | None:
    """A map's calibrated threshold: its metadata, else its MRC header, else None."""
    stored = layer.metadata.get("threshold")
    if stored is None and (layer.metadata.get("tomoseg") or {}).get("path"):
        from ..io.probability_header import stored_threshold as header_threshold

        stored = header_threshold(layer.metadata["tomoseg"]["path"])
    return None if stored is None else float(stored)


def checked_pick(probability, frame: TomogramFrame, settings: PickSettings,
                 feature: str, exclude: np.ndarray | None = None) -> Job[pd.DataFrame]:
    """``pick_job`` after refusing values no probability map holds (a tomogram's, say)."""
    yield Progress(0, 1, "checking the map")
    low, high = float(np.min(probability)), float(np.max(probability))
    if low < -1e-3 or high > 255.0:
        raise InvalidVolumeError(f"the {feature} map holds values from {low:.3g} to {high:.3g}: "
                                 "a probability map holds 0-1 (or 0-255); is it a tomogram?")
    return (yield from pick_job(probability, frame, settings, feature, exclude=exclude))


def shape_note(attrs: dict, kept: int) -> str:
    """What the shape tests dropped, with advice when the absolute one dropped many (as
    ``pick`` warns); the relative cut's drops are counted apart, without advice."""
    flat, less_round = attrs.get("flat_or_long", 0), attrs.get("less_round", 0)
    parts = [less_round_text(less_round)] if less_round else []
    if flat:
        advice = (": check the diameter, or set Min roundness to 0 for an elongated particle"
                  if too_many_dropped(flat, kept) else "")
        parts.insert(0, f"{flat} flat or long peaks dropped{advice}")
    return f" ({'; '.join(parts)})" if parts else ""


def source_frame(viewer, layer) -> TomogramFrame:
    """The tomogram the probability map belongs to: its name is the file stem, never
    a layer name such as 'prediction: ribosome'; its tilt-series pixel size if known."""
    shape = tuple(layer.data.shape)
    key = tag_of(layer).get("tomogram")  # a dock's map names its tomogram: only that one,
    others = [o for o in reversed(list(viewer.layers))  # not another of its shape
              if o._type_string == "image" and o is not layer
              and (not key or tomogram_key(o) == key)]
    frames = [frame_from_metadata(layer.metadata)]
    frames += [frame_from_metadata(other.metadata) for other in others]
    if key and frames[0] is None and not others:
        raise TomosegError(f"the tomogram '{layer.name}' was made from is no longer open: "
                           "open it again to pick (the picks take its name and geometry).")
    for frame in frames:
        if frame is not None and tuple(frame.shape) == shape:
            return frame
    return TomogramFrame(clean_tomo_name(layer.name), shape, float(layer.scale[-1]),
                         tuple(layer.translate))


def snapshot(data):
    """A copy of a map held in memory (Segment or a training preview may write into it while
    Pick reads); a map on disk (memory-mapped, dask) is read as it is, never all at once."""
    if isinstance(data, np.ndarray) and not isinstance(data, np.memmap):
        return data.copy()
    return data
