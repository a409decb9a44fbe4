"""Look at a tomogram: thick slabs with display filters, pyramids, surfaces and numbers.

Surfaces and numbers cover whole volumes, so they run as ``jobs.explore``
jobs through ``start_job``, never on the GUI thread.

The slab layer is a :class:`~napari_tomoseg.explore.view.SlabView` of the
tomogram: napari asks it for the plane in view (XY, or XZ/YZ after rolling
the axes) and gets the filtered mean of ``thickness`` planes around it. The
tomogram layer itself is never changed.
"""

from __future__ import annotations

import numpy as np
from pathlib import Path

from magicgui.widgets import (CheckBox, ComboBox, Container, FileEdit, FloatSpinBox, Label,
                              PushButton, SpinBox)
from napari.layers import Image, Labels, Points
from napari.utils.notifications import show_info

from ..errors import TomosegError
from ..explore import DisplaySettings, multiscale_pyramid, particle_density
from ..explore.display import display_plane
from ..explore.surfaces import Surface, default_mesh_step
from ..explore.view import SlabView
from ..features import FEATURE_COLOURS
from ..jobs.explore import numbers_job, surface_job
from ..jobs.progress import Job
from ..layer_data import frame_from_metadata
from .layer_tags import has_role, incomplete_reason, tag_of
from .picking_sources import stored_threshold
from .notify import guarded, report_error
from .worker import JobHandle, start_job
from .camera import camera_of


class ExploreWidget(Container):
    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.tomogram = ComboBox(label="Tomogram", choices=self._images)
        self.thickness = SpinBox(label="Slab (slices)", value=7, min=1, max=201, step=2)
        self.lowpass = FloatSpinBox(label="Low-pass (nm)", value=0.0, min=0.0, max=100.0, step=0.5)
        self.highpass = FloatSpinBox(label="High-pass (nm)", value=0.0, min=0.0, max=500.0, step=5.0)
        self.invert = CheckBox(text="Invert contrast", value=False)
        self.slab_button = PushButton(text="Show slab view")
        self.ortho_button = PushButton(text="XZ / YZ views at the cursor")
        self.ruler_button = PushButton(text="Ruler (nm)")
        self.pyramid_button = PushButton(text="Open as pyramid (large tomograms)")
        self.segmentation = ComboBox(label="Segmentation", choices=self._volumes)
        self.threshold = FloatSpinBox(label="Threshold", value=0.5, min=0.0, max=1000.0, step=0.05)
        self.mesh_step = SpinBox(label="Mesh step (voxels)", value=1, min=1, max=8)
        self.surface_button = PushButton(text="Add surface")
        self.numbers = Label(value="")
        self.numbers_button = PushButton(text="Numbers")
        self.output = FileEdit(label="Pictures to", mode="d", value=Path.home() / "tomoseg_pictures")
        self.snapshot_button = PushButton(text="Snapshot (PNG)")
        self.movie_frames = SpinBox(label="Movie frames", value=36, min=4, max=360)
        self.movie_button = PushButton(text="Turntable movie (GIF)")
        self.extend([self.tomogram, self.thickness, self.lowpass, self.highpass, self.invert,
                     self.slab_button, self.ortho_button, self.ruler_button, self.pyramid_button, self.segmentation, self.threshold,
                     self.mesh_step, self.surface_button, self.numbers_button, self.numbers,
                     self.output, self.snapshot_button, self.movie_frames, self.movie_button])
        self.slab_layer: Image | None = None
        self.surface_layer = None
        self.handle: JobHandle | None = None
        self.slab_button.changed.connect(guarded(self.show_slab))
        self.ortho_button.changed.connect(guarded(self.show_ortho_views))
        self.ruler_button.changed.connect(guarded(self.add_ruler))
        self.ortho = None
        self.ruler = None
        self.pyramid_button.changed.connect(guarded(self.show_pyramid))
        self.surface_button.changed.connect(guarded(self.add_surface))
        self.numbers_button.changed.connect(guarded(self.show_numbers))
        self.snapshot_button.changed.connect(guarded(self.snapshot))
        self.movie_button.changed.connect(guarded(self.turntable))
        for control in (self.thickness, self.lowpass, self.highpass, self.invert):
            control.changed.connect(guarded(self._settings_changed))
        self.segmentation.changed.connect(self._threshold_of_map)
        self.segmentation.changed.connect(self._mesh_step_of_volume)
        self._threshold_of_map()
        self._mesh_step_of_volume()
        self.viewer.layers.events.inserted.connect(lambda e: self._refresh())
        self.viewer.layers.events.removed.connect(lambda e: self._refresh())

    def _images(self, widget=None):
        return [l for l in self.viewer.layers if isinstance(l, Image) and l.ndim == 3
                and not isinstance(l.data, SlabView) and not l.multiscale]

    def _volumes(self, widget=None):
        """Segmentations first (labels, probability maps), so the default is one; then the
        other volumes (a density's iso-surface is a surface too)."""
        volumes = [l for l in self.viewer.layers if isinstance(l, (Image, Labels)) and l.ndim == 3
                   and not isinstance(l.data, SlabView) and not getattr(l, "multiscale", False)]
        return sorted(volumes, key=lambda l: not (isinstance(l, Labels)
                                                  or has_role(l, "probability")))

    def _refresh(self) -> None:
        self.tomogram.reset_choices()
        self.segmentation.reset_choices()

    def settings(self) -> DisplaySettings:
        return DisplaySettings(thickness=int(self.thickness.value), lowpass_nm=float(self.lowpass.value),
                               highpass_nm=float(self.highpass.value), invert=bool(self.invert.value))

    # slabs -------------------------------------------------------------------------------
    def show_slab(self) -> Image:
        layer = self.tomogram.value
        if layer is None:
            raise TomosegError("open a tomogram first.")
        view, limits = self._slab_view(layer.data, float(layer.scale[-1]))
        for old in [l for l in self.viewer.layers if isinstance(l.data, SlabView)
                    and l.data.volume is layer.data]:  # this tomogram's earlier slab view
            self.viewer.layers.remove(old)
        self.slab_layer = self.viewer.add_image(view, name=f"slab: {layer.name}", scale=layer.scale,
                                                units=layer.units, translate=layer.translate, contrast_limits=limits,
                                                colormap="gray")
        self.slab_layer.metadata["source"] = layer.name
        layer.visible = False
        return self.slab_layer

    def _slab_view(self, volume, voxel: float) -> tuple[SlabView, tuple[float, float]]:
        """The slab array-like for the current settings, and contrast from its middle plane."""
        view = SlabView(volume, voxel, self.settings())
        _, limits = view.cache.get(0, volume.shape[0] // 2, view.settings)
        return view, limits

    def _settings_changed(self, *args) -> None:
        if self.slab_layer is None or self.slab_layer not in self.viewer.layers:
            return
        old = self.slab_layer.data
        view, limits = self._slab_view(old.volume, old.cache.voxel_size)
        self.slab_layer.data = view
        self.slab_layer.contrast_limits = limits

    def show_ortho_views(self):
        """Dock XZ and YZ slabs that follow the mouse cursor."""
        from .ortho_views import OrthoViews

        layer = self.tomogram.value
        if layer is None:
            raise TomosegError("open a tomogram first.")
        if self.ortho is not None:
            self.ortho.close_views()
        self.ortho = OrthoViews(self.viewer, layer, self.settings())
        centre = tuple(n // 2 for n in layer.data.shape)
        self.ortho.show_at(centre)
        self.viewer.window.add_dock_widget(self.ortho, name="XZ / YZ", area="bottom")
        return self.ortho

    # measuring ---------------------------------------------------------------------------------
    def add_ruler(self):
        """A Shapes layer in line mode; the lengths of its lines are shown in nm."""
        layer = self.tomogram.value
        if layer is None:
            raise TomosegError("open a tomogram first.")
        if self.ruler is None or self.ruler not in self.viewer.layers:
            self.ruler = self.viewer.add_shapes(ndim=3, name="ruler (nm)", edge_color="#f2c94c",
                                                edge_width=max(float(layer.scale[-1]), 1.0),
                                                shape_type="line", units=layer.units)
            self.ruler.events.data.connect(lambda e: self._show_lengths())
        self.ruler.mode = "add_line"
        self.viewer.layers.selection.active = self.ruler
        return self.ruler

    def ruler_lengths_nm(self) -> list[float]:
        """Length of every line of the ruler, in nm (its data are world coordinates in A)."""
        if self.ruler is None:
            return []
        scale = np.asarray(self.ruler.scale)
        return [float(np.linalg.norm(np.diff(np.asarray(line) * scale, axis=0), axis=1).sum() / 10.0)
                for line in self.ruler.data]

    def _show_lengths(self) -> None:
        lengths = self.ruler_lengths_nm()
        self.numbers.value = "ruler: " + ", ".join(f"{v:.1f} nm" for v in lengths) if lengths else ""

    # large tomograms ------------------------------------------------------------------------
    def show_pyramid(self) -> Image:
        layer = self.tomogram.value
        if layer is None:
            raise TomosegError("open a tomogram first.")
        levels = multiscale_pyramid(layer.data)
        _, limits = display_plane(levels[-1], 0, levels[-1].shape[0] // 2, float(layer.scale[-1]))
        pyramid = self.viewer.add_image(levels, multiscale=True, name=f"pyramid: {layer.name}",
                                        scale=layer.scale, units=layer.units,
                                        translate=layer.translate,
                                        contrast_limits=limits, colormap="gray")
        layer.visible = False
        return pyramid

    # surfaces and numbers ---------------------------------------------------------------------
    def _segmentation(self):
        layer = self.segmentation.value
        if layer is None:
            raise TomosegError("choose a segmentation (probability map or labels).")
        why = incomplete_reason(layer)  # a preview slice or a stopped run: numbers of part
        if why:  # of the volume, shown as the tomogram's
            raise TomosegError(f"'{layer.name}' {why}.".replace("before picking", "first"))
        return layer

    def _threshold_of_map(self, *args) -> None:
        """A probability map's calibrated threshold (0.5 counted a 5-box ribosome map's
        uncertain fringe as ribosome), as Pick and Merge use it."""
        layer = self.segmentation.value
        if isinstance(layer, Image):
            stored = stored_threshold(layer)
            self.threshold.value = 0.5 if stored is None else float(stored)

    def _mesh_step_of_volume(self, *args) -> None:
        """A step that keeps a large volume's surface quick (it can be lowered by hand)."""
        layer = self.segmentation.value
        if layer is not None:
            self.mesh_step.value = default_mesh_step(layer.data.shape)

    def add_surface(self) -> JobHandle:
        """Start ``surface_job`` in a thread; the mesh is added when it is done."""
        layer = self._segmentation()
        labels = isinstance(layer, Labels)
        threshold = 0.5 if labels else float(self.threshold.value)
        job = _surface(layer.data, labels, threshold, float(layer.scale[-1]),
                       tuple(layer.translate), int(self.mesh_step.value))
        self.surface_button.enabled = False
        return self._start(job, lambda surface: self._show_surface(surface, layer),
                           lambda: setattr(self.surface_button, "enabled", True))

    def _start(self, job, on_done, on_finished) -> JobHandle:
        self.handle = start_job(
            job, on_progress=lambda progress: setattr(self.numbers, "value", progress.message),
            on_done=on_done, on_error=self._failed, on_finished=on_finished, owner=self)
        return self.handle

    def _failed(self, exc: BaseException) -> None:
        self.numbers.value = report_error(exc)

    def _show_surface(self, surface: Surface, layer):
        feature = tag_of(layer).get("feature") or layer.name.split(":")[-1].strip()
        colour = FEATURE_COLOURS.get(feature, "#f2c94c")
        self.surface_layer = self.viewer.add_surface(
            surface.as_layer_data(), name=f"surface: {layer.name}",
            colormap=_single_colour(colour), shading="smooth", units=layer.units)
        self.numbers.value = f"{len(surface.faces):,} triangles, {surface.area_nm2:,.0f} nm^2"
        show_info(self.numbers.value)
        return self.surface_layer

    def show_numbers(self) -> JobHandle:
        """Start ``numbers_job`` in a thread; the numbers appear below when it is done."""
        layer = self._segmentation()
        threshold = 0 if isinstance(layer, Labels) else float(self.threshold.value)
        self.numbers_button.enabled = False
        job = numbers_job(layer.data, threshold, float(layer.scale[-1]))
        return self._start(job, lambda numbers: self._show_numbers(numbers, layer),
                           lambda: setattr(self.numbers_button, "enabled", True))

    def _show_numbers(self, numbers: dict, layer) -> str:
        voxel = float(layer.scale[-1])
        lines = [f"{layer.name}: {numbers['fraction']:.2%} of the volume, "
                 f"{numbers['volume_um3']:.4f} um^3, {numbers['components']} components"]
        for points in _points_within(self.viewer, layer):
            density = particle_density(len(points.data), numbers["shape"], voxel)
            lines.append(f"{points.name}: {len(points.data)} particles, {density:,.0f} per um^3")
        self.numbers.value = "\n".join(lines)
        return self.numbers.value

    # pictures ---------------------------------------------------------------------------------
    def _next_path(self, stem: str, suffix: str) -> Path:
        folder = Path(self.output.value)
        folder.mkdir(parents=True, exist_ok=True)
        n = 1
        while (folder / f"{stem}_{n:03d}{suffix}").exists():
            n += 1
        return folder / f"{stem}_{n:03d}{suffix}"

    def snapshot(self) -> Path:
        """The canvas as it is now, as a PNG (numbered, never overwritten)."""
        import imageio.v3 as iio

        from ..io.atomic import atomic_path

        path = self._next_path("snapshot", ".png")
        image = self.viewer.screenshot(canvas_only=True)
        with atomic_path(path) as tmp:  # a failed write leaves no half PNG
            iio.imwrite(tmp, image, extension=".png")
        show_info(f"saved {path}")
        return path

    def turntable(self) -> Path:
        """A full turn about the vertical axis in 3D, as an animated GIF."""
        import imageio.v3 as iio

        frames = int(self.movie_frames.value)
        path = self._next_path("turntable", ".gif")
        camera = camera_of(self.viewer)
        previous = (self.viewer.dims.ndisplay, camera.angles)
        self.viewer.dims.ndisplay = 3
        start = camera.angles
        images = []
        self.movie_button.enabled = False  # screenshots must be drawn here, on the GUI thread:
        try:  # between frames the window is kept alive (seconds per frame on software GL)
            from qtpy.QtWidgets import QApplication

            for i in range(frames):
                camera.angles = (start[0], start[1] + 360.0 * i / frames, start[2])
                images.append(self.viewer.screenshot(canvas_only=True)[..., :3])
                QApplication.processEvents()
        finally:
            self.viewer.dims.ndisplay, camera.angles = previous
            self.movie_button.enabled = True
        from ..io.atomic import atomic_path

        rows, cols = (min(im.shape[k] for im in images) for k in (0, 1))  # a resize mid-way
        with atomic_path(path) as tmp:  # a failed write leaves no half GIF
            iio.imwrite(tmp, np.stack([im[:rows, :cols] for im in images]), extension=".gif",
                        duration=80, loop=0)
        show_info(f"saved {path} ({frames} frames)")
        return path


def _surface(data, labels: bool, threshold: float, voxel: float,
             origin: tuple[float, float, float], step: int) -> Job[Surface]:
    """``surface_job``; a Labels layer first becomes its 0/1 mask, in the thread too."""
    volume = (np.asarray(data) > 0).astype(np.float32) if labels else data
    return (yield from surface_job(volume, threshold, voxel, origin, step))


def _single_colour(colour: str):
    from napari.utils.colormaps import Colormap

    rgb = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    return Colormap([rgb + [1.0], rgb + [1.0]], name=f"tomoseg {colour}")


def _points_within(viewer, layer) -> list[Points]:
    """Points layers of the map's own tomogram: those that name a tomogram of its shape, or
    name none and lie inside it (every points layer was counted, another tomogram's too)."""
    shape = np.asarray(layer.data.shape)
    low = np.asarray(layer.translate, float)
    high = low + shape * np.asarray(layer.scale, float)
    found = []
    for points in (l for l in viewer.layers if isinstance(l, Points) and l.ndim == 3):
        frame = frame_from_metadata(points.metadata)
        if frame is not None:
            inside = tuple(frame.shape) == tuple(shape)
        else:
            world = np.asarray(points.data, float) * points.scale + points.translate
            inside = bool(len(world)) and bool(np.all((world >= low) & (world <= high)))
        if inside:
            found.append(points)
    return found
