"""Layers are found by what they are, not by their name: a tag in ``layer.metadata``.

A user may rename any layer; the plugin still finds the probability map of
a feature, the boxes of a session or the picks to average. The tag is a
small dict under ``metadata["tomoseg_role"]``: ``{"role": ..., **attributes}``.
Roles: tomogram, truth, boxes, masks, probability, labels, picks, filaments, average,
class.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

from ..layer_data import ROLE_KEY as KEY


def tag(layer, role: str, **attributes) -> None:
    """Mark ``layer`` as ``role`` (e.g. probability, feature='membrane', tomogram='t1')."""
    layer.metadata[KEY] = tagged(role, **attributes)


def tagged(role: str, **attributes) -> dict:
    """The tag itself, e.g. for the metadata of a layer about to be added (listeners of the
    viewer's insertions then see what it is)."""
    return {"role": role, **{k: v for k, v in attributes.items() if v is not None}}


def tomogram_key(layer) -> str:
    """What ties a session's layers to their tomogram layer: an id kept in its metadata, not
    its name, which the user may change (renaming the tomogram duplicated every layer)."""
    return layer.metadata.setdefault("tomoseg_layer_id", uuid.uuid4().hex)


def tag_of(layer) -> dict:
    """The layer's tag ({} for a layer the plugin did not make)."""
    value = layer.metadata.get(KEY) if hasattr(layer, "metadata") else None
    return dict(value) if isinstance(value, dict) else {}


def has_role(layer, role: str, **attributes) -> bool:
    found = tag_of(layer)
    return found.get("role") == role and all(found.get(k) == v for k, v in attributes.items())


def layers_with(viewer, role: str, **attributes) -> Iterator:
    """The viewer's layers tagged ``role`` (and those attributes), bottom to top."""
    return (layer for layer in viewer.layers if has_role(layer, role, **attributes))


def find(viewer, role: str, **attributes):
    """The topmost layer tagged ``role`` with those attributes, or None."""
    found = list(layers_with(viewer, role, **attributes))
    return found[-1] if found else None


# A probability layer that does not hold a whole segmentation says why in its metadata, so
# that Pick refuses it: still being written, stopped part way, or a training preview.
FILLING = "tomoseg_filling"
INCOMPLETE = "tomoseg_incomplete"


def incomplete_reason(layer) -> str | None:
    """Why ``layer`` is not a finished map, or None."""
    metadata = getattr(layer, "metadata", {}) or {}
    if metadata.get(FILLING):
        return "is still being segmented: use it when it is done"
    return metadata.get(INCOMPLETE)
