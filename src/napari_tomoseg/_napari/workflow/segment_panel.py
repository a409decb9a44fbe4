"""Section 5: apply the trained networks to a whole tomogram, set thresholds, merge."""

from __future__ import annotations

import time

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSlider, LineEdit, ProgressBar, PushButton
from napari.layers import Image
from napari.utils.colormaps import DirectLabelColormap
from napari.utils.notifications import show_info

from ...errors import TomosegError
from ...features import FILAMENT_DIAMETERS
from ...io.probability_header import stored_threshold
from ...jobs.merge import merge_maps
from ...jobs.progress import Progress
from ...jobs.segment import SegmentOptions, segment_tomogram
from ...layer_data import layer_frame
from ...merge import MergeSettings, artifact_rules
from ...small_pieces import parse_min_sizes
from ..annotation import overlay_name, probability_colormap
from ..layer_tags import FILLING, INCOMPLETE, find, layers_with, tag, tomogram_key
from ..notify import guarded
from ..voxel_size import voxel_size_of
from ..worker import JobHandle
from .session_panel import tomogram_layers
from .state import Workflow

MERGED = "segmentation (merged)"


def _trained(asked: list[str] | None, features: list[str], models: dict) -> list[str]:
    """The features to segment: those asked for, else every trained one; each needs a model."""
    chosen = asked or [f for f in features if f in models]
    if not chosen:
        raise TomosegError("train a network first (section 4).")
    untrained = [f for f in chosen if f not in models]
    if untrained:
        raise TomosegError(f"no trained network for {', '.join(map(repr, untrained))}: "
                           "train it first (section 4).")
    return chosen


def _on_slider(threshold: float) -> float:
    """The slider's value for a threshold: its range and 0.05 steps (0.95, not
    0.9500000000000001)."""
    return min(max(round(threshold / 0.05) * 5 / 100, 0.05), 0.95)


class SegmentPanel(Container):
    def __init__(self, workflow: Workflow):
        super().__init__(labels=True)
        self.workflow = workflow
        self.target = ComboBox(label="Apply to", choices=lambda w: tomogram_layers(workflow.viewer),
                               tooltip="the session's tomogram, or another open one")
        self.threshold = FloatSlider(label="Threshold", value=0.5, min=0.05, max=0.95, step=0.05,
                                     tooltip="for the active feature (section 2)")
        self.artifacts = LineEdit(label="Artifacts", value="carbon",
                                  tooltip="features that remove voxels from every other one")
        self.min_sizes = LineEdit(label="Drop pieces", value="",
                                  tooltip="FEATURE=NM3, comma-separated, e.g. membrane=2000: "
                                          "merging drops the feature's connected pieces smaller "
                                          "than this volume (nm^3); empty keeps every piece")
        self.segment_button = PushButton(text="Segment whole tomogram")
        self.merge_button = PushButton(text="Merge features")
        self.stop_button = PushButton(text="Stop", enabled=False)
        self.progress = ProgressBar(value=0, max=1, visible=False)
        policy = self.progress.native.sizePolicy()
        policy.setRetainSizeWhenHidden(True)  # showing it must not relayout the dock
        self.progress.native.setSizePolicy(policy)
        self.extend([self.target, self.threshold, self.artifacts, self.min_sizes,
                     Container(widgets=[self.segment_button, self.merge_button,
                                        self.stop_button], layout="horizontal", labels=False),
                     self.progress])
        self.segment_button.changed.connect(guarded(self.start_segmentation))
        self.merge_button.changed.connect(guarded(self.merge))
        self.threshold.changed.connect(self.apply_threshold)
        self.stop_button.changed.connect(workflow.stop)

    # segmentation -------------------------------------------------------------------------
    def start_segmentation(self, features: list[str] | None = None) -> JobHandle:
        workflow, c = self.workflow, self.workflow.require_session()
        workflow.require_idle()
        features = _trained(features, c.session.feature_names(), workflow.models)
        layer = self.target.value or c.image
        if layer is c.image:
            overlays = {f: c.overlay(f) for f in features}
            outputs = [c.session.segmentation_path(f) for f in features]
        else:  # another tomogram: its own prediction layers and files
            overlays = {f: self._other_overlay(layer, f) for f in features}
            outputs = [c.session.folder / "segmentations" / f"{layer.name}_{f}.mrc"
                       for f in features]
        job = segment_tomogram(layer.data, voxel_size_of(layer), tuple(layer.translate),
                               [workflow.models[f] for f in features], outputs,
                               SegmentOptions(overwrite=True), tomogram=layer_frame(layer).name)

        def on_progress(progress: Progress) -> None:
            feature, update = progress.payload
            overlays[feature].data[update.z0:update.z1] = update.probability.astype(np.float16)
            overlays[feature].refresh()
            self.progress.max, self.progress.value = progress.total, progress.step
            workflow.status(progress.message)

        def on_done(written: dict) -> None:
            seconds = time.perf_counter() - started
            show_info(f"Segmented {', '.join(written)} in {seconds:.0f} s: "
                      f"{', '.join(map(str, written.values()))}")
            # the status line kept the last progress line ('N/N slices') after the job
            filaments = [f for f in written if f in FILAMENT_DIAMETERS]
            workflow.status(f"segmented {', '.join(written)} in {seconds:.0f} s" + (
                f"; the Filaments tab traces {' and '.join(filaments)} whole" if filaments
                else ""))

        started, started_at = time.perf_counter(), time.time()
        self.progress.value, self.progress.max = 0, layer.data.shape[0] * len(features)  # slices
        self.progress.visible = True  # only this job's bar: training shows steps instead
        for overlay in overlays.values():
            overlay.metadata[FILLING] = True  # Pick refuses a map still being computed

        def on_finished() -> None:
            done = workflow.job.outcome == "done"
            for feature, output in zip(features, outputs):
                overlay = overlays[feature]
                overlay.metadata.pop(FILLING, None)
                if done or _written_since(output, started_at):
                    overlay.metadata.pop(INCOMPLETE, None)  # a Stop that came after its map
                    # was whole: cancelling removes only maps not yet finished
                else:  # what is shown is part of a map: Pick must not take it for one
                    overlay.metadata[INCOMPLETE] = (
                        f"holds a segmentation {workflow.job.outcome} part way: segment the "
                        "whole tomogram again before picking")
            if not workflow.closing:
                self.progress.visible = False
                if not done:
                    workflow.status(f"segmentation {workflow.job.outcome} after "
                                    f"{self.progress.value} of {self.progress.max} slices: the "
                                    "prediction layers are incomplete")

        return workflow.run(job, on_progress=on_progress, on_done=on_done,
                            on_finished=on_finished)

    def _other_overlay(self, layer: Image, feature: str) -> Image:
        viewer, c = self.workflow.viewer, self.workflow.controller
        found = find(viewer, "probability", feature=feature, tomogram=tomogram_key(layer))
        if found is not None:
            return found
        threshold = self.workflow.thresholds.get(feature, 0.5)
        overlay = viewer.add_image(
            np.zeros(layer.data.shape, np.float16), name=f"{overlay_name(feature)} [{layer.name}]",
            colormap=probability_colormap(c.session.feature(feature).colour, threshold),
            blending="additive", contrast_limits=(0.0, 1.0), metadata={"threshold": threshold},
            scale=layer.scale, units=layer.units, translate=layer.translate)
        tag(overlay, "probability", feature=feature, tomogram=tomogram_key(layer))
        return overlay

    # thresholds ---------------------------------------------------------------------------
    def show_feature(self, feature: str) -> None:
        self.threshold.value = self.workflow.thresholds.get(feature, 0.5)

    def use_threshold(self, feature: str, model) -> None:
        """A new model's calibrated threshold becomes the feature's threshold."""
        self.workflow.thresholds[feature] = float(model.threshold)
        c = self.workflow.controller
        if c is not None and c.active == feature:
            self.threshold.value = _on_slider(float(model.threshold))
            self.apply_threshold()

    def apply_threshold(self, *args) -> None:
        """The slider sets the active feature's threshold (display, merge and Pick)."""
        c = self.workflow.controller
        if c is None or not c.active:
            return
        value = float(self.threshold.value)
        known = self.workflow.thresholds.get(c.active)
        if known is not None and abs(known - value) < 0.025 + 1e-9:
            value = known  # the slider's 0.05 grid: keep a calibrated 0.37, not 0.35
        self.workflow.thresholds[c.active] = value
        self._remember(c.session, c.active, value)
        colour = c.session.feature(c.active).colour
        for layer in layers_with(self.workflow.viewer, "probability", feature=c.active,
                                 tomogram=tomogram_key(c.image)):  # another's has its own
            layer.colormap = probability_colormap(colour, value)
            layer.metadata["threshold"] = value  # Pick's default

    def _remember(self, session, feature: str, value: float) -> None:
        """A threshold set by hand is kept in the session (a restore brought back the model's
        calibrated one, and Merge and Pick used it); the model's own is not stored."""
        model = self.workflow.models.get(feature)
        calibrated = float(model.threshold) if model is not None else 0.5
        shown = _on_slider(calibrated)
        own = None if min(abs(calibrated - value), abs(shown - value)) < 1e-9 else value
        if session.thresholds.get(feature) != own:
            if own is None:
                session.thresholds.pop(feature, None)
            else:
                session.thresholds[feature] = own
            session.save()

    # merge --------------------------------------------------------------------------------
    def merge(self) -> JobHandle:
        workflow = self.workflow
        c = workflow.require_session()
        workflow.require_idle()
        # the finished maps on disk (written whole, atomically): never a half-filled overlay
        maps = {f: c.session.segmentation_path(f) for f in c.session.feature_names()
                if c.session.segmentation_path(f).exists()}
        if not maps:
            raise TomosegError("segment the whole tomogram first: there is nothing to merge.")
        features = list(maps)
        artifacts = [a.strip() for a in self.artifacts.value.split(",") if a.strip() in features]
        thresholds, older = _map_thresholds(maps, workflow.thresholds, c.session.thresholds)
        pairs = [pair for pair in self.min_sizes.value.split(",") if pair.strip()]
        settings = MergeSettings(features=features, thresholds=thresholds,
                                 artifacts=artifact_rules(artifacts, features),
                                 min_sizes=parse_min_sizes(pairs, features, "Drop pieces"))
        path = c.session.folder / "segmentations" / "merged.mrc"
        job = merge_maps(maps, settings, path, voxel_size_of(c.image), tuple(c.image.translate),
                         overwrite=True)

        def on_done(labels: np.ndarray) -> None:
            self._show_merged(labels, settings)
            show_info(f"Merged segmentation saved to {path}" + "".join(
                f"; the map of '{f}' is from an earlier model: merged at its own threshold "
                f"{t:.2f} (Segment again to use the new model)" for f, t in older.items()))

        def on_progress(progress: Progress) -> None:
            self.progress.max, self.progress.value = progress.total, progress.step
            workflow.status(progress.message)

        self.progress.value, self.progress.visible = 0, True  # slabs of a large tomogram
        return workflow.run(job, on_progress=on_progress, on_done=on_done, on_finished=lambda:
                            None if workflow.closing else setattr(self.progress, "visible", False))

    def _show_merged(self, labels: np.ndarray, settings: MergeSettings) -> None:
        viewer, c = self.workflow.viewer, self.workflow.controller
        colours = {0: "transparent", None: "transparent"}
        for f in settings.features:
            colours[settings.label_of(f)] = c.session.feature(f).colour
        layer = find(viewer, "labels", tomogram=tomogram_key(c.image))
        if layer is not None:  # the numbering follows the features merged: colours too
            layer.data = labels
            layer.colormap = DirectLabelColormap(color_dict=colours)
            return
        layer = viewer.add_labels(labels, name=MERGED, scale=c.image.scale,
                                  units=c.image.units, translate=c.image.translate, opacity=0.6,
                                  colormap=DirectLabelColormap(color_dict=colours))
        tag(layer, "labels", tomogram=tomogram_key(c.image))

    def show_busy(self, busy: bool) -> None:
        self.segment_button.enabled = not busy
        self.merge_button.enabled = not busy
        self.stop_button.enabled = busy


def _map_thresholds(maps: dict, current: dict, by_hand: dict) -> tuple[dict, dict]:
    """(threshold per feature, {feature: threshold} of maps made by an earlier model).

    A threshold belongs to the map its model made: after a new training the map on disk is
    still the old model's, and merging it at the new model's threshold was wrong without a
    word. A map's header keeps its model's threshold; one set by hand wins."""
    thresholds, older = {}, {}
    for feature, path in maps.items():
        chosen = by_hand.get(feature, current.get(feature, 0.5))
        stored = stored_threshold(path) if feature not in by_hand else None
        if stored is not None and abs(stored - chosen) > 1e-3:
            chosen = older[feature] = stored
        thresholds[feature] = chosen
    return thresholds, older


def _written_since(path, since: float) -> bool:
    """Whether the map at ``path`` was written whole by this run (its file is renamed into
    place only when complete, and a cancelled run removes the ones it had not finished)."""
    try:
        return path.stat().st_mtime >= since - 1.0
    except OSError:
        return False
