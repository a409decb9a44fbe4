"""Sample-data contributions: a synthetic cell with its truth, and a real bacterium."""

from __future__ import annotations

import json

from ..layer_data import ROLE_KEY, frame_from_metadata, points_layer, volume_layer
from ..sample_files import MYCOPLASMA, SYNTHETIC, sample_path
from ..features import FEATURES


def synthetic_cell() -> list:
    """The shipped synthetic tomogram, its ground-truth labels and ribosome positions.

    The truth layers are there, tagged ``truth``, but hidden.
    """
    tomogram = sample_path(SYNTHETIC)
    folder = tomogram.parent
    manifest = json.loads((folder / "synthetic_cell.json").read_text())
    image = volume_layer(tomogram)
    layers = [image]
    for feature in FEATURES:
        data, kwargs, kind = volume_layer(folder / manifest["features"][feature]["file"])
        # hidden: the truth is for checking, not for looking at while annotating
        kwargs.update(name=f"truth: {feature}", visible=False, opacity=0.5)
        kwargs["metadata"][ROLE_KEY] = {"role": "truth", "feature": feature}
        layers.append((data, kwargs, kind))
    frame = frame_from_metadata(image[1]["metadata"])
    data, kwargs, kind = points_layer(folder / manifest["files"]["particles"], frame=frame)
    kwargs["name"] = "truth: ribosome centres"
    kwargs["visible"] = False
    kwargs["metadata"][ROLE_KEY] = {"role": "truth", "feature": "ribosome"}
    layers.append((data, kwargs, kind))
    return layers


def mycoplasma_cell() -> list:
    """Mycoplasma pneumoniae (EMPIAR-10499), reconstructed by WBP at 20 A/voxel."""
    data, kwargs, kind = volume_layer(sample_path(MYCOPLASMA))
    kwargs["name"] = "M. pneumoniae (EMPIAR-10499)"
    return [(data, kwargs, kind)]
