"""The annotation session: features, boxes, masks and models of one tomogram, on disk.

Everything the user does is saved at once into a session folder (by default
``<tomogram>.tomoseg/`` beside the tomogram): ``session.json`` (tomogram path and identity,
voxel size, features with colours, model files, boxes with their masks; one generation
written whole, the one before kept as backup, see ``session_store``), ``models/<feature>.pt``
and segmentations. Reopening the folder restores the session exactly. A session is never
deleted: ``session_open.open_session`` rebinds it to a tomogram whose header changed but
whose voxels did not, and starts a new folder beside it for a different tomogram.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import feature_files
from .annotations import Box
from .errors import TomosegError
from .feature_files import feature_file_stem
from .picks_store import rename_saved_picks
from .removed_boxes import rename_in_removals
from .tomogram_identity import data_checksum, file_checksum, fingerprint
from .session_store import (SESSION_FILE, clean_session_partials, generation_stamp, is_session,
                            read_generation, set_damaged_aside, write_generation)
from .features import FEATURE_COLOURS

SESSION_SUFFIX = ".tomoseg"
CONFLICT_FILE = "session.conflict.json"  # a copy's state that another save got ahead of
_SPARE_COLOURS = ("#27ae60", "#f2994a", "#2f80ed", "#9b51e0", "#eb5757", "#56ccf2")


@dataclass
class Feature:
    name: str
    colour: str


def user_sessions_folder() -> Path:
    """Sessions of tomograms whose own folder cannot hold one (read-only, bundled)."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("napari-tomoseg", appauthor=False)) / "sessions"


def default_session_folder(tomogram: str | os.PathLike) -> Path:
    """``NAME.tomoseg`` beside the tomogram; in the user's data folder when the tomogram
    is a bundled sample or its folder is read-only (never inside the installed package)."""
    from .sample_files import sample_folders

    path = Path(tomogram).resolve()
    bundled = any(folder.resolve() in path.parents for folder in sample_folders()
                  if folder.exists())
    if bundled or not os.access(path.parent, os.W_OK):
        return user_sessions_folder() / (path.name + SESSION_SUFFIX)
    return path.with_name(path.name + SESSION_SUFFIX)


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
    data_checksum: str | None = None  # of the voxels, see ``data_checksum``
    origin: tuple[float, float, float] | None = None  # header origin (z, y, x), Angstrom
    note: str | None = None  # what restoring had to do (a backup used), for the user
    damaged: bool = False  # the current file is damaged: set it aside at the next save
    # RELION's rlnTomoTiltSeriesPixelSize (unbinned tilt series, Angstrom): the header
    # does not carry it, so it is remembered here once the user gives it; None = unknown
    tilt_series_pixel_size: float | None = None
    training: list[str] = field(default_factory=list)  # features whose training has not reported
    # thresholds the user set by hand (the models' calibrated ones otherwise): kept across
    # restores, dropped when the feature's next model brings its own
    thresholds: dict[str, float] = field(default_factory=dict)
    active: str | None = None  # the feature last worked on, written with the next change
    # the session.json this copy read or wrote last (another's save since is never
    # overwritten: the last writer won, losing the other's boxes); where this copy goes then
    written: tuple | None = field(default=None, repr=False, compare=False)
    conflict: str | None = field(default=None, repr=False, compare=False)

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
        self._check_new_name(name)
        used = {f.colour for f in self.features}
        colour = colour or FEATURE_COLOURS.get(name) or next(
            (c for c in _SPARE_COLOURS if c not in used), "#ffffff")
        feature = Feature(name, colour)
        self.features.append(feature)
        self.save()
        return feature

    def _check_new_name(self, name: str, ignore: str | None = None) -> None:
        """Refuse a name taken, or one whose files would be another feature's: model and map
        file names keep letters, digits, - and _ (and a Mac's disk ignores case)."""
        if not name:
            raise TomosegError("a feature needs a name.")
        for other in self.feature_names():
            if other == ignore:
                continue
            if other == name:
                raise TomosegError(f"there is already a feature called '{name}'.")
            if feature_file_stem(other).lower() == feature_file_stem(name).lower():
                raise TomosegError(f"'{name}' would share its model and map files with "
                                   f"'{other}' (both {feature_file_stem(name)}); choose another name.")

    def rename_feature(self, old: str, new: str) -> None:
        new = new.strip()
        self._check_new_name(new, ignore=old)
        self.feature(old)
        self.check_current()  # before any file moves
        # the files first (a failed move puts its files back and changes nothing): under
        # the old name a new feature would take them for its own
        moved = feature_files.move_files(self.folder, old, new)
        before = self._state()
        self.feature(old).name = new
        for box in self.boxes:
            if box.feature == old:
                box.feature = new
        for named in (self.models, self.thresholds):
            if old in named:
                named[new] = named.pop(old)
        self.training = [new if f == old else f for f in self.training]
        self.active = new if self.active == old else self.active
        if new in self.models and self.folder / self.models[new] == self.model_path(old):
            self.models[new] = self._relative(self.model_path(new))
        with self._undone_on_failure(before, moved):
            self.save()
        rename_saved_picks(self.folder, old, new)
        rename_in_removals(self.folder, old, new)

    def _state(self) -> dict:
        """What a feature's rename or removal changes in memory, to undo it."""
        return {"features": list(self.features), "labels": [f.name for f in self.features],
                "boxes": list(self.boxes), "names": [b.feature for b in self.boxes],
                "models": dict(self.models), "thresholds": dict(self.thresholds),
                "training": list(self.training), "active": self.active}

    @contextlib.contextmanager
    def _undone_on_failure(self, before: dict, moved: list[tuple[Path, Path]]):
        """A save that fails after a feature's files moved puts them and the session back
        (the restore looked for files under names that no longer existed)."""
        try:
            yield
        except BaseException:
            for source, target in reversed(moved):
                with contextlib.suppress(OSError):
                    os.replace(target, source)
            self.features, self.boxes = before["features"], before["boxes"]
            for feature, name in zip(self.features, before["labels"]):
                feature.name = name
            for box, name in zip(self.boxes, before["names"]):
                box.feature = name
            self.models, self.thresholds = before["models"], before["thresholds"]
            self.training, self.active = before["training"], before["active"]
            raise

    def recolour_feature(self, name: str, colour: str) -> None:
        self.feature(name).colour = colour
        self.save()

    def remove_feature(self, name: str) -> tuple[int, Path | None]:
        """Remove a feature and its boxes: (how many boxes went with it, the folder its
        boxes and files were set aside in, or None when it had neither).

        Nothing is deleted. The boxes and masks are work: they are kept in that folder as a
        session of this feature alone (open it, or ``train --boxes`` it); before, they went
        with the next two saves."""
        feature = self.feature(name)
        self.check_current()  # before any file moves
        removed = [b for b in self.boxes if b.feature == name]
        target = feature_files.aside_folder(self.folder, name)
        if removed:
            target.mkdir(parents=True)
            write_generation(target, dict(self.record(), features=[
                {"name": feature.name, "colour": feature.colour}], models={}, training=[],
                thresholds={}, active=name), removed, keep_previous=False)
        # the files next: if they cannot be moved, the feature stays (a new one of this
        # name would take them for its own)
        files = feature_files.files_of(self.folder, name)
        aside = feature_files.set_aside(self.folder, name, target=target) or (
            target if removed else None)
        before = self._state()
        self.boxes = [b for b in self.boxes if b.feature != name]
        self.features.remove(feature)
        self.models.pop(name, None)
        self.thresholds.pop(name, None)
        self.training = [f for f in self.training if f != name]
        if self.active == name:  # the first feature left takes its place
            self.active = self.features[0].name if self.features else None
        moved = [(f, target / f.relative_to(self.folder)) for f in files] if files else []
        with self._undone_on_failure(before, moved):
            self.save()
        return len(removed), aside

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
        return feature_files.model_file(self.folder, feature)

    def segmentation_path(self, feature: str) -> Path:
        return feature_files.map_file(self.folder, feature)

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self.folder))

    def register_model(self, feature: str, fresh: bool = True) -> None:
        """Record the feature's model file; a ``fresh`` model brings its calibrated threshold
        (not one set by hand for the one before; a renamed feature keeps it)."""
        self.models[feature] = self._relative(self.model_path(feature))
        if fresh:
            self.thresholds.pop(feature, None)
        self.end_training(feature)

    def begin_training(self, feature: str) -> None:
        """Noted before a training starts: its model may reach disk with no one to record it."""
        if feature not in self.training:
            self.training.append(feature)
        self.save()

    def end_training(self, feature: str) -> None:
        """The training reported back (its model recorded, or none kept)."""
        self.training = [f for f in self.training if f != feature]
        self.save()

    def adopt_saved_models(self) -> list[str]:
        """Features whose training saved a model but never reported back.

        Training saves the model, then the dock records it; a viewer closed (or a crash) in
        between left a model a restore did not know. Only trainings begun and not ended
        count: a model file of a removed or renamed feature is never taken for a new one's.
        """
        names = set(self.feature_names())
        adopted = [f for f in self.training if f in names and self.model_path(f).is_file()]
        for name in adopted:
            if name not in self.models:  # a new model; a registered one may be the same file
                self.thresholds.pop(name, None)
            self.models[name] = self._relative(self.model_path(name))
        if self.training:
            self.training = []
            self.save()
        return adopted

    # files ---------------------------------------------------------------
    def record(self) -> dict:
        return {"tomogram": self.tomogram, "tomogram_fingerprint": self.tomogram_fingerprint,
                "data_checksum": self.data_checksum,
                "origin": list(self.origin) if self.origin is not None else None,
                "voxel_size": self.voxel_size, "shape": list(self.shape) if self.shape else None,
                "box_size": self.box_size, "tilt_series_pixel_size": self.tilt_series_pixel_size,
                "features": [{"name": f.name, "colour": f.colour} for f in self.features],
                "models": self.models, "training": self.training,
                "thresholds": self.thresholds, "active": self.active}

    def save(self) -> None:
        """Write the whole session as one new generation (cheap: called on every change)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.check_current()
        if self.damaged:  # keep the good backup: the damaged file is not a generation
            set_damaged_aside(self.folder)
            self.damaged = False
        write_generation(self.folder, self.record(), self.boxes)
        self.written = generation_stamp(self.folder)

    def check_current(self) -> None:
        """Refuse to save over a session that another viewer or process saved since this copy
        read it; this copy is kept beside it as ``session.conflict.json``."""
        now = generation_stamp(self.folder)
        if self.written is None or now is None or now == self.written:
            return
        self.conflict = self.conflict or _free_name(self.folder)
        write_generation(self.folder, self.record(), self.boxes, keep_previous=False,
                         name=self.conflict)
        raise TomosegError(
            f"the session in {self.folder} was saved by another viewer or process since it was "
            "opened here, so this change is not saved over it. This window's boxes and masks "
            f"are kept in {self.conflict} (to use them, copy the folder and rename that file "
            "to session.json in the copy). Open the session again to go on.")

    @classmethod
    def create(cls, folder: str | os.PathLike, tomogram: str | None, voxel_size: float,
               shape: tuple[int, int, int], features=("membrane", "ribosome")) -> Session:
        folder = Path(folder)
        if is_session(folder):
            raise TomosegError(f"{folder} already holds a session; open it, or choose another folder.")
        session = cls(folder=folder, tomogram=str(tomogram) if tomogram else None,
                      voxel_size=float(voxel_size), shape=tuple(int(s) for s in shape))
        if tomogram and Path(tomogram).exists():
            session.tomogram_fingerprint = fingerprint(tomogram)
            session.data_checksum, session.origin = file_checksum(tomogram)
        for name in features:
            session.features.append(Feature(name, FEATURE_COLOURS.get(name, "#ffffff")))
        session.save()
        return session

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Session:
        folder = Path(folder)
        if not is_session(folder):
            raise TomosegError(f"{folder} is not a napari-tomoseg session (no {SESSION_FILE}).")
        clean_session_partials(folder)
        stamp = generation_stamp(folder)
        record, boxes, note = read_generation(folder)
        try:
            return cls(written=stamp, folder=folder, tomogram=record.get("tomogram"),
                       tomogram_fingerprint=record.get("tomogram_fingerprint"),
                       data_checksum=record.get("data_checksum"),
                       origin=tuple(record["origin"]) if record.get("origin") else None,
                       voxel_size=float(record.get("voxel_size", 1.0)),
                       shape=tuple(record["shape"]) if record.get("shape") else None,
                       features=[Feature(f["name"], f["colour"]) for f in record.get("features", [])],
                       boxes=boxes, models=dict(record.get("models", {})),
                       training=[str(f) for f in record.get("training", [])],
                       thresholds={str(f): float(t)
                                   for f, t in (record.get("thresholds") or {}).items()},
                       box_size=int(record.get("box_size", 64)), note=note, damaged=note is not None,
                       active=str(record["active"]) if record.get("active") else None,
                       tilt_series_pixel_size=_optional_size(record.get("tilt_series_pixel_size")))
        except (TypeError, ValueError, KeyError) as exc:
            raise TomosegError(f"{folder / SESSION_FILE} holds a setting that cannot be read "
                               f"({exc!r}).") from exc

    def matches(self, tomogram: str | os.PathLike) -> bool:
        """True if ``tomogram`` is the file this session was made on."""
        return self.tomogram_fingerprint is None or fingerprint(tomogram) == self.tomogram_fingerprint


def _free_name(folder: Path) -> str:
    """``session.conflict.json``, or ``-2``, ``-3`` ...: one stale copy never replaces another's."""
    names = (CONFLICT_FILE.replace(".json", f"-{n}.json") if n > 1 else CONFLICT_FILE
             for n in range(1, 10_000))
    return next(name for name in names if not (folder / name).exists())


def _optional_size(value) -> float | None:
    """A remembered pixel size; sessions saved before it existed have none."""
    size = None if value is None else float(value)
    if size is not None and not (np.isfinite(size) and size > 0):
        raise ValueError(f"tilt_series_pixel_size {value!r}")
    return size


