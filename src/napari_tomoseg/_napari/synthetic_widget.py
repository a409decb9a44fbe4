"""A widget that makes a synthetic cell (with ground truth) and shows it.

Simulating and writing run as one small job (``synthetic_job``) through
``start_job``; the opened layers are tagged tomogram and truth.
"""

from __future__ import annotations

from pathlib import Path

from magicgui.widgets import (ComboBox, Container, FileEdit, FloatSpinBox, Label, ProgressBar,
                              PushButton, SpinBox)
from napari.utils.notifications import show_error, show_info

from ..features import FEATURES
from ..jobs.progress import Job, Progress
from ..layer_data import frame_from_metadata, points_layer, volume_layer
from ..synthetic import CellSpec, ImagingSpec, simulate, write_synthetic
from .layer_tags import tag
from .confirm import may_replace
from .notify import report_error
from .worker import JobHandle, start_job

SIZES = {"small (48 x 192 x 192)": (48, 192, 192), "medium (64 x 256 x 256)": (64, 256, 256),
         "default (128 x 512 x 512)": (128, 512, 512)}


def synthetic_name(seed: int) -> str:
    """The files' common name: one cell per seed in a folder."""
    return f"synthetic_seed{seed}"


def synthetic_job(spec: CellSpec, imaging: ImagingSpec, seed: int, folder: Path) -> Job[dict]:
    """Simulate and write as a job; coarse progress (simulate, write) is enough for a sample."""
    yield Progress(0, 2, "simulating the cell and its tilt series")
    result = simulate(spec, imaging, seed=seed)
    yield Progress(1, 2, f"writing to {folder}")
    files = write_synthetic(result, folder, name=synthetic_name(seed), overwrite=True)
    yield Progress(2, 2, "written")
    return files


class SyntheticCellWidget(Container):
    """Pick a size, voxel size, noise and seed; the files are written, then opened."""

    def __init__(self, napari_viewer):
        self.viewer = napari_viewer
        self.size = ComboBox(label="Size (z y x)", choices=list(SIZES), value=list(SIZES)[1])
        self.voxel = FloatSpinBox(label="Voxel size (A)", value=10.0, min=2.0, max=50.0, step=1.0)
        self.snr = FloatSpinBox(label="SNR per tilt", value=0.5, min=0.01, max=100.0, step=0.1)
        self.seed = SpinBox(label="Seed", value=0, min=0, max=2**31 - 1)
        self.folder = FileEdit(label="Save to", mode="d", value=Path.home() / "tomoseg_synthetic")
        self.button = PushButton(text="Make synthetic cell")
        self.progress = ProgressBar(label="Progress", value=0, max=1, visible=False)
        self.status = Label(value="")
        super().__init__(widgets=[self.size, self.voxel, self.snr, self.seed, self.folder,
                                  self.button, self.progress, self.status])
        self.button.changed.connect(self._start)
        self.handle: JobHandle | None = None

    @property
    def worker(self):
        """The running job's napari worker (its ``finished`` signal), or None."""
        return self.handle.worker if self.handle is not None else None

    def _start(self) -> None:
        folder, name = Path(self.folder.value), synthetic_name(int(self.seed.value))
        if folder.is_file():
            self.status.value = f"'Save to' is a file ({folder}): choose a folder."
            show_error(self.status.value)
            return
        if not may_replace(self.native, [*folder.glob(f"{name}.*"), *folder.glob(f"{name}_*"),
                                         folder / "ribosome_reference.mrc"],
                           "a new cell (another seed or folder keeps them)"):
            self.status.value = f"not made: {name} in {folder} is kept"
            return
        spec = CellSpec(shape=SIZES[self.size.value], voxel_size=float(self.voxel.value))
        imaging = ImagingSpec(snr=float(self.snr.value))
        self.button.enabled = False
        self.progress.visible = True
        self.handle = start_job(synthetic_job(spec, imaging, int(self.seed.value),
                                              Path(self.folder.value)),
                                on_progress=self._on_progress, on_done=self._on_done,
                                on_error=self._on_error, owner=self)

    def _on_progress(self, progress: Progress) -> None:
        self.progress.max = progress.total
        self.progress.value = progress.step
        self.status.value = progress.message

    def _on_error(self, exc: Exception) -> None:
        self.button.enabled = True
        self.progress.visible = False
        line = report_error(exc, lambda line: show_error(f"Could not make the synthetic cell: {line}"))
        self.status.value = f"failed: {line}"

    def _on_done(self, files: dict) -> None:
        self.button.enabled = True
        self.progress.visible = False
        data, kwargs, _ = volume_layer(files["tomogram"])
        image = self.viewer.add_image(data, **kwargs)
        tag(image, "tomogram")
        for feature in FEATURES:
            labels, lkw, _ = volume_layer(files[feature])
            lkw.update(name=f"truth: {feature}", opacity=0.5, visible=feature == "membrane")
            tag(self.viewer.add_labels(labels, **lkw), "truth", feature=feature)
        pdata, pkw, _ = points_layer(files["particles"], frame_from_metadata(image.metadata))
        pkw.update(name="truth: ribosome centres", visible=False)
        tag(self.viewer.add_points(pdata, **pkw), "truth", feature="ribosome")
        count = len(pdata)  # a small cell's membranes can leave no room for one
        note = (f"{count} ribosomes" if count else
                "no ribosomes (no room between its membranes): choose a larger size to pick")
        self.status.value = f"written to {files['tomogram'].parent}; {note}"
        show_info(f"Synthetic cell written to {files['tomogram'].parent}; {note}")
