"""The Filaments tab: tubes and points from a patchy map, replaced on a new trace, exported."""

from __future__ import annotations

import json

import numpy as np
import pytest

napari = pytest.importorskip("napari")

import starfile  # noqa: E402

from napari_tomoseg.metrics import dice  # noqa: E402

from .test_filaments import DIAMETER, VOXEL, _patchy_map  # noqa: E402


def _widget(make_napari_viewer):
    from napari_tomoseg._napari.filaments_widget import FilamentsWidget
    from napari_tomoseg._napari.layer_tags import tag

    viewer = make_napari_viewer()
    prob, tube, _ = _patchy_map()
    layer = viewer.add_image(prob, name="prediction: microtubule", scale=(VOXEL,) * 3,
                             translate=(30.0, 0.0, -20.0), metadata={"threshold": 0.5})
    tag(layer, "probability", feature="microtubule")
    widget = FilamentsWidget(viewer)
    assert widget.source.value is layer and widget.feature.value == "microtubule"
    assert widget.diameter.value == 250.0  # a microtubule's, until told otherwise
    widget.diameter.value = DIAMETER
    return viewer, widget, tube


def _traced(widget, qtbot):
    widget.result = None  # set again when this trace's layers are shown
    handle = widget.trace()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    qtbot.waitUntil(lambda: widget.result is not None, timeout=5_000)


def test_trace_shows_whole_tubes_and_points_and_exports_relion_helical_star(
        make_napari_viewer, qtbot, tmp_path):
    viewer, widget, tube = _widget(make_napari_viewer)
    _traced(widget, qtbot)
    tubes, points = viewer.layers["microtubule tubes"], viewer.layers["microtubule filaments"]
    assert dice(tubes.data > 0, tube) > 0.75
    np.testing.assert_allclose(tubes.translate, (30.0, 0.0, -20.0))
    np.testing.assert_allclose(points.translate, (30.0, 0.0, -20.0))
    assert set(points.features["filament"]) == {1} and len(points.data) >= 10
    assert "1 filaments" in widget.status.value
    _traced(widget, qtbot)  # again: the layers are replaced, not doubled
    assert [layer.name for layer in viewer.layers].count("microtubule tubes") == 1
    assert len(viewer.layers) == 3
    tubes = viewer.layers["microtubule tubes"]
    tubes.data[0, 0, :5] = 7  # painted by hand: work, never replaced by a new trace
    tubes.refresh()
    _traced(widget, qtbot)
    names = [layer.name for layer in viewer.layers]
    assert "microtubule tubes (edited)" in names and names.count("microtubule tubes") == 1
    assert (viewer.layers["microtubule tubes (edited)"].data[0, 0, :5] == 7).all()
    points = viewer.layers["microtubule filaments"]
    path = tmp_path / "mt.star"
    widget.output.value = path
    widget.export()
    table = starfile.read(path, always_dict=True)["particles"]
    assert len(table) == len(points.data)
    # Export writes the layer as it is now: a point deleted is left out, one added joins
    # the nearest filament
    first_track = float(points.features["track_length"][1])
    points.selected_data = {0}
    points.remove_selected()  # as the layer's delete key does
    along = np.diff(points.data[:2], axis=0)[0] * VOXEL  # the straight filament, as traced
    step = float(np.diff(points.features["track_length"][:2]).item())
    along *= np.sign(step) / np.linalg.norm(along)  # the way its track length grows
    points.add(points.data[0] + [0.0, 1.0, 1.0])
    edited = tmp_path / "edited.csv"
    widget.output.value = edited
    widget.export()
    import pandas as pd

    rows = pd.read_csv(edited)
    assert len(rows) == len(points.data) == len(table)
    assert set(rows["filament"]) == {1} and rows["tilt_prior"].notna().all()
    assert rows["track_length"].iloc[0] == pytest.approx(first_track)  # the deleted one is out
    # the added one: its nearest point's track length, moved along the filament by its step
    assert rows["track_length"].iloc[-1] == pytest.approx(
        first_track + float(np.dot([0.0, VOXEL, VOXEL], along)), abs=1.0)
    assert rows["track_length"].iloc[-1] != pytest.approx(first_track, abs=1.0)
    np.testing.assert_allclose(rows[["z", "y", "x"]].to_numpy()[-1], points.data[-1])
    widget.output.value = path
    assert set(table["rlnHelicalTubeID"]) == {1}
    assert {"rlnAngleTiltPrior", "rlnAnglePsiPrior", "rlnHelicalTrackLengthAngst"} <= set(table)
    # the CLI on the same map (as an MRC at the layer's place) writes the same points
    from napari_tomoseg.cli import main
    from napari_tomoseg.io.mrc import write_volume

    source = write_volume(tmp_path / "mt.mrc", widget.source.value.data, VOXEL, (30.0, 0.0, -20.0))
    assert main(["trace", str(source), str(tmp_path / "cli.star"), "--diameter", str(DIAMETER),
                 "--threshold", "0.5"]) == 0
    cli = starfile.read(tmp_path / "cli.star", always_dict=True)["particles"]
    columns = [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"] + ["rlnHelicalTubeID",
                                                                   "rlnAngleTiltPrior"]
    np.testing.assert_allclose(cli[columns].to_numpy(float), table[columns].to_numpy(float),
                               atol=1e-3)


def test_stop_leaves_no_layers_and_export_before_a_trace_says_why(make_napari_viewer, qtbot):
    from napari_tomoseg.errors import TomosegError

    viewer, widget, _ = _widget(make_napari_viewer)
    with pytest.raises(TomosegError, match="trace first"):
        widget.export()
    handle = widget.trace()
    widget._trace_or_stop()  # the button reads Stop while tracing
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    qtbot.waitUntil(lambda: widget.trace_button.text == "Trace", timeout=5_000)
    assert widget.status.value == "stopped"
    assert len(viewer.layers) == 1 and widget.result is None


def test_a_map_without_filaments_says_what_to_try(make_napari_viewer, qtbot):
    from napari_tomoseg._napari.filaments_widget import FilamentsWidget
    from napari_tomoseg._napari.layer_tags import tag

    viewer = make_napari_viewer()
    layer = viewer.add_image(np.zeros((24, 48, 48), np.float32), name="prediction: actin",
                             scale=(VOXEL,) * 3, metadata={"threshold": 0.5})
    tag(layer, "probability", feature="actin")
    widget = FilamentsWidget(viewer)
    assert widget.diameter.value == 70.0  # actin's
    _traced(widget, qtbot)
    assert widget.status.value.startswith("0 filaments: lower the threshold")
    assert len(viewer.layers["actin filaments"].data) == 0


def _session_dock(make_napari_viewer, tomogram, folder):
    from napari_tomoseg._napari.filaments_widget import FilamentsWidget
    from napari_tomoseg._napari.workflow_widget import TomosegWidget

    viewer = make_napari_viewer()
    (image,) = viewer.open(str(tomogram), plugin="napari-tomoseg")
    widget = TomosegWidget(viewer)
    widget.tomogram.value = image
    widget.start_session(folder)
    return viewer, widget, FilamentsWidget(viewer)


def test_edited_filament_points_are_kept_in_the_session_and_come_back(make_napari_viewer,
                                                                      qtbot, tmp_path):
    """Closing the viewer lost the traced points and every edit of them; a second trace left
    the edited layer with nothing to export it."""
    import pandas as pd

    from napari_tomoseg.feature_files import filaments_file
    from napari_tomoseg.io.mrc import write_volume

    prob, _, _ = _patchy_map()
    tomogram = write_volume(tmp_path / "TS_07.mrc", prob, VOXEL)  # any voxels of the shape
    folder = tmp_path / "TS_07.tomoseg"
    viewer, dock, widget = _session_dock(make_napari_viewer, tomogram, folder)
    dock.features.new_name.value = "microtubule"
    dock.features.add()
    overlay = dock.controller.overlay("microtubule")
    overlay.data = prob.astype(np.float16)  # what Segment leaves
    widget.source.reset_choices()
    widget.source.value = overlay
    widget.diameter.value = DIAMETER
    _traced(widget, qtbot)
    assert widget.status.value.endswith("kept in the session")
    points = viewer.layers["microtubule filaments"]
    saved = filaments_file(folder, "microtubule")
    traced = len(points.data)
    points.selected_data = {0, 1}
    points.remove_selected()
    assert len(json.loads(saved.read_text())["points"]) == traced - 2  # saved at once
    viewer2, _, widget2 = _session_dock(make_napari_viewer, tomogram, folder)
    restored = viewer2.layers["microtubule filaments"]
    np.testing.assert_allclose(restored.data, points.data, atol=1e-3)
    assert set(restored.features["filament"]) == {1}
    np.testing.assert_allclose(restored.translate, points.translate)
    out = tmp_path / "restored.csv"
    widget2.output.value = out
    widget2.export()  # no trace in this viewer: the restored layer is exported
    assert len(pd.read_csv(out)) == traced - 2
    handle = widget2.draw_tubes()  # the tubes are not kept: drawn from the points
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    qtbot.waitUntil(lambda: "microtubule tubes (from points)" in viewer2.layers, timeout=5_000)
    drawn = viewer2.layers["microtubule tubes (from points)"]
    assert dice(drawn.data > 0, viewer.layers["microtubule tubes"].data > 0) > 0.7
    np.testing.assert_allclose(drawn.translate, restored.translate)
    # a new trace keeps the edited layer beside it, exportable, its file kept aside
    _traced(widget, qtbot)
    assert len(json.loads(saved.read_text())["points"]) == traced
    assert len(json.loads(saved.with_name("microtubule.json.previous").read_text())["points"]) \
        == traced - 2
    edited = viewer.layers["microtubule filaments (edited)"]
    viewer.layers.selection.active = edited
    widget.output.value = tmp_path / "edited.csv"
    widget.export()
    assert len(pd.read_csv(tmp_path / "edited.csv")) == traced - 2
    dock.features.feature.value = "microtubule"  # the file follows a renamed feature
    dock.features.new_name.value = "MT"
    dock.features.rename()
    assert filaments_file(folder, "MT").is_file() and not saved.exists()
    moved = viewer.layers["MT filaments"]  # the open layer saves under the new name
    moved.selected_data = {0}
    moved.remove_selected()
    assert len(json.loads(filaments_file(folder, "MT").read_text())["points"]) == traced - 1
    assert not saved.exists()
    # a voxel size typed: the open points and the closed (edited) ones follow it, their
    # distances along the filament too
    tracks = json.loads(filaments_file(folder, "MT").read_text())["rows"]
    dock.session_panel.voxel.value = 13.0
    record = json.loads(filaments_file(folder, "MT").read_text())
    assert record["metadata"]["tomoseg"]["voxel_size"] == 13.0
    column = record["columns"].index("track_length")
    np.testing.assert_allclose([r[column] for r in record["rows"]],
                               [r[column] * 1.3 for r in tracks], rtol=1e-6)
    assert not (folder / "picks" / "MT.json").exists()  # never saved as picks
    viewer3, _, _ = _session_dock(make_napari_viewer, tomogram, folder)
    np.testing.assert_allclose(viewer3.layers["MT filaments"].scale, 13.0)


def test_a_trace_of_another_tomogram_leaves_the_edited_filaments_of_the_first(
        make_napari_viewer, qtbot):
    """Old layers were matched by feature alone: tracing TS_02 set TS_01's edited points
    aside (renamed, no longer saved)."""
    from napari_tomoseg._napari.layer_tags import tag, tag_of
    from napari_tomoseg.layer_data import geometry_metadata

    viewer, widget, _ = _widget(make_napari_viewer)
    _traced(widget, qtbot)
    first = viewer.layers["microtubule filaments"]
    first.selected_data = {0}
    first.remove_selected()  # edited
    prob, _, _ = _patchy_map(seed=1)
    other = viewer.add_image(prob, name="TS_02 microtubule", scale=(VOXEL,) * 3,
                             metadata={"threshold": 0.5,
                                       **geometry_metadata("TS_02", prob.shape, VOXEL,
                                                           (0.0, 0.0, 0.0))})
    tag(other, "probability", feature="microtubule")
    widget.source.reset_choices()
    widget.source.value = other
    _traced(widget, qtbot)
    assert tag_of(first)["role"] == "filaments" and "(edited)" not in first.name
    assert sum(tag_of(l).get("role") == "filaments" for l in viewer.layers) == 4
