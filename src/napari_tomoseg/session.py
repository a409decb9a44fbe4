"""The annotation session: features, boxes, masks and models of one tomogram, on disk.

Everything the user does is saved at once, atomically, into a session
folder (by default ``<tomogram>.tomoseg/`` beside the tomogram):
``session.json`` (tomogram path and fingerprint, voxel size, features
with colours, model files), ``boxes.json`` and ``masks.npz`` (see
``annotations``), ``models/<feature>.pt`` and segmentations. Reopening
the folder restores the session exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .annotations import Box, load_boxes, save_boxes
from .errors import TomosegError
from .synthetic.cell import FEATURE_COLOURS

SESSION_FILE = "session.json"
SESSION_SUFFIX = ".tomoseg"
_SPARE_COLOURS = ("#27ae60", "#f2994a", "#2f80ed", "#9b51e0", "#eb5757", "#56ccf2")


@dataclass
class Feature:
    name: str
    colour: str


def default_session_folder(tomogram: str | os.PathLike) -> Path:
    path = Path(tomogram)
    return path.with_name(path.name + SESSION_SUFFIX)


def fingerprint(path: str | os.PathLike) -> str:
    """Cheap identity of a tomogram file: size plus a hash of its first and last MiB."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha1(str(size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(2 ** 20))
        handle.seek(max(size - 2 ** 20, 0))
        digest.update(handle.read(2 ** 20))
    return digest.hexdigest()


@dataclass
class Session:
    folder: Path
    tomogram: str | None = None
    tomogram_fingerprint: str | None = None
    voxel_size: float = 1.0
    shape: tuple[int, int, int] | None = None
    features: list[Feature] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)  # feature -> file name in folder
    box_size: int = 64

    # features ----------------------------------------------------------
    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise TomosegError(f"there is no feature called '{name}'.")

    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def label_of(self, name: str) -> int:
        return self.feature_names().index(name) + 1

    def add_feature(self, name: str, colour: str | None = None) -> Feature:
        name = name.strip()
        if not name:
            raise TomosegError("a feature needs a name.")
        if name in self.feature_names():
            raise TomosegError(f"there is already a feature called '{name}'.")
        used = {f.colour for f in self.features}
        colour = colour or FEATURE_COLOURS.get(name) or next(
            (c for c in _SPARE_COLOURS if c not in used), "#ffffff")
        feature = Feature(name, colour)
        self.features.append(feature)
        self.save()
        return feature

    def rename_feature(self, old: str, new: str) -> None:
        new = new.strip()
        if new in self.feature_names():
            raise TomosegError(f"there is already a feature called '{new}'.")
        self.feature(old).name = new
        for box in self.boxes:
            if box.feature == old:
                box.feature = new
        if old in self.models:
            self.models[new] = self.models.pop(old)
        self.save()

    def recolour_feature(self, name: str, colour: str) -> None:
        self.feature(name).colour = colour
        self.save()

    def remove_feature(self, name: str) -> int:
        """Remove a feature and its boxes; returns how many boxes went with it."""
        feature = self.feature(name)
        removed = [b for b in self.boxes if b.feature == name]
        self.boxes = [b for b in self.boxes if b.feature != name]
        self.features.remove(feature)
        self.models.pop(name, None)
        self.save()
        return len(removed)

    # boxes ---------------------------------------------------------------
    def add_box(self, feature: str, z: int, y: float, x: float, positive: bool,
                size: int | None = None, mask: np.ndarray | None = None) -> Box:
        self.feature(feature)
        size = int(size or self.box_size)
        if self.shape is not None:
            nz, ny, nx = self.shape
            if not (0 <= z < nz and 0 <= y < ny and 0 <= x < nx):
                raise TomosegError(f"the box centre (z {z}, y {y:.0f}, x {x:.0f}) is outside the "
                                   f"tomogram ({nz} x {ny} x {nx}).")
        if positive and mask is None:
            mask = np.zeros((size, size), np.uint8)
        box = Box(feature, int(z), float(y), float(x), size, positive, mask)
        self.boxes.append(box)
        self.save()
        return box

    def box(self, box_id: str) -> Box:
        for box in self.boxes:
            if box.id == box_id:
                return box
        raise TomosegError(f"no box {box_id}.")

    def remove_boxes(self, ids) -> None:
        ids = set(ids)
        self.boxes = [b for b in self.boxes if b.id not in ids]
        self.save()

    def counts(self, feature: str) -> tuple[int, int]:
        chosen = [b for b in self.boxes if b.feature == feature]
        return sum(b.positive for b in chosen), sum(not b.positive for b in chosen)

    def boxes_of(self, feature: str) -> list[Box]:
        return [b for b in self.boxes if b.feature == feature]

    # models --------------------------------------------------------------
    def model_path(self, feature: str) -> Path:
        return self.folder / "models" / f"{_safe(feature)}.pt"

    def segmentation_path(self, feature: str) -> Path:
        return self.folder / "segmentations" / f"{_safe(feature)}.mrc"

    def register_model(self, feature: str) -> None:
        self.models[feature] = str(self.model_path(feature).relative_to(self.folder))
        self.save()

    # files ---------------------------------------------------------------
    def save(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        save_boxes(self.folder, self.boxes)
        record = {"version": 1, "tomogram": self.tomogram,
                  "tomogram_fingerprint": self.tomogram_fingerprint,
                  "voxel_size": self.voxel_size, "shape": list(self.shape) if self.shape else None,
                  "box_size": self.box_size,
                  "features": [{"name": f.name, "colour": f.colour} for f in self.features],
                  "models": self.models}
        path = self.folder / SESSION_FILE
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:6]}.partial")
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)

    @classmethod
    def create(cls, folder: str | os.PathLike, tomogram: str | None, voxel_size: float,
               shape: tuple[int, int, int], features=("membrane", "ribosome")) -> Session:
        session = cls(folder=Path(folder), tomogram=str(tomogram) if tomogram else None,
                      tomogram_fingerprint=fingerprint(tomogram) if tomogram and Path(tomogram).exists() else None,
                      voxel_size=float(voxel_size), shape=tuple(int(s) for s in shape))
        for name in features:
            session.features.append(Feature(name, FEATURE_COLOURS.get(name, "#ffffff")))
        session.save()
        return session

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Session:
        folder = Path(folder)
        path = folder / SESSION_FILE
        if not path.exists():
            raise TomosegError(f"{folder} is not a napari-tomoseg session (no {SESSION_FILE}).")
        try:
            record = json.loads(path.read_text())
        except ValueError as exc:
            raise TomosegError(f"{path} is damaged ({exc}).") from exc
        return cls(folder=folder, tomogram=record.get("tomogram"),
                   tomogram_fingerprint=record.get("tomogram_fingerprint"),
                   voxel_size=float(record.get("voxel_size", 1.0)),
                   shape=tuple(record["shape"]) if record.get("shape") else None,
                   features=[Feature(f["name"], f["colour"]) for f in record.get("features", [])],
                   boxes=load_boxes(folder), models=dict(record.get("models", {})),
                   box_size=int(record.get("box_size", 64)))

    def matches(self, tomogram: str | os.PathLike) -> bool:
        """True if ``tomogram`` is the file this session was made on."""
        return self.tomogram_fingerprint is None or fingerprint(tomogram) == self.tomogram_fingerprint


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
