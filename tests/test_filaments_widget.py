"""The Filaments tab: tubes and points from a patchy map, replaced on a new trace, exported."""

from __future__ import annotations

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
    points.add(points.data[0] + [0.0, 1.0, 1.0])
    edited = tmp_path / "edited.csv"
    widget.output.value = edited
    widget.export()
    import pandas as pd

    rows = pd.read_csv(edited)
    assert len(rows) == len(points.data) == len(table)
    assert set(rows["filament"]) == {1} and rows["tilt_prior"].notna().all()
    assert rows["track_length"].iloc[0] == pytest.approx(first_track)  # the deleted one is out
    assert rows["track_length"].iloc[-1] == pytest.approx(first_track)  # the added one's nearest
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
