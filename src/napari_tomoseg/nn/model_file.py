"""Model files: weights plus everything needed to use them correctly.

One file written by ``torch.save`` holding only tensors, strings and
numbers, read back with ``torch.load(weights_only=True)``: loading never
runs code from the file. The metadata (JSON text) carries architecture,
its parameters, preprocessing, voxel size, box size, feature name and
colour, training history and the package version.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..errors import TomosegError
from ..io.atomic import atomic_path
from ..preprocess import PreprocessSettings
from .models import build_model

FORMAT = "napari-tomoseg-model"
FORMAT_VERSION = 1


class InvalidModelError(TomosegError, ValueError):
    """A model file is corrupt, truncated, foreign or from an incompatible version."""


@dataclass
class TrainedModel:
    network: nn.Module
    architecture: str
    parameters: dict
    preprocess: PreprocessSettings
    voxel_size: float  # of the tomogram it was trained on, before binning
    box_size: int
    feature: str = "feature"
    colour: str = "#f2c94c"
    history: list = field(default_factory=list)  # [step, loss] pairs
    info: dict = field(default_factory=dict)

    def metadata(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "package_version": __version__,
                "architecture": self.architecture, "parameters": self.parameters,
                "preprocess": self.preprocess.to_dict(), "voxel_size": self.voxel_size,
                "box_size": self.box_size, "feature": self.feature, "colour": self.colour,
                "history": self.history, "info": self.info,
                "torch_version": torch.__version__}


def save_model(model: TrainedModel, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}
    payload = {"format": FORMAT, "metadata": json.dumps(model.metadata()), "state_dict": state}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> TrainedModel:
    path = Path(path)
    if not path.exists():
        raise InvalidModelError(f"model file {path} does not exist.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip errors, unpickling refusals, truncation
        raise InvalidModelError(
            f"{path.name} is not a readable napari-tomoseg model (corrupt, truncated or not a "
            f"model file): {str(exc).splitlines()[0][:200]}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InvalidModelError(f"{path.name} is a torch file but not a napari-tomoseg model.")
    try:
        meta = json.loads(payload["metadata"])
    except (KeyError, ValueError) as exc:
        raise InvalidModelError(f"{path.name} has no readable metadata.") from exc
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise InvalidModelError(
            f"{path.name} was written by napari-tomoseg {meta.get('package_version', '?')} in model "
            f"format {version}; this version ({__version__}) reads format {FORMAT_VERSION}. "
            "Retrain the model or use a matching napari-tomoseg.")
    try:
        network = build_model(meta["architecture"], meta["parameters"])
        network.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TomosegError) as exc:
        raise InvalidModelError(
            f"{path.name}: the weights do not fit the '{meta.get('architecture')}' network "
            f"({str(exc).splitlines()[0][:200]}).") from exc
    network.to(device).eval()
    return TrainedModel(network=network, architecture=meta["architecture"],
                        parameters=meta["parameters"],
                        preprocess=PreprocessSettings(**meta["preprocess"]),
                        voxel_size=float(meta["voxel_size"]), box_size=int(meta["box_size"]),
                        feature=meta.get("feature", "feature"), colour=meta.get("colour", "#f2c94c"),
                        history=meta.get("history", []), info=meta.get("info", {}))
