"""Section 4: train the active feature's network, with a live preview and loss curve."""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from pathlib import Path

from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, PushButton, SpinBox
from napari.utils.notifications import show_info, show_warning

from ...annotations import check_boxes
from ...jobs.progress import Progress
from ...jobs.train import replaces_earlier, train_feature
from ...errors import InvalidSettingsError, TomosegError
from ...feature_files import previous_model_file, shift_previous_models, stopped_model_file
from ...io.atomic import write_bytes
from ...io.paths import same_file
from ...nn.ensemble import members_of
from ...nn.model_file import TrainedModel, load_model, save_model
from ...nn.models import MAX_MEMBERS, STEM_CHOICES, SYMMETRIES, stem_parameters
from ...nn.training import TrainingSettings
from ...nn.validation import describe_held_out
from ...preprocess import PreprocessSettings, default_preprocessing
from ..layer_tags import INCOMPLETE
from ..loss_plot import LossPlot
from ..notify import guarded
from ..voxel_size import voxel_size_of
from ..worker import JobHandle
from .state import Workflow


PREVIEW_NOTE = ("shows a training preview, not a whole segmentation: segment the tomogram "
                "(Segment tab) before picking")


class TrainPanel(Container):
    def __init__(self, workflow: Workflow):
        super().__init__(labels=True)
        self.workflow = workflow
        self.architecture = ComboBox(label="Network", choices=["unet", "eman2"], value="unet")
        self.stem3d = ComboBox(label="3D stem", choices=list(STEM_CHOICES), value="auto",
                               tooltip="unet: 3D convolutions over +-4 slices first. auto: on for "
                                       "membranes (better Dice, ~3x the training time)")
        self.orientations = ComboBox(
            label="Orientations", choices=["auto", *SYMMETRIES], value="auto",
            tooltip="any: tiles turned every way. wedge: only so the tilt axis stays along y "
                    "(flips, 180 degrees). rewedge: every way, with the missing wedge imposed "
                    "again: filaments crossing the tilt axis in other tomograms are found "
                    "better. auto: rewedge for microtubules, any for the rest (docs/engine.md)")
        self.networks = ComboBox(
            label="Networks", choices=["auto", *map(str, range(1, MAX_MEMBERS + 1))],
            value="auto",
            tooltip="networks trained one after another on the same boxes with other seeds, "
                    "their maps averaged as one model: 3 raised 5-box ribosome picks from F1 "
                    "0.86 / 0.89 to 0.90 / 0.93 (training / other tomogram) and membrane Dice "
                    "by 0.03, for 1.5-3x the training and 3x the segmentation time. Stop keeps "
                    "the networks finished. auto: 3 for a U-Net of ribosomes or microtubules, "
                    "1 for the rest (docs/engine.md)")
        self.binning = ComboBox(
            label="Binning", choices=["auto", "1", "2", "3", "4"], value="auto",
            tooltip="the network sees the tomogram binned by this. auto: towards 20 A per voxel, "
                    "10 A for membranes (better membranes from few boxes; on a CPU about 6x the "
                    "training and 13x the segmentation time of 20 A; docs/engine.md)")
        self.steps = SpinBox(label="Max steps", value=1500, min=1, max=100000, step=50,
                             tooltip="training stops earlier when held-out box pixels stop improving")
        self.continue_training = CheckBox(text="Continue from the last model", value=False)
        self.train_button = PushButton(text="Train")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.status = Label(value="")
        self.model_state = Label(value="")
        self.model_file = FileEdit(label="Model file", mode="r", filter="*.pt", value="")
        self.load_button = PushButton(text="Load model...")
        self.export_button = PushButton(text="Export model...")
        self.loss_plot = LossPlot()
        self.extend([self.architecture, self.stem3d, self.orientations, self.networks,
                     self.binning, self.steps,
                     self.continue_training,
                     Container(widgets=[self.train_button, self.stop_button],
                               layout="horizontal", labels=False), self.status,
                     self.model_state, self.model_file,
                     Container(widgets=[self.load_button, self.export_button],
                               layout="horizontal", labels=False)])
        self.native.layout().addWidget(self.loss_plot)
        self.train_button.changed.connect(guarded(self.start_training))
        self.stop_button.changed.connect(workflow.stop)
        self.load_button.changed.connect(guarded(lambda: self.load_model()))
        self.export_button.changed.connect(guarded(self._export_with_dialog))
        self.on_trained: list = []  # called with (feature, model) when a model is kept

    def _preprocess(self, c, boxes, feature: str, start_from) -> PreprocessSettings | None:
        """The chosen binning over the feature's default preprocessing; None: the default (a
        continued model keeps its own, and refuses another)."""
        if self.binning.value == "auto":
            return None
        if start_from is not None:
            raise InvalidSettingsError("the binning is fixed when a model is first trained; a "
                                       "continued model keeps its own (set it to auto).")
        size = next(b.size for b in boxes if b.feature == feature)
        default = default_preprocessing(voxel_size_of(c.image), size,
                                        architecture=self.architecture.value, feature=feature)
        return replace(default, binning=int(self.binning.value))

    def start_training(self) -> JobHandle:
        workflow = self.workflow
        c = workflow.require_session()
        workflow.require_idle()
        c.collect_masks()
        feature = c.active
        check_boxes(c.session.boxes, feature)
        start_from = workflow.models.get(feature) if self.continue_training.value else None
        if start_from is not None and {self.stem3d.value, self.orientations.value} != {"auto"}:
            raise InvalidSettingsError("the 3D stem and orientations are fixed when a model is "
                                       "first trained; a continued model keeps its own (set "
                                       "them to auto).")
        parameters = stem_parameters(self.architecture.value, self.stem3d.value)
        if self.orientations.value != "auto":
            parameters["symmetry"] = self.orientations.value
        settings = TrainingSettings(architecture=self.architecture.value,
                                    steps=int(self.steps.value), parameters=parameters,
                                    # continued: its own; auto: the feature's
                                    members=None if start_from or self.networks.value == "auto"
                                    else int(self.networks.value))
        # the boxes as they are now: the list and its boxes change as the user goes on while
        # the job reads them (an ensemble's later networks saw boxes the first did not)
        boxes = [replace(box) for box in c.session.boxes]
        job = train_feature(c.image.data, voxel_size_of(c.image), boxes, feature,
                            settings, preprocess=self._preprocess(c, boxes, feature, start_from),
                            start_from=start_from,
                            output=c.session.model_path(feature),
                            colour=c.session.feature(feature).colour, preview_z=c.current_z)
        overlay = c.overlay(feature)
        # continuing keeps the curve: the model's history is where this run starts
        self.loss_plot.set_curves(_curves_of(start_from))
        state = {"model": start_from, "start": time.perf_counter(), "step": None}

        def on_progress(progress: Progress) -> None:
            update = progress.payload
            state["model"] = update.model
            if update.step != state["step"]:  # an ensemble's last update repeats its step
                self.loss_plot.append(update.loss, update.member[0] - 1 if update.member
                                      else None)  # network k's loss on its own curve
            state["step"] = update.step
            self.status.value = _status(progress, time.perf_counter() - state["start"])
            if update.preview is not None:
                overlay.metadata[INCOMPLETE] = PREVIEW_NOTE
                overlay.data[update.preview_z] = steady(state, update.preview_z, update.preview)
                overlay.refresh()

        earlier = c.session.model_path(feature).exists()
        c.session.begin_training(feature)  # a restore finds the model if no one records it
        self.status.value = f"training '{feature}'..."
        self.model_state.value = f"'{feature}': training" + (
            f" on from {len(start_from.history)} steps" if start_from else "")
        return workflow.run(job, on_progress=on_progress, on_finished=lambda: self._finished(
            c, feature, state["model"], start_from, earlier))

    def _finished(self, c, feature: str, model, start_from, earlier: bool) -> None:
        """A run's end, also when cancelled or closing: the job saved the model (or kept it
        as NAME.stopped.pt, or in the rescue folder); the dock takes it up or says why not."""
        workflow = self.workflow
        outcome = workflow.job.outcome
        rescued = getattr(workflow.job.error, "rescued", None)  # saved elsewhere: usable
        if model is not None and model is not start_from \
                and not replaces_earlier(model, earlier, stopped=outcome != "done"):
            c.session.end_training(feature)  # (also when that stopped model went elsewhere)
            if not workflow.closing:
                self.show_model_state()
                kept = stopped_model_file(c.session.model_path(feature))
                self.status.value = (
                    f"training '{feature}' stopped before its first held-out check: "
                    f"'{feature}' keeps its earlier model"
                    + (f" (the stopped one is {kept.name})" if kept.exists() else ""))
            return
        if (outcome not in ("done", "cancelled") and rescued is None) or model is None \
                or model is start_from:
            c.session.end_training(feature)
            if not workflow.closing:
                self.show_model_state()  # failed: the job saved nothing
                kept = getattr(workflow.job.error, "kept_model", None)
                self.status.value = (f"training '{feature}' {outcome} before a model was kept"
                                     if kept is None else f"training '{feature}' {outcome}; "
                                     f"its best weights so far are in {kept}: Load them")
            return
        workflow.models[feature] = model
        if rescued is None:
            c.session.register_model(feature)
        else:
            c.session.end_training(feature)
        if not workflow.closing:
            for listener in self.on_trained:
                listener(feature, model)
            self.status.value += (f"  (model saved{_quality(model)})" if rescued is None
                                  else f"  (model kept here and in {rescued}: Export it)")
            held = (model.info.get("held_out") or {}).get("dice")
            if held is not None and held < 0.05:  # a model that found nothing, said
                earlier = previous_model_file(c.session.model_path(feature))
                show_warning(f"'{feature}': the new model finds almost none of the painted "
                             f"feature in its held-out pixels (Dice {held:.2f}): train "
                             "longer or add positive boxes" + (
                                 f"; the earlier one is kept as {earlier.name}"
                                 if earlier.exists() else "") + ".")

    def show_busy(self, busy: bool) -> None:
        self.train_button.enabled = not busy
        self.stop_button.enabled = busy
        self.load_button.enabled = not busy
        self.export_button.enabled = not busy

    # models ----------------------------------------------------------------------------
    def show_model_state(self, *args) -> None:
        """Untrained, or steps and held-out Dice of the active feature's model."""
        c = self.workflow.controller
        feature = c.active if c else None
        model = self.workflow.models.get(feature) if feature else None
        self.model_state.value = (f"'{feature}': " + model_summary(model)) if feature else ""

    def load_model(self, path: str | Path | None = None) -> TrainedModel:
        """A model file becomes the active feature's model (copied into the session)."""
        c = self.workflow.require_session()
        path = Path(path or self.model_file.value)
        if not path.is_file():
            raise TomosegError("choose a model file (.pt) first.")
        model = load_model(path)
        # trained on another tomogram: its voxel size is its own (``restamp_models``)
        model = replace(model, info={**model.info, "loaded_from": str(path)})
        feature = c.active
        target = c.session.model_path(feature)
        kept = target.is_file() and not same_file(target, path)
        if kept:  # as a training keeps it
            shift_previous_models(target)
            write_bytes(previous_model_file(target), target.read_bytes())
        save_model(model, target)
        c.session.register_model(feature)
        self.workflow.models[feature] = model
        for listener in self.on_trained:
            listener(feature, model)
        other = (f", trained for '{model.feature}'" if model.feature and model.feature != feature
                 else "")
        note = f"; the model it replaces is kept as {previous_model_file(target).name}" if kept \
            else ""
        show_info(f"'{feature}' now uses {path.name} ({model_summary(model)}{other}){note}.")
        return model

    def export_model(self, path: str | Path) -> Path:
        """Save the active feature's model where the user asks (e.g. for tomoseg batch)."""
        c = self.workflow.require_session()
        model = self.workflow.models.get(c.active)
        if model is None:
            raise TomosegError(f"'{c.active}' has no trained model to export.")
        path = save_model(model, Path(path).with_suffix(".pt"))
        show_info(f"Exported the '{c.active}' model to {path}")
        return path

    def _export_with_dialog(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        c = self.workflow.require_session()
        path, _ = QFileDialog.getSaveFileName(self.native, "Export model",
                                              f"{c.active}.tomoseg.pt", "Models (*.pt)")
        if path:
            self.export_model(path)


def steady(state: dict, z: int, preview: np.ndarray) -> np.ndarray:
    """The preview averaged with the last one on the same slice, so it does not flicker
    from one update to the next; the last update of a run (the kept weights) still
    dominates within two previews."""
    last = state.get("preview")
    if last is None or state.get("preview_z") != z or last.shape != preview.shape:
        shown = preview.astype(np.float32)
    else:
        shown = 0.5 * last + 0.5 * preview.astype(np.float32)
    state["preview"], state["preview_z"] = shown, z
    return shown.astype(np.float16)


def _curves_of(model) -> list[list[float]]:
    """Each network's losses so far (an ensemble keeps its members' histories apart)."""
    if model is None:
        return [[]]
    members = model.info.get("members") or [{"history": model.history}]
    return [[loss for _, loss in m.get("history") or []] for m in members]


def _status(progress: Progress, elapsed: float) -> str:
    """Step, loss, speed and the most time left (held-out pixels may stop it sooner)."""
    rate = progress.step / elapsed if elapsed > 0 else 0.0
    left = (progress.total - progress.step) / rate if rate > 0 else float("nan")
    return f"{progress.message}  ({rate:.1f} steps/s, at most {left:.0f} s left)"


def model_summary(model: TrainedModel | None) -> str:
    if model is None:
        return "untrained"
    members = members_of(model.network)
    network = members[0] if members else model.network
    stem = ", 3D stem" if getattr(network, "stem", None) is not None else ""
    stem += {"wedge": ", tilt axis kept", "rewedge": ", wedge imposed again"}.get(
        getattr(network, "symmetry", "any"), "")
    stem += f", {len(members)} networks averaged" if members else ""
    text = f"trained {len(model.history)} steps ({model.architecture}{stem})"
    described = describe_held_out(model.info.get("held_out"), model.threshold)
    return text + (f", {described}" if described else "")


def _quality(model) -> str:
    held = model.info.get("held_out")
    described = describe_held_out(held, model.threshold)
    step = f", best step {held['step']}" if held and held.get("step") is not None else ""
    return f"; {described}{step}" if described else ""
