"""Trace filaments through a probability layer: numbered tubes (Labels) and points along
them (Points, one colour per filament), exported as RELION helical STAR, CSV or JSON.

Tracing is ``jobs.filaments.trace_job``, the CLI's (``tomoseg trace``), started in a
thread. The points of a session's map are kept in the session as they are edited
(``filament_layers``); nothing else is written until Export.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSlider, FloatSpinBox, Label, \
    LineEdit, PushButton
from napari.layers import Image, Labels, Points
from napari.utils.notifications import show_info

from ..errors import TomosegError
from ..features import FILAMENT_DIAMETERS
from ..filaments import Filaments, FilamentSettings
from ..io.particle_files import eman2_box_size, write_particles
from ..io.particles import TomogramFrame
from ..filament_points import tubes_from_points
from ..jobs.filaments import trace_job
from ..jobs.progress import Progress
from ..layer_data import frame_from_metadata, frame_metadata
from ..picks_store import SavedPicks
from .confirm import may_replace
from .filament_layers import (DIAMETER, EDITED, ROLE, add_filament_points, layer_table,
                              same_tomogram, save_or_say, set_aside_edited)
from .layer_tags import layers_with, tag, tag_of
from .notify import guarded, report_error
from .picking_sources import (check_chosen_map, is_probability, snapshot, source_frame,
                              stored_threshold)
from .session_layers import session_of_map
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
        self.tubes_button = PushButton(text="Tubes from points", tooltip=(
            "draw the tubes again around the selected filaments layer's points as they lie "
            "now (after edits, or a restored session)"))
        self.extend([self.source, self.feature, self.diameter, self.threshold, self.stretch,
                     self.trace_button, self.status, self.tubes_button, self.output,
                     self.export_button])
        self.handle: JobHandle | None = None
        self.result: tuple[Filaments, TomogramFrame, FilamentSettings, str] | None = None
        self.trace_button.changed.connect(guarded(self._trace_or_stop))
        self.export_button.changed.connect(guarded(self._export_asking))
        self.tubes_button.changed.connect(guarded(self.draw_tubes))
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
        '... (edited)'). The points of a session's map are kept in the session."""
        session = session_of_map(self.viewer, layer)
        for old in [o for o in layers_with(self.viewer, ROLE, feature=feature)
                    if same_tomogram(o, frame.name, tag_of(layer).get("tomogram"))]:
            if old.metadata.get(CHECKSUM) == _checksum(old.data):
                self.viewer.layers.remove(old)
            elif isinstance(old, Points):  # edited by hand since: work, kept beside the new
                set_aside_edited(old)
            else:
                old.name = f"{old.name} (edited)"
                tag(old, EDITED, feature=feature)
        place = {"scale": layer.scale, "translate": layer.translate, "units": layer.units}
        tubes = self.viewer.add_labels(found.tubes, name=f"{feature} tubes", opacity=0.4, **place)
        tag(tubes, ROLE, feature=feature, tomo=frame.name)
        table = found.table(frame.voxel_size, settings.spacing or settings.diameter / 2)
        saved = SavedPicks(feature, table[["z", "y", "x"]].to_numpy(float),
                           table.drop(columns=["z", "y", "x"]), frame_metadata(frame),
                           diameter=settings.diameter)
        points = add_filament_points(self.viewer, saved, place, session,
                                     tag_of(layer).get("tomogram"))
        for added in (tubes, points):
            added.metadata[CHECKSUM] = _checksum(added.data)
        kept = save_or_say(points) if len(table) else None  # nothing found: nothing kept
        self.result = (found, frame, settings, feature)
        lengths = found.lengths(frame.voxel_size)
        self.status.value = (f"{len(lengths)} filaments" + (
            f", {sum(lengths) / 10:.0f} nm in all, the longest {max(lengths) / 10:.0f} nm"
            if lengths else ": lower the threshold or the straight stretch, or check the "
                            "diameter") + ("; kept in the session" if kept else ""))
        return tubes, points

    def _export_asking(self) -> Path | None:
        path = Path(self.output.value)
        if not may_replace(self.native, [path], "the points along the filaments"):
            self.status.value = f"not exported: {path.name} kept"
            return None
        return self.export()

    def export(self) -> Path:
        """The points of the selected filaments layer (else the newest) as they are now:
        points deleted by hand are left out, ones moved or added carry the columns of the
        filament they joined; in the format the file's suffix names."""
        points = self._points_layer()
        if points is None:
            raise TomosegError("trace first: there are no filaments to export.")
        if not len(points.data):
            raise TomosegError("the layer holds no filament points (none traced, or every one "
                               "deleted): trace again to export.")
        table = layer_table(points)
        feature = str(tag_of(points).get("feature") or "filament")
        table["feature"] = feature
        frame = frame_from_metadata(points.metadata)
        path = Path(self.output.value)
        diameter = float(points.metadata.get(DIAMETER) or self.diameter.value)
        write_particles(path, table, frame, feature=feature,
                        box_size=eman2_box_size(diameter, frame.voxel_size))
        show_info(f"{len(table)} points along {table['filament'].nunique()} filaments of "
                  f"'{points.name}' written to {path}")
        return path

    def draw_tubes(self) -> JobHandle:
        """Tubes around the selected (else newest) filaments layer's points, in a thread, as
        the Labels layer 'FEATURE tubes (from points)' (an earlier one of it replaced)."""
        points = self._points_layer()
        if points is None or not len(points.data):
            raise TomosegError("trace first, or restore a session with traced filaments: "
                               "there are no filament points to draw tubes around.")
        feature = str(tag_of(points).get("feature") or "filament")
        frame = frame_from_metadata(points.metadata)
        diameter = float(points.metadata.get(DIAMETER) or self.diameter.value)
        table, place = layer_table(points), {"scale": points.scale,
                                             "translate": points.translate,
                                             "units": points.units}

        def job():
            yield Progress(0, 1, f"drawing the tubes of {feature}")
            return tubes_from_points(table, frame.shape, frame.voxel_size, diameter)

        def show(tubes) -> None:
            name = f"{feature} tubes (from points)"
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
            added = self.viewer.add_labels(tubes, name=name, opacity=0.4, **place)
            tag(added, EDITED, feature=feature)  # never replaced by a trace unasked
            self.status.value = f"tubes of {len(np.unique(tubes)) - 1} filaments drawn"

        self.handle = start_job(job(), on_done=show, owner=self,
                                on_error=lambda exc: setattr(self.status, "value",
                                                             report_error(exc)))
        return self.handle

    def _points_layer(self) -> Points | None:
        """The selected layer if it holds traced points, else the newest such layer."""
        found = [layer for layer in self.viewer.layers if isinstance(layer, Points)
                 and tag_of(layer).get("role") in (ROLE, EDITED)]
        active = self.viewer.layers.selection.active
        return active if active in found else (found[-1] if found else None)
