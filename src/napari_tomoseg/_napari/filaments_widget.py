"""Trace filaments through a probability layer: numbered tubes (Labels) and points along
them (Points, one colour per filament), exported as RELION helical STAR, CSV or JSON.

Tracing is ``jobs.filaments.trace_job``, the CLI's (``tomoseg trace``), started in a
thread; it writes nothing until Export.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSlider, FloatSpinBox, Label, \
    LineEdit, PushButton
from napari.layers import Image, Labels, Points
from napari.utils.notifications import show_info
from scipy.spatial import cKDTree

from ..errors import TomosegError
from ..features import FILAMENT_DIAMETERS
from ..filaments import Filaments, FilamentSettings
from ..io.particle_files import eman2_box_size, write_particles
from ..io.particles import TomogramFrame
from ..jobs.filaments import trace_job
from .confirm import may_replace
from .layer_tags import layers_with, tag, tag_of
from .notify import guarded, report_error
from .picking_sources import (check_chosen_map, is_probability, snapshot, source_frame,
                              stored_threshold)
from .voxel_size import voxel_size_of
from .worker import JobHandle, start_job, stop_or_start

CHECKSUM = "tomoseg_checksum"  # of the data as traced: a layer edited since is kept


def _checksum(data) -> int:
    array = np.ascontiguousarray(data)  # no copy for a layer's own array
    raw = memoryview(array).cast("B") if array.size else b""  # an empty one cannot be cast
    return zlib.crc32(raw, zlib.crc32(repr(array.shape).encode()))


class FilamentsWidget(Container):
    def __init__(self, napari_viewer):
        super().__init__(labels=True)
        self.viewer = napari_viewer
        self.source = ComboBox(label="Probability", choices=self._sources)
        self.feature = LineEdit(label="Feature", value="microtubule")
        self.diameter = FloatSpinBox(label="Diameter (A)", value=250.0, min=10.0, max=5000.0,
                                     step=10.0, tooltip="outer diameter: microtubule 250, "
                                                        "actin 70")
        self.threshold = FloatSlider(label="Threshold", value=0.5, min=0.05, max=0.95, step=0.05)
        self.stretch = FloatSpinBox(label="Straight stretch", value=3.0, min=0.5, max=20.0,
                                    step=0.5, tooltip="diameters compared along a filament "
                                                      "(less for curved ones)")
        self.trace_button = PushButton(text="Trace", tooltip="while tracing: Stop")
        self.status = Label(value="")
        self.output = FileEdit(label="Export to", mode="w", filter="*.star *.csv *.json",
                               value=Path.home() / "filaments.star")
        self.export_button = PushButton(text="Export points", tooltip=(
            "the points layer as it is now: deleted points left out, added or moved ones "
            "join the nearest filament"))
        self.extend([self.source, self.feature, self.diameter, self.threshold, self.stretch,
                     self.trace_button, self.status, self.output, self.export_button])
        self.handle: JobHandle | None = None
        self.result: tuple[Filaments, TomogramFrame, FilamentSettings, str] | None = None
        self.trace_button.changed.connect(guarded(self._trace_or_stop))
        self.export_button.changed.connect(guarded(self._export_asking))
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(lambda e: self.source.reset_choices())
        self.source.changed.connect(self._defaults_from_source)
        self.feature.changed.connect(self._diameter_of_feature)
        self._defaults_from_source()

    def _sources(self, widget=None) -> list[Image]:
        return [layer for layer in self.viewer.layers if is_probability(layer)]

    def _defaults_from_source(self, *args) -> None:
        layer = self.source.value
        if layer is None:
            return
        self.feature.value = str(tag_of(layer).get("feature") or self.feature.value)
        stored = stored_threshold(layer)
        if stored is not None:
            self.threshold.value = min(max(stored, 0.05), 0.95)

    def _diameter_of_feature(self, *args) -> None:
        known = FILAMENT_DIAMETERS.get(self.feature.value.strip())
        if known:
            self.diameter.value = known

    def _trace_or_stop(self) -> JobHandle | None:
        return stop_or_start(self.handle, self.status, self.trace)

    def trace(self) -> JobHandle:
        """Start ``trace_job`` on the chosen map in a thread; its result becomes layers."""
        layer = self.source.value
        check_chosen_map(layer, "tracing", "trace")
        settings = FilamentSettings(diameter=float(self.diameter.value),
                                    threshold=float(self.threshold.value),
                                    stretch=float(self.stretch.value))
        feature = self.feature.value.strip() or "filament"
        voxel_size_of(layer)  # a usable, cubic voxel size, or a message saying what to do
        frame = source_frame(self.viewer, layer)
        self.trace_button.text = "Stop"
        self.status.value = f"tracing {feature}..."
        self.handle = start_job(
            trace_job(snapshot(layer.data), frame, settings, feature),
            on_progress=lambda progress: setattr(self.status, "value", progress.message),
            on_done=lambda found: self.show(found, layer, frame, settings, feature),
            on_error=lambda exc: setattr(self.status, "value", report_error(exc)),
            on_cancelled=lambda: setattr(self.status, "value", "stopped"),
            on_finished=lambda: setattr(self.trace_button, "text", "Trace"), owner=self)
        return self.handle

    def show(self, found: Filaments, layer, frame: TomogramFrame, settings: FilamentSettings,
             feature: str) -> tuple[Labels, Points]:
        """The tubes as Labels and the points along them as Points, on the map's grid; a
        new trace of the same feature replaces both, unless edited since (then kept, named
        '... (edited)')."""
        for old in list(layers_with(self.viewer, "filaments", feature=feature)):
            if old.metadata.get(CHECKSUM) == _checksum(old.data):
                self.viewer.layers.remove(old)
            else:  # edited by hand since: work, kept beside the new trace
                old.name = f"{old.name} (edited)"
                tag(old, "edited filaments", feature=feature)
        place = {"scale": layer.scale, "translate": layer.translate}
        tubes = self.viewer.add_labels(found.tubes, name=f"{feature} tubes", opacity=0.4, **place)
        table = found.table(frame.voxel_size, settings.spacing or settings.diameter / 2)
        points = self.viewer.add_points(
            table[["z", "y", "x"]].to_numpy(float), name=f"{feature} filaments", **place,
            size=settings.diameter / 4 / frame.voxel_size,
            features=table.drop(columns=["z", "y", "x"]),
            # a colour per filament; none found: napari cannot colour by an empty column
            **({"face_color": "filament", "face_colormap": "turbo"} if len(table) else {}))
        for added in (tubes, points):
            tag(added, "filaments", feature=feature)
            added.metadata[CHECKSUM] = _checksum(added.data)
        self.result = (found, frame, settings, feature)
        lengths = found.lengths(frame.voxel_size)
        self.status.value = (f"{len(lengths)} filaments" + (
            f", {sum(lengths) / 10:.0f} nm in all, the longest {max(lengths) / 10:.0f} nm"
            if lengths else ": lower the threshold or the straight stretch, or check the "
                            "diameter"))
        return tubes, points

    def _export_asking(self) -> Path | None:
        path = Path(self.output.value)
        if not may_replace(self.native, [path], "the points along the filaments"):
            self.status.value = f"not exported: {path.name} kept"
            return None
        return self.export()

    def export(self) -> Path:
        """The points of the traced feature's layer as they are now (points deleted by hand
        are left out; one added or moved takes the filament columns of the nearest traced
        point), in the format the file's suffix names."""
        if self.result is None:
            raise TomosegError("trace first: there are no filaments to export.")
        found, frame, settings, feature = self.result
        table = found.table(frame.voxel_size, settings.spacing or settings.diameter / 2)
        points = self._points_layer(feature)
        if points is not None:
            table = _as_shown(table, np.asarray(points.data, float).reshape(-1, 3))
        table["feature"] = feature
        path = Path(self.output.value)
        write_particles(path, table, frame, feature=feature,
                        box_size=eman2_box_size(settings.diameter, frame.voxel_size))
        show_info(f"{len(table)} points along {table['filament'].nunique()} filaments "
                  f"written to {path}")
        return path

    def _points_layer(self, feature: str) -> Points | None:
        found = [layer for layer in layers_with(self.viewer, "filaments", feature=feature)
                 if isinstance(layer, Points)]
        return found[-1] if found else None


def _as_shown(traced: pd.DataFrame, zyx: np.ndarray) -> pd.DataFrame:
    """The points now in the layer (z y x, the map's pixels), each with the filament columns
    of the traced point nearest to it: its own where it was not moved. Matched by place, not
    by the layer's features, which napari copies from the last selected point to a new one."""
    if not len(zyx):
        raise TomosegError("every filament point was deleted: trace again to export.")
    if traced.empty:
        raise TomosegError("the trace found no filaments: there is nothing to export.")
    nearest = cKDTree(traced[["z", "y", "x"]].to_numpy(float)).query(zyx)[1]
    table = traced.iloc[nearest].reset_index(drop=True)
    table[["z", "y", "x"]] = zyx
    return table
