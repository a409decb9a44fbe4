"""Model files: weights plus everything needed to use them correctly.

One file written by ``torch.save`` holding only tensors, strings and
numbers, read back with ``torch.load(weights_only=True)``: loading never
runs code from the file. The metadata (JSON text) carries architecture,
its parameters, preprocessing, voxel size, box size, feature name and
colour, training history and the package version. A SHA-256 of the
weights is stored beside them and checked on load, so flipped bytes are
an error instead of a model that silently segments differently; a model
with NaN weights is never written.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .. import __version__
from ..errors import (InvalidModelError, NonFiniteError, OutputNotWritableError, TomosegError,
                      os_reason)
from ..io.atomic import atomic_path
from ..io.mrc import VOXEL_SIZE_RANGE, sane_voxel_size
from ..io.paths import safe_name
from ..preprocess import PreprocessSettings
from .models import EDGES, build_model

FORMAT = "napari-tomoseg-model"
# 2: calibrated threshold and preprocessing mode (1 is read as 0.5, slices);
# 3: U-Net predictions averaged over quarter turns ("rotations"; 2 and 1 are read as 1)
# 4: orientations trained on ("symmetry" wedge or rewedge; without it, and in 3 and before,
# "any")
# 5: an ensemble of networks trained apart ("members"; without it, and before, one network)
# 6: slices' sides mirrored when segmenting ("edge" mirror; without it, and before, "zeros")
FORMAT_VERSION = 6
READABLE_VERSIONS = (1, 2, 3, 4, 5, 6)


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
    threshold: float = 0.5  # chosen on held-out labelled pixels when trained (calibration)

    def metadata(self) -> dict:
        # "any" is what a file without "symmetry" means: left out, with format 3, older
        # versions still read the file
        # what the network does at a slice's sides, whatever the parameters it was built from
        edge = {"edge": self.network.edge} if hasattr(self.network, "edge") else {}
        parameters = {k: v for k, v in {**self.parameters, **edge}.items()
                      if (k, v) not in (("symmetry", "any"), ("members", 1), ("edge", "zeros"))}
        version = (6 if "edge" in parameters else 5 if "members" in parameters
                   else 4 if "symmetry" in parameters else 3)
        return {"format": FORMAT, "format_version": version, "package_version": __version__,
                "architecture": self.architecture, "parameters": parameters,
                "preprocess": self.preprocess.to_dict(), "voxel_size": self.voxel_size,
                "box_size": self.box_size, "feature": self.feature, "colour": self.colour,
                "history": self.history, "info": self.info, "threshold": self.threshold,
                "torch_version": torch.__version__}


def weights_digest(state: dict) -> str:
    """SHA-256 of the weights: names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _check_finite_weights(state: dict, what: str, outcome: str = "it was not saved") -> None:
    bad = sum(int((~torch.isfinite(t)).sum()) for t in state.values() if t.is_floating_point())
    if bad:
        raise NonFiniteError(
            f"{what} has {bad:,} NaN or infinite weights (training diverged); {outcome}. "
            "Check the tomogram for NaN voxels or lower the learning rate.")


def save_model(model: TrainedModel, path: str | os.PathLike,
               backup: str | os.PathLike | None = None) -> Path:
    """Write ``model`` atomically; with ``backup`` the file it replaces is kept there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.network.state_dict().items()}
    _check_finite_weights(state, f"the '{model.feature}' network")
    payload = {"format": FORMAT, "metadata": json.dumps(model.metadata()), "state_dict": state,
               "weights_sha256": weights_digest(state)}
    with atomic_path(path, backup=backup) as tmp:
        torch.save(payload, tmp)
    return path


def rescue_folder() -> Path:
    """Where a trained model goes when its own output cannot be written."""
    return Path(tempfile.gettempdir()) / "tomoseg-rescued-models"


def save_model_or_rescue(model: TrainedModel, path: str | os.PathLike,
                         backup: str | os.PathLike | None = None) -> Path:
    """Save ``model`` at ``path``; if that write fails, keep it in ``rescue_folder()``.

    A full disk or a read-only folder after an hour of training must not
    lose the network: the error names the file that holds it.
    """
    path = Path(path)
    try:
        return save_model(model, path, backup=backup)
    except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as RuntimeError
        reason = os_reason(exc) if isinstance(exc, OSError) else _first_line(exc)
        rescue = rescue_folder() / f"{os.getpid()}-{safe_name(path.name, 'model.tomoseg.pt')}"
        try:
            save_model(model, rescue)
        except (OSError, RuntimeError) as again:
            raise OutputNotWritableError(
                f"could not write {path} ({reason}) nor the fallback {rescue} "
                f"({_first_line(again)}); the trained model is lost.") from exc
        error = OutputNotWritableError(
            f"could not write {path} ({reason}); the trained model was saved to {rescue} "
            "instead: move it where you want it.")
        error.rescued = rescue  # the model is safe there: a GUI may keep using it
        raise error from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0][:200] if text else type(exc).__name__)


def _read_payload(path: Path) -> dict:
    if not path.exists():
        raise InvalidModelError(f"model file {path} does not exist.")
    if path.is_dir():
        raise InvalidModelError(f"{path} is a folder, not a model file.")
    if path.stat().st_size == 0:
        raise InvalidModelError(f"{path.name} is empty (0 bytes): not a model file.")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip errors, unpickling refusals, truncation
        # torch's refusal, cut at 200 characters, read as advice to load with weights_only off
        why = ("it holds Python objects besides weights, which are never loaded (they could "
               "run code)" if "weights only load failed" in str(exc).lower()
               else _first_line(exc))
        raise InvalidModelError(
            f"{path.name} is not a readable napari-tomoseg model (corrupt, truncated or not a "
            f"model file): {why}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise InvalidModelError(f"{path.name} is a torch file but not a napari-tomoseg model.")
    return payload


def _check_weights(path: Path, payload: dict) -> None:
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidModelError(f"{path.name} holds no weights.")
    stored = payload.get("weights_sha256")
    if stored is None:
        warnings.warn(f"{path.name} has no weights checksum (written by an older napari-tomoseg), "
                      "so corruption cannot be detected; save it again to add one.", stacklevel=3)
    elif stored != weights_digest(state):
        raise InvalidModelError(
            f"{path.name} is corrupt: its weights do not match the checksum stored with them. "
            "Use a backup copy or retrain.")
    try:
        _check_finite_weights(state, path.name, "it cannot be used")
    except NonFiniteError as exc:
        raise InvalidModelError(str(exc)) from None


def _checked_metadata(path: Path, payload: dict) -> dict:
    """The metadata with every field checked; names from the file made path-safe."""
    try:
        meta = json.loads(payload["metadata"])
    except (KeyError, ValueError, TypeError) as exc:
        raise InvalidModelError(f"{path.name} has no readable metadata.") from exc
    if not isinstance(meta, dict):
        raise InvalidModelError(f"{path.name} has no readable metadata.")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise InvalidModelError(
            f"{path.name} was written by napari-tomoseg {meta.get('package_version', '?')} in model "
            f"format {version}; this version ({__version__}) reads formats {READABLE_VERSIONS}. "
            "Retrain the model or use a matching napari-tomoseg.")
    voxel = meta.get("voxel_size")
    if isinstance(voxel, bool) or not isinstance(voxel, (int, float)) or not sane_voxel_size(voxel):
        low, high = VOXEL_SIZE_RANGE
        raise InvalidModelError(f"{path.name} has no usable voxel size in its metadata "
                                f"({voxel!r}; it must lie between {low:g} and {high:g} A).")
    box = meta.get("box_size")
    if isinstance(box, bool) or not isinstance(box, int) or box < 1:
        raise InvalidModelError(f"{path.name} has no usable box size in its metadata ({box!r}).")
    if not isinstance(meta.get("architecture"), str) or not isinstance(meta.get("parameters"), dict):
        raise InvalidModelError(f"{path.name} does not say which network it holds.")
    try:
        meta["preprocess"] = PreprocessSettings(**meta.get("preprocess", {}))
    except (TypeError, TomosegError) as exc:
        raise InvalidModelError(f"{path.name} has unusable preprocessing settings "
                                f"({_first_line(exc)}).") from exc
    edge = meta["parameters"].get("edge", "zeros")
    if edge not in EDGES:  # else read as weights that do not fit
        raise InvalidModelError(f"{path.name} says its network sees {edge!r} beyond a slice's "
                                f"sides; this version knows {' and '.join(EDGES)}.")
    meta["feature"] = safe_name(meta.get("feature", "feature"))
    threshold = meta.get("threshold", 0.5)  # files from before calibration: 0.5
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) \
            or not 0 < threshold < 1:
        raise InvalidModelError(f"{path.name} has an unusable threshold ({threshold!r}); "
                                "it must lie between 0 and 1.")
    colour = meta.get("colour")
    meta["colour"] = colour if isinstance(colour, str) and len(colour) < 32 else "#f2c94c"
    return meta


def load_model(path: str | os.PathLike, device: torch.device | str = "cpu") -> TrainedModel:
    path = Path(path)
    payload = _read_payload(path)
    meta = _checked_metadata(path, payload)
    _check_weights(path, payload)
    try:
        # files from before averaged rotations were calibrated on single predictions, files
        # from before the tilt axis was kept were trained on tiles turned any way, files
        # without "edge" saw zeros beyond a slice (their maps stay what they were)
        meta["parameters"] = {"edge": "zeros", **meta["parameters"]}
        network = build_model(meta["architecture"],
                              {"rotations": 1, "symmetry": "any", **meta["parameters"]})
        network.load_state_dict(payload["state_dict"])
    except (KeyError, RuntimeError, TypeError, ValueError, TomosegError) as exc:
        raise InvalidModelError(
            f"{path.name}: the weights do not fit the '{meta.get('architecture')}' network "
            f"({_first_line(exc)}).") from exc
    network.to(device).eval()
    history = meta.get("history")
    info = meta.get("info")
    return TrainedModel(network=network, architecture=meta["architecture"],
                        parameters=meta["parameters"], preprocess=meta["preprocess"],
                        voxel_size=float(meta["voxel_size"]), box_size=int(meta["box_size"]),
                        feature=meta["feature"], colour=meta["colour"],
                        history=history if isinstance(history, list) else [],
                        info=info if isinstance(info, dict) else {},
                        threshold=float(meta["threshold"] if "threshold" in meta else 0.5))
