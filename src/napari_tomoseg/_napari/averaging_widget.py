"""Average the picked particles: gold-standard refinement with a live 3D average.

Takes the shown, not rejected points of a Points layer (after QC in the
picking widget) and runs ``jobs.average.average_job``, the CLI's, through
``start_job``: extraction, refinement and every file written happen in the
thread. Each iteration replaces the layer tagged ``average`` (isosurface
in 3D) and the FSC curve; the particles' orientations appear as a Vectors
layer. Classify runs ``classify_job`` on the aligned particles, one layer
tagged ``class`` (index) per class average. Score runs ``rescore_job`` on the
kept picks (``picks_rescore``), whose cut rejects picks as QC would. Cancel stops any of them at its next step;
nothing half-written is left.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from magicgui.widgets import (ComboBox, Container, FileEdit, FloatSpinBox, Label, LineEdit,
                              ProgressBar, PushButton, SpinBox)
from napari.layers import Image, Points, Vectors
from napari.utils.notifications import show_info

from ..averaging import AverageResult, AverageSettings, ClassifySettings
from ..averaging.extract import Subtomograms
from ..averaging.files import (aligned_particle_table, average_outputs, class_outputs,
                               open_reference, stale_class_files)
from ..session import user_sessions_folder
from ..errors import TomosegError
from ..io.particles import TomogramFrame, particle_table
from ..jobs.average import average_job, classify_job
from ..jobs.progress import Progress
from ..layer_data import UNITS, clean_tomo_name, frame_from_metadata, layer_frame
from .confirm import may_replace
from .fsc_plot import FscPlot
from .voxel_size import voxel_size_of
from .layer_tags import has_role
from .notify import guarded, quietly, report_error
from .average_view import AverageView
from .picks_rescore import reject_below_cut, start_scoring
from .workflow.state import session_folder_of
from .worker import JobHandle, start_job


class AveragingWidget(Container):
    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.tomogram = ComboBox(label="Tomogram", choices=self._images)
        self.particles = ComboBox(label="Particles", choices=self._points)
        self.box = SpinBox(label="Box (voxels)", value=32, min=12, max=256, step=2)
        self.edge = ComboBox(label="At the edge", choices=["skip", "pad"], value="skip",
                             tooltip="skip particles whose box leaves the tomogram, or pad "
                                     "the outside with the box mean (tomoseg average --edge)")
        self.symmetry = LineEdit(label="Symmetry", value="C1")
        self.iterations = SpinBox(label="Iterations", value=5, min=1, max=50)
        self.angular_step = FloatSpinBox(label="Global step (deg)", value=20.0, min=3.0, max=60.0)
        self.tilt_min = FloatSpinBox(label="Tilt min (deg)", value=-60.0, min=-90.0, max=0.0)
        self.tilt_max = FloatSpinBox(label="Tilt max (deg)", value=60.0, min=0.0, max=90.0)
        self.reference = FileEdit(label="Reference (optional)", mode="r", filter="*.mrc",
                                  value=None, nullable=True)
        self.output = FileEdit(label="Output folder", mode="d", value=None, nullable=True,
                               tooltip="default: averages/ in the tomogram's session folder")
        self.run_button = PushButton(text="Average")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.classes = SpinBox(label="Classes", value=2, min=2, max=10)
        self.classify_button = PushButton(text="Classify aligned particles", enabled=False)
        self.status = Label(value="")
        self.progress = ProgressBar(value=0, min=0, max=1, visible=False)
        self.fsc_plot = FscPlot()
        self.extend([self.tomogram, self.particles, self.box, self.edge, self.symmetry,
                     self.iterations, self.angular_step, self.tilt_min, self.tilt_max,
                     self.reference, self.output,
                     Container(widgets=[self.run_button, self.cancel_button], layout="horizontal",
                               labels=False),
                     self.progress, self.status])
        self.native.layout().addWidget(self.fsc_plot)
        self.extend([self.classes, self.classify_button])
        self._add_scoring()
        self.handle: JobHandle | None = None
        self.state = None  # the latest IterationState or ClassState shown
        self.result: AverageResult | None = None
        self.subtomograms: Subtomograms | None = None
        self.orientations: Vectors | None = None
        self._voxel = 1.0  # Angstrom per voxel of the tomogram being averaged
        self._source: tuple | None = None  # (volume, frame) the aligned particles came from
        self._kept_voxel: float | None = None  # the finished average's voxel size
        self._pending: tuple | None = None  # voxel size, source and picks of a running average
        self.run_button.changed.connect(guarded(self.run))
        self.cancel_button.changed.connect(self.cancel)
        self.classify_button.changed.connect(guarded(self.classify))
        self.average_view = AverageView()
        self.native.destroyed.connect(lambda *_, view=self.average_view: quietly(view.close))
        self.tomogram.changed.connect(self._default_output)
        self._default_output()
        self.viewer.layers.events.inserted.connect(lambda e: self._refresh())
        self.viewer.layers.events.removed.connect(lambda e: self._refresh())

    def _images(self, widget=None) -> list[Image]:
        return [l for l in self.viewer.layers if isinstance(l, Image) and l.ndim == 3
                and not has_role(l, "average") and not has_role(l, "class")]

    def _points(self, widget=None) -> list[Points]:
        """Points layers: the latest picks (tagged ``picks``, topmost) first."""
        points = [l for l in reversed(self.viewer.layers) if isinstance(l, Points)]
        return sorted(points, key=lambda l: not has_role(l, "picks"))

    def _default_output(self, *args) -> None:
        """averages/ in the session folder of the chosen tomogram, unless one was chosen."""
        layer = self.tomogram.value
        if layer is None or self.output.value not in (None, getattr(self, "_auto_output", None)):
            return  # the user chose a folder: keep it
        folder = (session_folder_of(layer)
                  or user_sessions_folder() / f"{clean_tomo_name(layer.name)}.tomoseg")
        self.output.value = self._auto_output = folder / "averages"

    def _refresh(self) -> None:
        self.tomogram.reset_choices()
        self.particles.reset_choices()

    def _add_scoring(self) -> None:
        """Score picks against the reference, and reject those below a cut (``picks_rescore``)."""
        self.score_button = PushButton(text="Score picks against the reference",
                                       tooltip="template matching of each kept pick against "
                                               "the reference file, else the finished average "
                                               "(tomoseg rescore; docs/averaging.md)")
        self.score_cut = FloatSpinBox(label="Reference score cut", value=0.0, min=-1.0, max=1.0,
                                      step=0.001, enabled=False,
                                      tooltip="set to the suggested cut once the picks are scored")
        self.reject_button = PushButton(text="Reject picks below the cut", enabled=False,
                                        tooltip="QC status rejected, as the Pick tab's r: out "
                                                "of averaging and export; accept takes one back")
        self.extend([self.score_button, self.score_cut, self.reject_button])
        self.score_button.changed.connect(guarded(self.score))
        self.reject_button.changed.connect(guarded(lambda: reject_below_cut(self)))
        self.scored_layer: Points | None = None  # the picks the cut was suggested for
        self.particles.changed.connect(  # a cut of one layer's scores is not another's
            lambda *_: setattr(self.reject_button, "enabled", self._may_cut()))

    def _may_cut(self) -> bool:
        """The chosen picks are the ones the reference-score cut was suggested for."""
        return self.scored_layer is not None and self.particles.value is self.scored_layer

    # inputs -----------------------------------------------------------------------------
    def _frame(self, layer: Image) -> TomogramFrame:
        """The tomogram's own name (file stem) and tilt-series pixel size when it carries them."""
        return layer_frame(layer)

    def _kept(self) -> np.ndarray:
        points = self.particles.value
        keep = np.asarray(points.shown, bool)
        if "status" in points.features:
            keep &= np.asarray(points.features["status"]) >= 0
        return keep

    def picked_voxels(self) -> np.ndarray:
        """Shown, not rejected points in the tomogram's voxel coordinates."""
        points, tomogram = self.particles.value, self.tomogram.value
        if tomogram is None or points is None:
            raise TomosegError("choose a tomogram and a Points layer of particles.")
        _require_same_tomogram(points, tomogram)
        world = np.array([points.data_to_world(p) for p in points.data[self._kept()]]).reshape(-1, 3)
        return (world - np.asarray(tomogram.translate)) / np.asarray(tomogram.scale)

    def picked_table(self) -> pd.DataFrame:
        """The kept picks as the CLI reads them: voxels, and each pick's feature if known."""
        zyx = self.picked_voxels()
        features = self.particles.value.features
        carried = {c: features[c].to_numpy()[self._kept()] for c in ("feature", "half")
                   if c in features}  # half: an earlier average's half sets are kept
        return particle_table(zyx, **carried)

    def settings(self) -> AverageSettings:
        return AverageSettings(box=int(self.box.value), iterations=int(self.iterations.value),
                               symmetry=self.symmetry.value, angular_step=float(self.angular_step.value),
                               tilt_min=float(self.tilt_min.value), tilt_max=float(self.tilt_max.value))

    def _inputs(self, tomogram) -> list[str]:
        """Files a result must never replace: the tomogram's and the reference's."""
        path = (tomogram.metadata.get("tomoseg", {}).get("path") if tomogram is not None
                else None)
        return [str(p) for p in (path, self.reference.value) if p and not Path(p).is_dir()]

    def _reference(self, voxel_size: float) -> np.ndarray | None:
        path = self.reference.value
        if path is None or Path(path).is_dir():
            return None
        return open_reference(path, voxel_size)

    # averaging ---------------------------------------------------------------------------
    def run(self) -> JobHandle | None:
        """Start ``average_job`` on the kept picks; files go to the output folder (earlier
        results there are replaced only when the user agrees)."""
        settings = self.settings()
        table = self.picked_table()
        if len(table) < 4:
            raise TomosegError(f"{len(table)} particles: averaging needs at least 4.")
        tomogram = self.tomogram.value
        voxel_size_of(tomogram)  # a usable, cubic voxel size, or a message saying what to do
        frame = self._frame(tomogram)
        if self.output.value is None:
            raise TomosegError("choose an output folder for the average.")
        if not may_replace(self.native, average_outputs(Path(self.output.value)).values(),
                           "this average"):
            self.status.value = ("not averaged: the earlier results in that folder are kept "
                                 "(choose another output folder to keep both)")
            return None
        job = average_job(tomogram.data, frame, table, settings, Path(self.output.value),
                          self._reference(frame.voxel_size), str(self.edge.value),
                          inputs=self._inputs(tomogram))
        # the earlier average stays what Classify uses until this one is done: a cancelled
        # or failed run used to forget it (and its particles) while its files stayed
        self._pending = (frame.voxel_size, (tomogram.data, frame), table)
        self._voxel, self.state = frame.voxel_size, None  # the live view's voxel size
        self.status.value = f"extracting {len(table)} particles..."
        return self._start(job, self._on_average_progress, self._on_averaged)

    def _start(self, job, on_progress, on_done) -> JobHandle:
        self._busy(True)
        self.handle = start_job(job, on_progress=on_progress, on_done=on_done,
                                on_error=self._failed, on_cancelled=self._on_cancelled,
                                on_finished=lambda: self._busy(False), owner=self)
        return self.handle

    def _on_average_progress(self, progress: Progress) -> None:
        state = progress.payload
        self.status.value = progress.message
        if state is None:
            return
        self.state = state
        self._show_volume(state.average, "average")
        self.progress.max = state.total  # per stage: the start, then the refinement
        self.progress.value = state.step
        if state.fsc is not None:
            self.fsc_plot.set_curve(state.fsc, f"iteration {state.step}: {state.resolution:.1f} A")

    def _on_averaged(self, outcome: tuple[AverageResult, Subtomograms, dict]) -> None:
        result, sub, written = outcome
        self.result, self.subtomograms = result, sub
        self._kept_voxel, self._source, self._table = self._pending
        self._show_volume(result.average, "average")
        self.fsc_plot.set_curve(result.fsc, f"{result.resolution:.1f} A at FSC 0.143")
        self._show_orientations(self._source[1])
        verdict = "" if result.supported else " (NOT supported by the data)"
        self.status.value = (f"{len(result.halves)} particles ({sub.skipped} at the edge "
                             f"{'skipped' if self.edge.value == 'skip' else 'padded'}), "
                             f"{result.resolution:.1f} A{verdict}; written to "
                             f"{written['average'].parent}")
        show_info(f"average at {result.resolution:.1f} A written to {written['average'].parent}; "
                  f"{result.note}")

    def _show_volume(self, volume: np.ndarray, role: str, index: int | None = None) -> Image:
        """In the averages' own viewer (see ``average_view``)."""
        return self.average_view.show_volume(volume, role, self._voxel, index)

    def _show_orientations(self, frame: TomogramFrame) -> Vectors:
        """Each particle's reference z axis, drawn from its refined centre."""
        result, sub = self.result, self.subtomograms
        centres = sub.origins + result.alignment.shifts[:, ::-1]
        axis_xyz = np.einsum("nij,j->ni", result.alignment.matrices, np.array([0.0, 0.0, 1.0]))
        length = result.settings.box / 3
        vectors = np.stack([centres, axis_xyz[:, ::-1] * length], axis=1)
        if self.orientations is not None and self.orientations in self.viewer.layers:
            self.viewer.layers.remove(self.orientations)
        self.orientations = self.viewer.add_vectors(
            vectors, name="orientations", scale=(frame.voxel_size,) * 3, units=UNITS,
            translate=frame.origin,
            edge_color="#f2c94c", edge_width=1.0)
        return self.orientations

    def cancel(self) -> None:
        """Stop the running job at its next step; it writes nothing then."""
        if self.handle is not None and self.handle.is_running:
            self.handle.cancel()
            self.status.value = "cancelling..."

    def _failed(self, exc: BaseException) -> None:
        self.status.value = report_error(exc)
        self._show_kept()

    def _on_cancelled(self) -> None:
        self.status.value = "cancelled; nothing was written"
        self._show_kept()

    def _show_kept(self) -> None:
        """After a run that ended without a result, the view shows the last finished average
        again (its files are what the output folder holds), not the run's last iteration."""
        if self.result is None or self._kept_voxel is None:
            return
        self._voxel = self._kept_voxel
        self._show_volume(self.result.average, "average")
        self.fsc_plot.set_curve(self.result.fsc, f"{self.result.resolution:.1f} A at FSC 0.143")

    def _busy(self, busy: bool) -> None:
        self.progress.visible = busy
        if busy:
            self.progress.value = 0
        self.run_button.enabled = not busy
        self.cancel_button.enabled = busy
        self.classify_button.enabled = not busy and self.result is not None
        self.score_button.enabled = not busy
        self.reject_button.enabled = not busy and self._may_cut()

    def score(self) -> JobHandle | None:
        """Start ``rescore_job`` on the kept picks (``picks_rescore``)."""
        return start_scoring(self)

    # classification ------------------------------------------------------------------------
    def classify(self) -> JobHandle | None:
        """Start ``classify_job`` on the aligned particles (refined centres and angles)."""
        if self.result is None or self.subtomograms is None:
            raise TomosegError("average first: classification starts from aligned particles.")
        settings = ClassifySettings(classes=int(self.classes.value))
        carried = {"half": self.result.halves}
        if "feature" in self._table:
            carried["feature"] = self._table["feature"].to_numpy()[self.subtomograms.indices]
        table = aligned_particle_table(self.subtomograms.origins, self.result.alignment, **carried)
        volume, frame = self._source
        folder = Path(self.output.value)
        if not may_replace(self.native, [*class_outputs(folder, settings.classes).values(),
                                         *stale_class_files(folder, settings.classes)],
                           "these classes"):
            self.status.value = ("not classified: the earlier classes in that folder are kept "
                                 "(choose another output folder to keep both)")
            return None
        job = classify_job(volume, frame, table, self.result.settings, settings,
                           Path(self.output.value), str(self.edge.value),
                           inputs=self._inputs(self.tomogram.value))
        self.status.value = "classifying..."
        return self._start(job, self._on_class_progress, self._on_classified)

    def _on_class_progress(self, progress: Progress) -> None:
        self.status.value = f"classification: {progress.message}"
        if progress.payload is None:
            return
        self.state = progress.payload
        self.progress.max, self.progress.value = progress.total, progress.step
        for c, volume in enumerate(self.state.averages, start=1):
            self._show_volume(volume, "class", c)

    def _on_classified(self, outcome) -> None:
        result, _, written = outcome
        counts = np.bincount(result.classes, minlength=len(result.averages) + 1)[1:]
        for c, volume in enumerate(result.averages, start=1):
            self._show_volume(volume, "class", c)
        self.average_view.keep_classes(len(result.averages))
        folder = written["particles"].parent
        self.status.value = f"classes: {counts.tolist()} particles; written to {folder}"
        show_info(self.status.value)


def _require_same_tomogram(points, tomogram) -> None:
    """Picks that carry their tomogram's frame must be of this one: another tomogram's picks,
    placed by world coordinates, cut boxes from the wrong volume and renamed them."""
    own = frame_from_metadata(points.metadata)
    if own is None:
        return
    shape = tuple(int(s) for s in tomogram.data.shape)
    voxel = float(tomogram.scale[-1])
    theirs = frame_from_metadata(tomogram.metadata)  # same shape and size: the name tells
    named = theirs is not None and theirs.name != own.name
    if tuple(own.shape) != shape or abs(own.voxel_size - voxel) > 1e-3 * voxel or named:
        raise TomosegError(f"'{points.name}' are picks of {own.name} ({' x '.join(map(str, own.shape))}"
                           f", {own.voxel_size:g} A), not of '{tomogram.name}' "
                           f"({' x '.join(map(str, shape))}, {voxel:g} A): choose their tomogram"
                           " (or, if only its voxel size was corrected, pick again).")
