"""Section 4: train the active feature's network, with a live preview and loss curve."""

from __future__ import annotations

import time

import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, Label, PushButton, SpinBox

from ...annotations import check_boxes
from ...jobs.progress import Progress
from ...jobs.train import train_feature
from ...nn.training import TrainingSettings
from ..loss_plot import LossPlot
from ..notify import guarded
from ..voxel_size import voxel_size_of
from ..worker import JobHandle
from .state import Workflow


class TrainPanel(Container):
    def __init__(self, workflow: Workflow):
        super().__init__(labels=True)
        self.workflow = workflow
        self.architecture = ComboBox(label="Network", choices=["unet", "eman2"], value="unet")
        self.steps = SpinBox(label="Max steps", value=1500, min=1, max=100000, step=50,
                             tooltip="training stops earlier when held-out box pixels stop improving")
        self.continue_training = CheckBox(text="Continue from the last model", value=False)
        self.train_button = PushButton(text="Train")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.status = Label(value="")
        self.loss_plot = LossPlot()
        self.extend([self.architecture, self.steps, self.continue_training,
                     Container(widgets=[self.train_button, self.stop_button],
                               layout="horizontal", labels=False), self.status])
        self.native.layout().addWidget(self.loss_plot)
        self.train_button.changed.connect(guarded(self.start_training))
        self.stop_button.changed.connect(workflow.stop)
        self.on_trained: list = []  # called with (feature, model) when a model is kept

    def start_training(self) -> JobHandle:
        workflow = self.workflow
        c = workflow.require_session()
        c.collect_masks()
        feature = c.active
        check_boxes(c.session.boxes, feature)
        start_from = workflow.models.get(feature) if self.continue_training.value else None
        settings = TrainingSettings(architecture=self.architecture.value,
                                    steps=int(self.steps.value))
        job = train_feature(c.image.data, voxel_size_of(c.image), c.session.boxes, feature,
                            settings, start_from=start_from,
                            output=c.session.model_path(feature),
                            colour=c.session.feature(feature).colour, preview_z=c.current_z)
        overlay = c.overlay(feature)
        # continuing keeps the curve: the model's history is where this run starts
        self.loss_plot.set_values([loss for _, loss in start_from.history] if start_from else [])
        state = {"model": start_from, "start": time.perf_counter()}

        def on_progress(progress: Progress) -> None:
            update = progress.payload
            state["model"] = update.model
            self.loss_plot.append(update.loss)
            self.status.value = _status(progress, time.perf_counter() - state["start"])
            if update.preview is not None:
                overlay.data[update.preview_z] = update.preview.astype(np.float16)
                overlay.refresh()

        def on_finished() -> None:  # also when cancelled or closing: the job saved the model
            model = state["model"]
            if workflow.job.outcome not in ("done", "cancelled") or model is None \
                    or model is start_from:
                return  # failed: the job saved nothing
            workflow.models[feature] = model
            c.session.register_model(feature)
            if not workflow.closing:
                for listener in self.on_trained:
                    listener(feature, model)
                self.status.value += "  (model saved" + _quality(model) + ")"

        self.status.value = f"training '{feature}'..."
        return workflow.run(job, on_progress=on_progress, on_finished=on_finished)

    def show_busy(self, busy: bool) -> None:
        self.train_button.enabled = not busy
        self.stop_button.enabled = busy


def _status(progress: Progress, elapsed: float) -> str:
    rate = progress.step / elapsed if elapsed > 0 else 0.0
    return f"{progress.message}  ({rate:.1f} steps/s)"


def _quality(model) -> str:
    held = model.info.get("held_out")
    if not held:
        return ""
    return (f"; held-out Dice {held['dice'] or 0:.2f} at threshold {model.threshold:.2f}, "
            f"best step {held['step']}")
