"""Section 1: which tomogram, its voxel and tilt-series pixel sizes, and its session."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, PushButton
from napari.layers import Image
from napari.utils.notifications import show_info

from ...session import Session
from ...session_open import restamp_models
from ..layer_tags import has_role, tag_of, tomogram_key
from ..notify import guarded
from ..filament_layers import rescale_filaments
from ..session_layers import save_or_say
from ..tilt_series_size import apply_tilt_series_pixel_size, tilt_series_pixel_size_of
from ..voxel_size import apply_voxel_size
from .state import Workflow


def tomogram_layers(viewer) -> list[Image]:
    """3D images that are data, not the plugin's own probability maps."""
    return [layer for layer in viewer.layers if isinstance(layer, Image) and layer.ndim == 3
            and not has_role(layer, "probability")]


class SessionPanel(Container):
    def __init__(self, workflow: Workflow):
        super().__init__(labels=True)
        self.workflow = workflow
        viewer = workflow.viewer
        self.tomogram = ComboBox(label="Tomogram", choices=lambda w: tomogram_layers(viewer))
        self.voxel = FloatSpinBox(label="Voxel size (A)", value=0.0, min=0.0, max=1000.0,
                                  step=0.1, tooltip="0: from the file's header")
        self.tilt_series = FloatSpinBox(
            label="Tilt-series pixel size (A)", value=0.0, min=0.0, max=1000.0, step=0.001,
            tooltip="pixel size of the unbinned tilt series (RELION's rlnTomoTiltSeriesPixelSize),"
                    " written into STAR files of picks; 0: unknown (not written)")
        self.folder = FileEdit(label="Session folder", mode="d", value="",
                               tooltip="where boxes, masks and models are kept; empty: NAME.tomoseg "
                                       "beside the tomogram (or in your data folder when that "
                                       "one is read-only or a bundled sample)")
        self.start = PushButton(text="Start / restore session")
        self.info = Label(value="Open a tomogram, then start a session.")
        self.extend([self.tomogram, self.voxel, self.tilt_series, self.folder, self.start,
                     self.info])
        self.start.changed.connect(guarded(lambda: self.start_session()))
        # once typed (Enter or leaving the field), not at every key: typing 7.5 passed through
        # 7, rescaling every layer and restamping the session's models on the way
        self.voxel.native.setKeyboardTracking(False)
        self.voxel.changed.connect(guarded(self._set_voxel_size))
        self.tilt_series.changed.connect(guarded(self._set_tilt_series_pixel_size))
        self.tomogram.changed.connect(self._show_tilt_series_pixel_size)
        self._filled = ""  # the folder this panel wrote into the field (not the user)

    def start_session(self, folder: str | Path | None = None) -> Session:
        """The chosen folder (else the typed one, else the default) holds the session."""
        typed = str(self.folder.value)
        if folder is None and typed not in ("", "."):
            folder = Path(typed)
        layer = self.tomogram.value
        session = self.workflow.open_session(layer, folder)
        self._show_voxel_size(layer)  # the session's own size, if a restore applied it
        # the session's value wins; else the one typed (or carried by the layer) is saved
        known = session.tilt_series_pixel_size or tilt_series_pixel_size_of(layer)
        self.tilt_series.value = known or 0.0
        self._set_tilt_series_pixel_size()
        self.info.value = f"Session folder: {session.folder}"
        self.folder.line_edit.value = self._filled = str(session.folder)
        return session

    def _set_voxel_size(self, *args) -> None:
        """The typed size becomes the tomogram's scale, and that of every layer drawn on it
        (boxes, masks, predictions): alone, the tomogram moved under its boxes and paint."""
        layer = self.tomogram.value
        apply_voxel_size(layer, self.voxel.value)
        if layer is None or not self.voxel.value:
            return
        key = tomogram_key(layer)
        for other in self.workflow.viewer.layers:
            if other is not layer and tag_of(other).get("tomogram") == key:
                other.scale = layer.scale
                frame = other.metadata.get("tomoseg")  # picks: STAR files are written with it
                if isinstance(frame, dict) and "voxel_size" in frame:
                    old = float(frame["voxel_size"] or 0)
                    frame["voxel_size"] = float(self.voxel.value)
                    if tag_of(other).get("role") == "filaments":  # never into picks/
                        rescale_filaments(other, old, float(self.voxel.value))
                    elif has_role(other, "picks"):  # a session's picks, with the new size;
                        save_or_say(other)  # a failure is said, the others still follow
        c = self.workflow.controller
        if c is not None and c.image is layer and c.session.voxel_size != float(self.voxel.value):
            old, c.session.voxel_size = c.session.voxel_size, float(self.voxel.value)
            c.session.save()
            moved = restamp_models(c.session, old, c.session.voxel_size)
            for feature in moved:
                model = self.workflow.models.get(feature)  # trained on these voxels
                if model is not None:
                    self.workflow.models[feature] = replace(model,
                                                            voxel_size=c.session.voxel_size)
            if moved:
                show_info(f"The models of {', '.join(map(repr, moved))} were trained on these "
                          f"voxels: they now read {c.session.voxel_size:g} A too.")

    def _set_tilt_series_pixel_size(self, *args) -> None:
        """The typed size goes into the layer's metadata (and so into STAR files of picks
        on it) and into the session of that tomogram."""
        layer = self.tomogram.value
        apply_tilt_series_pixel_size(layer, self.tilt_series.value, self.workflow.viewer)
        c = self.workflow.controller
        if c is not None and c.image is layer:
            size = float(self.tilt_series.value) or None
            if c.session.tilt_series_pixel_size != size:
                c.session.tilt_series_pixel_size = size
                c.session.save()

    def _show_voxel_size(self, layer) -> None:
        """The layer's own typed size, else 0 (the header's): the last tomogram's stayed, and
        typing the same number for this one did nothing; a size a restore took from the
        session showed 0."""
        meta = (layer.metadata.get("tomoseg") or {}) if layer is not None else {}
        with self.voxel.changed.blocked():
            self.voxel.value = float(meta.get("voxel_size") or 0.0) \
                if meta.get("voxel_size_typed") else 0.0

    def _show_tilt_series_pixel_size(self, *args) -> None:
        """Another tomogram chosen: show its own value and its own session folder, not the last
        one's (Start then made 'A.tomoseg-2' for B, and for A again an empty '-2-2')."""
        self.tilt_series.value = tilt_series_pixel_size_of(self.tomogram.value) or 0.0
        layer = self.tomogram.value
        self._show_voxel_size(layer)
        if str(self.folder.line_edit.value) not in ("", ".", self._filled):
            return  # typed by the user: theirs to keep
        own = (layer.metadata.get("tomoseg") or {}).get("session") if layer is not None else None
        # empty means the default folder (FileEdit would turn a value of "" into the cwd)
        self.folder.line_edit.value = self._filled = str(own or "")
