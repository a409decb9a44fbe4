"""What the TomoSeg sections share: the session's layers, models, thresholds, the running job.

Sections are small widgets; none holds state another needs. They read and
change this object and listen to ``changed`` to redraw themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from napari.layers import Image
from napari.utils.notifications import show_error, show_info

from ...errors import TomosegError
from ...jobs.progress import Job
from ...nn.model_file import TrainedModel, load_model
from ...layer_data import clean_tomo_name
from ...session import Session, default_session_folder, user_sessions_folder
from ...session_open import open_session
from ...session_store import is_session
from ..annotation import AnnotationController
from ..layer_tags import INCOMPLETE, tomogram_key
from ...jobs.session_maps import read_maps_job
from ..session_layers import restore_session_layers, session_maps, show_restored_map
from ..notify import report_error
from ..voxel_size import apply_voxel_size, voxel_size_of
from ..worker import JobHandle, start_job


def tomogram_path(layer: Image) -> str | None:
    return (layer.metadata.get("tomoseg") or {}).get("path")


def session_folder_of(layer: Image) -> Path | None:
    """The session folder of a tomogram layer: the one started on it in the dock (kept in
    its metadata), else the default one for its file; None for a layer without a file."""
    geometry = layer.metadata.get("tomoseg") or {}
    if geometry.get("session"):
        return Path(geometry["session"])
    return default_session_folder(geometry["path"]) if geometry.get("path") else None


READING = "is still being read from the session: use it when it is shown"
NOT_READ = "was not read back from the session (stopped or unreadable): open the session again"


class Workflow:
    """The session of one tomogram and the one job that may run at a time."""

    def __init__(self, viewer):
        self.viewer = viewer
        self.controller: AnnotationController | None = None
        # every controller still listening to its layers (earlier tomograms' keep saving):
        # one left on layers a new session reuses saved a stale copy over the new one's
        self.listening: list[AnnotationController] = []
        self.models: dict[str, TrainedModel] = {}
        self.thresholds: dict[str, float] = {}
        self.job: JobHandle | None = None
        self.closing = False
        self.changed: list[Callable[[], None]] = []  # session, features, boxes or models
        self.session_started: list[Callable[[], None]] = []
        self.busy_changed: list[Callable[[bool], None]] = []
        self.status: Callable[[str], None] = lambda message: None  # the dock's status line

    def notify_changed(self) -> None:
        for listener in self.changed:
            listener()

    def require_session(self) -> AnnotationController:
        c = self.controller
        if c is None:
            raise TomosegError("start a session first (section 1).")
        if c.image not in self.viewer.layers:
            raise TomosegError(f"the session's tomogram '{c.image.name}' is no longer open: "
                               "open it again and press Start / restore session.")
        if tuple(c.image.data.shape) != c.shape:
            raise TomosegError(f"the data of '{c.image.name}' changed shape ({c.shape} -> "
                               f"{tuple(c.image.data.shape)}): press Start / restore session "
                               "for the new data.")
        restored = c.ensure_layers()
        if restored:
            show_info(f"Put back {', '.join(map(repr, restored))}: the session's boxes and "
                      "masks live there.")
        return c

    def open_session(self, layer: Image | None, folder: str | Path | None = None) -> Session:
        """Start or restore the session of ``layer``'s tomogram, with its trained models."""
        if layer is None:
            raise TomosegError("open a tomogram first (File > Open, or a sample).")
        if self.busy:
            raise TomosegError("a job is running: stop it before starting another session.")
        path = tomogram_path(layer)
        if folder is None:
            folder = (default_session_folder(path) if path
                      else user_sessions_folder() / f"{clean_tomo_name(layer.name)}.tomoseg")
        _remembered_voxel_size(layer, Path(folder))
        session, message = open_session(folder, path, voxel_size_of(layer), layer.data.shape)
        show_info(message)
        if "tomoseg" in layer.metadata:  # Average and Gallery find the session from the layer
            layer.metadata["tomoseg"]["session"] = str(session.folder)
        # on this tomogram its layers are about to be reused: every controller of it must
        # stop listening to them (another tomogram's keep saving)
        sharing = [c for c in self.listening if tomogram_key(c.image) == tomogram_key(layer)]
        for earlier in sharing:
            earlier.detach()
        try:
            self.controller = AnnotationController(self.viewer, layer, session)
        except Exception:
            for earlier in sharing:
                earlier.listen()
            raise
        self.listening = [c for c in self.listening if c not in sharing] + [self.controller]
        self.models, self.thresholds = {}, {}
        for feature, relative in session.models.items():
            try:
                self.models[feature] = load_model(session.folder / relative)
                self.thresholds[feature] = self.models[feature].threshold
            except TomosegError as exc:
                show_error(f"model of '{feature}' not restored: {exc}")
        # thresholds the user set by hand win over the models' calibrated ones
        self.thresholds.update({f: t for f, t in session.thresholds.items()
                                if f in session.feature_names()})
        # its picks (with their judgements) and filaments; its finished maps in a thread
        restored, problems = restore_session_layers(self.viewer, self.controller)
        if restored:
            show_info(f"Shown again from the session: {', '.join(restored)}.")
        for problem in problems:
            show_error(f"Not shown again: {problem}.")
        self._restore_maps()
        for listener in self.session_started:
            listener()
        self.notify_changed()
        return session

    def _restore_maps(self) -> JobHandle | None:
        """Read the session's maps in a thread (the dock's one job: Train and Segment wait
        for it, Stop ends it), each shown as it comes; until then its prediction layer says
        so (Pick and Explore refuse it: another session's map was shown there)."""
        c = self.controller
        maps = session_maps(c.session)
        if not maps:
            return None
        for feature in maps:
            c.overlay(feature).metadata[INCOMPLETE] = READING
        shown: list[str] = []

        def on_progress(progress) -> None:
            feature, data, problem = progress.payload
            self.status(progress.message)
            if problem:
                show_error(f"Not shown again: {problem}.")
            elif c is self.controller and c.image in self.viewer.layers:
                show_restored_map(c, self.thresholds, feature, data)  # a threshold set by
                shown.append(feature)  # hand meanwhile counts

        def on_finished() -> None:
            if self.closing or c is not self.controller or c.image not in self.viewer.layers:
                return  # nothing left to mark or say
            missing = [f for f in maps if f not in shown]
            for feature in missing:  # stopped, or unreadable: never taken for the map
                c.overlay(feature).metadata[INCOMPLETE] = NOT_READ
            self.status(f"maps shown again: {', '.join(shown) or 'none'}" + (
                f"; not read: {', '.join(missing)} (open the session again)" if missing else ""))

        self.status(f"reading {len(maps)} map(s) of the session...")
        return self.run(read_maps_job(maps, c.shape), on_progress=on_progress,
                        on_finished=on_finished)

    # the running job ------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.job is not None and self.job.is_running

    def require_idle(self) -> None:
        """Refuse a new job while one runs, before anything is changed for it (a refused
        Segment left its maps marked 'still being segmented', a refused Train a training
        the session remembered)."""
        if self.busy:
            raise TomosegError("a job is running (its progress is on the status line): wait "
                               "for it to end, or Stop it.")

    def run(self, job: Job, on_progress=None, on_done=None, on_cancelled=None,
            on_finished=None) -> JobHandle:
        """Start ``job`` (one at a time); callbacks are skipped once the widget is closing,
        except ``on_finished``, which must leave nothing behind (e.g. save a model)."""
        if self.busy:
            job.close()
        self.require_idle()

        def live(callback):
            if callback is None:
                return None
            return lambda *args: None if self.closing else callback(*args)

        def finished():
            try:  # a save that fails here (a full disk, a session conflict) is shown, and
                if on_finished is not None:  # the dock is still given back: it stayed locked
                    on_finished()
            except Exception as exc:  # noqa: BLE001 - said to the user, not raised into Qt
                report_error(exc)
            finally:
                if not self.closing:
                    for listener in self.busy_changed:
                        listener(False)

        for listener in self.busy_changed:
            listener(True)
        self.job = start_job(job, on_progress=live(on_progress), on_done=live(on_done),
                             on_error=live(report_error), on_cancelled=live(on_cancelled),
                             on_finished=finished)
        return self.job

    def stop(self, *args) -> None:
        if self.job is not None:
            self.job.cancel()

    def close_down(self) -> None:
        """The widget or viewer is going away: stop work, touch no widget afterwards."""
        self.closing = True
        self.stop()
        for controller in self.listening:  # a dock opened again must not share its layers
            with contextlib.suppress(Exception):  # with these (a stale copy saved over it)
                controller.detach()
        self.listening = []


def _remembered_voxel_size(layer: Image, folder: Path) -> None:
    """The voxel size typed for this tomogram's session before (kept in it) is used again,
    and said: for a header without one, instead of asking at every restore; over a header's
    value the user had corrected (IMOD's 1 A, an unbinned size on a binned tomogram), which a
    restore dropped without a word, so its models were applied rescaled."""
    meta = layer.metadata.get("tomoseg") or {}
    if meta.get("voxel_size_typed") or not is_session(folder):  # typed here: that one holds
        return
    session = Session.load(folder)
    path = tomogram_path(layer)
    if path and not session.matches(path):  # another tomogram's session: its size is not ours
        return
    remembered = session.voxel_size
    if not (session.shape and tuple(session.shape) == tuple(layer.data.shape)
            and remembered and remembered != 1.0):
        return
    if meta.get("voxel_size_in_header") is False:
        why = "the header has none"
    elif path and abs(float(layer.scale[-1]) - remembered) > 1e-3 * remembered:
        why = f"typed over the header's {float(layer.scale[-1]):g} A before"
    else:
        return
    apply_voxel_size(layer, remembered)
    show_info(f"{layer.name}: voxel size {remembered:g} A from its session ({why}); change it "
              "in 'Voxel size (A)' if it is wrong.")
