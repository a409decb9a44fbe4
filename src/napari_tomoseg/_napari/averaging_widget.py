"""Average the picked particles: gold-standard refinement with a live 3D average.

Takes the shown, not rejected points of a Points layer (after QC in the
picking widget), runs :func:`napari_tomoseg.averaging.iter_average` in a
thread worker, and after every iteration replaces the ``average`` layer
(isosurface in 3D) and the FSC curve. The result is written to the output
folder; the particles' orientations appear as a Vectors layer. Classify
splits the aligned particles into classes, one layer per class average.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from magicgui.widgets import (ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit,
                              ProgressBar, PushButton, SpinBox)
from napari.layers import Image, Points
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_info

from ..averaging import (AverageResult, AverageSettings, ClassifySettings, ClassResult,
                         extract_subtomograms, iter_average, iter_classify, write_average_result,
                         write_class_result)
from ..errors import TomosegError
from ..io.mrc import open_volume
from ..io.particles import TomogramFrame
from ..layer_data import clean_tomo_name, frame_from_metadata
from .fsc_plot import FscPlot
from .notify import guarded, report_error


class AveragingWidget(Container):
    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.tomogram = ComboBox(label="Tomogram", choices=self._images)
        self.particles = ComboBox(label="Particles", choices=self._points)
        self.box = SpinBox(label="Box (voxels)", value=32, min=12, max=256, step=2)
        self.symmetry = LineEdit(label="Symmetry", value="C1")
        self.iterations = SpinBox(label="Iterations", value=5, min=1, max=50)
        self.angular_step = FloatSpinBox(label="Global step (deg)", value=20.0, min=3.0, max=60.0)
        self.tilt_min = FloatSpinBox(label="Tilt min (deg)", value=-60.0, min=-90.0, max=0.0)
        self.tilt_max = FloatSpinBox(label="Tilt max (deg)", value=60.0, min=0.0, max=90.0)
        self.reference = FileEdit(label="Reference (optional)", mode="r", filter="*.mrc",
                                  value="")
        self.output = FileEdit(label="Output folder", mode="d", value=Path.home() / "tomoseg_average")
        self.run_button = PushButton(text="Average")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.classes = SpinBox(label="Classes", value=2, min=2, max=10)
        self.classify_button = PushButton(text="Classify aligned particles", enabled=False)
        self.status = Label(value="")
        self.progress = ProgressBar(value=0, min=0, max=1, visible=False)
        self.fsc_plot = FscPlot()
        self.extend([self.tomogram, self.particles, self.box, self.symmetry, self.iterations,
                     self.angular_step, self.tilt_min, self.tilt_max, self.reference, self.output,
                     Container(widgets=[self.run_button, self.cancel_button], layout="horizontal",
                               labels=False),
                     self.progress, self.status])
        self.native.layout().addWidget(self.fsc_plot)
        self.extend([self.classes, self.classify_button])
        self.worker = None
        self.result: AverageResult | None = None
        self.subtomograms = None
        self._stop = False
        self.run_button.changed.connect(guarded(self.run))
        self.cancel_button.changed.connect(self.cancel)
        self.classify_button.changed.connect(guarded(self.classify))
        self.viewer.layers.events.inserted.connect(lambda e: self._refresh())
        self.viewer.layers.events.removed.connect(lambda e: self._refresh())

    def _images(self, widget=None):
        return [l for l in self.viewer.layers if isinstance(l, Image) and l.ndim == 3
                and l.name != "average" and not l.name.startswith("class ")]

    def _points(self, widget=None):
        return [l for l in self.viewer.layers if isinstance(l, Points)]

    def _refresh(self) -> None:
        self.tomogram.reset_choices()
        self.particles.reset_choices()

    # inputs -----------------------------------------------------------------------------
    def _frame(self, layer: Image) -> TomogramFrame:
        """The tomogram's own name (file stem) and tilt-series pixel size when it carries them."""
        frame = frame_from_metadata(layer.metadata)
        if frame is not None and tuple(frame.shape) == tuple(layer.data.shape):
            return frame
        return TomogramFrame(clean_tomo_name(layer.name), tuple(layer.data.shape),
                             float(layer.scale[-1]), tuple(float(t) for t in layer.translate))

    def picked_voxels(self) -> np.ndarray:
        """Shown, not rejected points in the tomogram's voxel coordinates."""
        points, tomogram = self.particles.value, self.tomogram.value
        if tomogram is None or points is None:
            raise TomosegError("choose a tomogram and a Points layer of particles.")
        keep = np.asarray(points.shown, bool)
        if "status" in points.features:
            keep &= np.asarray(points.features["status"]) >= 0
        world = np.array([points.data_to_world(p) for p in points.data[keep]]).reshape(-1, 3)
        return (world - np.asarray(tomogram.translate)) / np.asarray(tomogram.scale)

    def settings(self) -> AverageSettings:
        return AverageSettings(box=int(self.box.value), iterations=int(self.iterations.value),
                               symmetry=self.symmetry.value, angular_step=float(self.angular_step.value),
                               tilt_min=float(self.tilt_min.value), tilt_max=float(self.tilt_max.value))

    def _reference(self) -> np.ndarray | None:
        path = str(self.reference.value or "")
        if not path or path == "." or Path(path).is_dir():
            return None
        data, _ = open_volume(path)
        return np.asarray(data, np.float32)

    # averaging ---------------------------------------------------------------------------
    def run(self):
        settings = self.settings()
        tomogram = self.tomogram.value
        zyx = self.picked_voxels()
        if len(zyx) < 4:
            raise TomosegError(f"{len(zyx)} particles: averaging needs at least 4.")
        reference = self._reference()
        voxel = float(tomogram.scale[-1])
        frame = self._frame(tomogram)
        output = Path(self.output.value)
        data = tomogram.data
        self._stop = False

        @thread_worker
        def work():
            sub = extract_subtomograms(data, zyx, settings.box)
            if len(sub.data) < 4:
                raise TomosegError(f"only {len(sub.data)} particles fit the box inside the tomogram.")
            yield ("extracted", sub)
            for state in iter_average(sub.data, voxel, settings, reference, lambda: self._stop):
                yield ("state", state)
            return sub

        self.worker = work()
        self.worker.yielded.connect(lambda item: self._on_yield(item, voxel, frame, output))
        self.worker.errored.connect(report_error)
        self.worker.finished.connect(self._finished)
        self._busy(True)
        self.status.value = f"extracting {len(zyx)} particles..."
        self.worker.start()
        return self.worker

    def _on_yield(self, item, voxel: float, frame: TomogramFrame, output: Path) -> None:
        kind, value = item
        if kind == "extracted":
            self.subtomograms = value
            self.status.value = (f"{len(value.data)} particles ({value.skipped} too close to "
                                 "the edge), building the start...")
            return
        if isinstance(value, AverageResult):
            self.result = value
            self._show_volume(value.average, "average", voxel)
            self.fsc_plot.set_curve(value.fsc, f"{value.resolution:.1f} A at FSC 0.143")
            written = write_average_result(output, value, frame, self.subtomograms.origins)
            self._show_orientations(frame)
            verdict = "" if value.supported else " (NOT supported by the data)"
            self.status.value = (f"{len(value.halves)} particles, {value.resolution:.1f} A{verdict}; "
                                 f"written to {written['average'].parent}")
            show_info(f"average at {value.resolution:.1f} A written to {output}; {value.note}")
            return
        self._show_volume(value.average, "average", voxel)
        self.progress.max = value.total  # per stage: the start, then the refinement
        self.progress.value = value.step
        if value.fsc is not None:
            self.fsc_plot.set_curve(value.fsc, f"iteration {value.step}: {value.resolution:.1f} A")
        self.status.value = f"{value.stage} {value.step}/{value.total}"

    def _show_volume(self, volume: np.ndarray, name: str, voxel: float) -> Image:
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = volume
            return layer
        return self.viewer.add_image(volume, name=name, scale=(voxel,) * 3, rendering="iso",
                                     iso_threshold=float(np.percentile(volume, 95)),
                                     colormap="gold", blending="additive")

    def _show_orientations(self, frame: TomogramFrame):
        """Each particle's reference z axis, drawn from its refined centre."""
        result, sub = self.result, self.subtomograms
        centres = sub.origins + result.alignment.shifts[:, ::-1]
        axis_xyz = np.einsum("nij,j->ni", result.alignment.matrices, np.array([0.0, 0.0, 1.0]))
        length = result.settings.box / 3
        vectors = np.stack([centres, axis_xyz[:, ::-1] * length], axis=1)
        if "orientations" in self.viewer.layers:
            self.viewer.layers.remove("orientations")
        return self.viewer.add_vectors(vectors, name="orientations", scale=(frame.voxel_size,) * 3,
                                       translate=frame.origin, edge_color="#f2c94c", edge_width=1.0)

    def cancel(self) -> None:
        self._stop = True
        if self.worker is not None:
            self.worker.quit()
        self.status.value = "cancelled"

    def _busy(self, busy: bool) -> None:
        self.progress.visible = busy
        if busy:
            self.progress.value = 0
        self.run_button.enabled = not busy
        self.cancel_button.enabled = busy
        self.classify_button.enabled = not busy and self.result is not None

    def _finished(self) -> None:
        self._busy(False)

    # classification ------------------------------------------------------------------------
    def classify(self):
        if self.result is None or self.subtomograms is None:
            raise TomosegError("average first: classification starts from aligned particles.")
        settings = ClassifySettings(classes=int(self.classes.value))
        result, sub = self.result, self.subtomograms
        voxel = result.voxel_size
        frame = self._frame(self.tomogram.value)
        output = Path(self.output.value)
        self._stop = False

        @thread_worker
        def work():
            yield from iter_classify(sub.data, voxel, result.alignment, result.settings, settings,
                                     lambda: self._stop)

        def on_yield(state):
            if isinstance(state, ClassResult):
                write_class_result(output, state, voxel, frame, sub.origins)
                counts = np.bincount(state.classes, minlength=settings.classes + 1)[1:]
                self.status.value = f"classes: {counts.tolist()} particles; written to {output}"
                averages = state.averages
            else:
                self.status.value = (f"classification {state.iteration}/{state.total}: "
                                     f"{state.counts.tolist()}, {state.changed:.0%} moved")
                averages = state.averages
            for c, volume in enumerate(averages, start=1):
                self._show_volume(volume, f"class {c}", voxel)

        self.worker = work()
        self.worker.yielded.connect(on_yield)
        self.worker.errored.connect(report_error)
        self.worker.finished.connect(self._finished)
        self._busy(True)
        self.worker.start()
        return self.worker
