"""The averaging widget in a real viewer: QC'd points in, live average, files and vectors out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

napari = pytest.importorskip("napari")

from napari_tomoseg._napari.layer_tags import find  # noqa: E402
from napari_tomoseg.errors import TomosegError  # noqa: E402
from napari_tomoseg.jobs.progress import Progress  # noqa: E402
from napari_tomoseg.io.mrc import write_volume  # noqa: E402
from napari_tomoseg.io.particles import TomogramFrame, read_star  # noqa: E402
from napari_tomoseg.synthetic.particle_field import simulate_particle_field  # noqa: E402


@pytest.fixture(scope="module")
def field():
    return simulate_particle_field(24, voxel_size=15.0, snr=5.0, seed=5)


def _viewer_with_particles(make_napari_viewer, field):
    viewer = make_napari_viewer()
    origin = (30.0, -60.0, 90.0)
    tomogram = viewer.add_image(field.tomogram, name="field", scale=(15.0,) * 3, translate=origin)
    points = viewer.add_points(field.zyx * 15.0 + np.array(origin), name="picks",
                               features=pd.DataFrame({"status": np.zeros(len(field.zyx), int),
                                                      "feature": "ribosome"}))
    return viewer, tomogram, points


def test_average_shows_layers_and_writes_only_kept_picks(make_napari_viewer, qtbot, tmp_path, field,
                                                         monkeypatch):
    from napari_tomoseg._napari.averaging_widget import AveragingWidget

    viewer, tomogram, points = _viewer_with_particles(make_napari_viewer, field)
    points.features.loc[[0, 1], "status"] = -1  # rejected in QC
    reference = write_volume(tmp_path / "ref.mrc", field.reference(32), 15.0)
    widget = AveragingWidget(viewer)
    widget.average_view.show = False  # its own window; software GL draws iso-surfaces slowly
    widget.tomogram.value, widget.particles.value = tomogram, points
    widget.iterations.value = 1
    widget.angular_step.value = 45.0  # 163 orientations: enough to place the centres
    widget.reference.value = reference
    from napari_tomoseg.session import user_sessions_folder

    # defaults: the session folder of the tomogram (none on disk here: the user's data folder)
    assert widget.output.value == user_sessions_folder() / "field.tomoseg" / "averages"
    assert widget.particles.value is points  # the latest picks
    widget.output.value = tmp_path / "out"
    np.testing.assert_allclose(widget.picked_voxels(), field.zyx[2:], atol=1e-6)
    handle = widget.run()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=120_000)
    qtbot.waitUntil(lambda: widget.result is not None, timeout=5_000)
    view = widget.average_view.viewer  # the average has a 3D viewer of its own, centred on it
    average = find(view, "average")
    assert average.data.shape == (32, 32, 32) and average.rendering == "iso"
    assert find(viewer, "average") is None and view.dims.ndisplay == 3
    np.testing.assert_allclose(view.camera.center, np.full(3, 15.0 * 31 / 2), atol=15.0)
    frame = TomogramFrame("field", field.tomogram.shape, 15.0, (30.0, -60.0, 90.0))
    table = read_star(tmp_path / "out" / "average_particles.star", frame)
    kept = len(widget.subtomograms.data)
    assert len(table) == kept <= len(field.zyx) - 2
    assert set(table["feature"]) == {"ribosome"}  # the picks' feature column is kept, as by the CLI
    assert len(viewer.layers["orientations"].data) == kept
    # refined centres stay on the true particles (world coordinates of the viewer)
    errors = np.linalg.norm(table[["z", "y", "x"]].to_numpy() - field.zyx[2:][widget.subtomograms.indices],
                            axis=1)
    assert np.median(errors) < 1.5
    assert widget.fsc_plot.fsc is not None and widget.classify_button.enabled
    assert widget.progress.value == widget.progress.max == 1 and not widget.progress.visible
    assert average not in widget.tomogram.choices  # found by its tag, whatever its name
    # classification runs the CLI's classify_job on the aligned particles, in the thread
    # (one start, one pass: layers and files are checked here, classes in test_averaging)
    import functools

    import napari_tomoseg._napari.averaging_widget as averaging_widget
    from napari_tomoseg.averaging import ClassifySettings

    monkeypatch.setattr(averaging_widget, "ClassifySettings",
                        functools.partial(ClassifySettings, iterations=1, n_init=1))
    widget.classes.value = 2
    handle = widget.classify()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=120_000)
    classes = [find(view, "class", index=c) for c in (1, 2)]
    assert all(layer is not None and layer.data.shape == (32, 32, 32) for layer in classes)
    assert (tmp_path / "out" / "class_1.mrc").exists()
    assert "written to" in widget.status.value
    # a second run into the folder asks first; No keeps every earlier result
    from qtpy.QtWidgets import QMessageBox

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    assert widget.run() is None and widget.classify() is None
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == before
    assert "kept" in widget.status.value
    # a new average that fails leaves the finished one to classify, shown again; a reference
    # of another voxel size is refused (only its box was checked)
    first = widget.result
    widget.output.value = tmp_path / "out2"
    widget.reference.value = write_volume(tmp_path / "ref4.mrc", field.reference(32), 4.0)
    with pytest.raises(TomosegError, match="4 A voxels"):
        widget.run()
    monkeypatch.setattr(averaging_widget, "average_job", _failing_job)
    widget.reference.value = reference
    handle = widget.run()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    assert widget.result is first and widget.classify_button.enabled
    np.testing.assert_array_equal(find(view, "average").data, first.average)
    widget.average_view.close()


def _failing_job(*args, **kwargs):
    from napari_tomoseg.averaging.refine import IterationState

    yield Progress(0, 2, "refining", payload=IterationState(
        "refinement", 1, 2, np.zeros((32, 32, 32), np.float32)))
    raise OSError(28, "No space left on device")


def test_cancel_stops_without_writing(make_napari_viewer, qtbot, tmp_path, field):
    """Cancel mid-refinement: no output and no partial file in the folder, the widget is free."""
    from napari_tomoseg._napari.averaging_widget import AveragingWidget
    from napari_tomoseg.io.atomic import is_partial

    viewer, tomogram, points = _viewer_with_particles(make_napari_viewer, field)
    out = tmp_path / "out"
    out.mkdir()
    widget = AveragingWidget(viewer)
    widget.tomogram.value, widget.particles.value = tomogram, points
    widget.output.value = out
    widget.reference.value = write_volume(tmp_path / "ref.mrc", field.reference(32), 15.0)
    widget.angular_step.value = 45.0  # a quick first iteration; four more follow: time to cancel
    handle = widget.run()
    assert widget.cancel_button.enabled and not widget.run_button.enabled
    qtbot.waitUntil(lambda: widget.state is not None, timeout=30_000)  # refining now
    widget.cancel_button.clicked.emit()  # the one way to cancel: handle.cancel()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    assert widget.result is None and "cancelled" in widget.status.value
    left = list(out.iterdir())
    assert not [path for path in left if is_partial(path)]
    assert left == []
    assert widget.run_button.enabled and not widget.cancel_button.enabled
    assert not widget.classify_button.enabled
    widget.average_view.close()  # the live average's own viewer


def test_edge_and_feature_reach_the_job_as_the_cli_passes_them(make_napari_viewer, qtbot,
                                                               tmp_path, field, monkeypatch):
    """The widget calls the CLI's average_job with its edge option and the picks' features."""
    from napari_tomoseg._napari import averaging_widget
    from napari_tomoseg._napari.averaging_widget import AveragingWidget

    calls = []

    def spy(volume, frame, table, settings, output, reference=None, edge="skip", name="average",
            inputs=()):
        calls.append((table.copy(), edge, list(inputs)))
        yield from ()  # a job that ends at once

    monkeypatch.setattr(averaging_widget, "average_job", spy)
    monkeypatch.setattr(AveragingWidget, "_on_averaged", lambda self, outcome: done.append(1))
    monkeypatch.setattr(AveragingWidget, "_failed", lambda self, exc: done.append(exc))
    done = []
    viewer, tomogram, points = _viewer_with_particles(make_napari_viewer, field)
    widget = AveragingWidget(viewer)
    widget.tomogram.value, widget.particles.value = tomogram, points
    widget.output.value = tmp_path / "out"
    for edge in ("pad", "skip"):
        widget.edge.value = edge
        handle = widget.run()
        qtbot.waitUntil(lambda: not handle.is_running, timeout=10_000)
    assert [edge for _, edge, _ in calls] == ["pad", "skip"] and done == [1, 1]
    table = calls[0][0]
    assert list(table["feature"]) == ["ribosome"] * len(field.zyx)
    np.testing.assert_allclose(table[["z", "y", "x"]].to_numpy(), field.zyx, atol=1e-6)


def test_closing_the_widget_cancels_its_job_and_touches_nothing(make_napari_viewer, qtbot,
                                                               tmp_path, field):
    """A dock closed mid-average: the job stops, and no callback reaches the deleted widget."""
    from napari_tomoseg._napari.averaging_widget import AveragingWidget
    from napari_tomoseg.io.atomic import is_partial

    viewer, tomogram, points = _viewer_with_particles(make_napari_viewer, field)
    widget = AveragingWidget(viewer)
    widget.tomogram.value, widget.particles.value = tomogram, points
    widget.output.value = tmp_path / "out"
    widget.reference.value = write_volume(tmp_path / "ref.mrc", field.reference(32), 15.0)
    widget.angular_step.value = 45.0  # a quick first iteration; four more follow
    handle = widget.run()
    qtbot.waitUntil(lambda: widget.state is not None, timeout=30_000)
    view = widget.average_view
    widget.native.deleteLater()  # the dock is closed
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    assert not handle.alive and handle.outcome == "cancelled"
    assert not [p for p in tmp_path.rglob("*") if is_partial(p)]
    assert view.viewer is None  # its averages window went with it


def test_picks_of_another_tomogram_are_refused(make_napari_viewer, field):
    """Picks of a 64 x 256 x 256 cell at 10 A were cut from a 20 A cell and renamed its own."""
    from napari_tomoseg._napari.averaging_widget import AveragingWidget
    from napari_tomoseg.errors import TomosegError
    from napari_tomoseg.layer_data import frame_metadata

    viewer, tomogram, points = _viewer_with_particles(make_napari_viewer, field)
    widget = AveragingWidget(viewer)
    widget.tomogram.value, widget.particles.value = tomogram, points
    np.testing.assert_allclose(widget.picked_voxels(), field.zyx, atol=1e-6)  # no frame: world
    points.metadata.update(frame_metadata(TomogramFrame("other_cell", (64, 256, 256), 10.0)))
    with pytest.raises(TomosegError, match="picks of other_cell .* choose their tomogram"):
        widget.picked_voxels()
    points.metadata.update(frame_metadata(TomogramFrame("field", field.tomogram.shape, 15.0)))
    assert len(widget.picked_voxels()) == len(field.zyx)
    # a tomogram of the same shape and voxel size, but another one: its name tells
    tomogram.metadata.update(frame_metadata(TomogramFrame("field", field.tomogram.shape, 15.0)))
    assert len(widget.picked_voxels()) == len(field.zyx)
    points.metadata.update(frame_metadata(TomogramFrame("twin", field.tomogram.shape, 15.0)))
    with pytest.raises(TomosegError, match="picks of twin"):
        widget.picked_voxels()


def test_score_picks_against_the_reference_ranks_particles_above_empty_places(
        make_napari_viewer, qtbot, tmp_path, field):
    """Score runs the CLI's rescore_job: kept picks get a reference_score feature (true
    particles above places holding none), rejected ones NaN, and the scores are written."""
    from napari_tomoseg._napari.averaging_widget import AveragingWidget
    from napari_tomoseg._napari.picks_rescore import OUTPUT_NAME

    viewer, tomogram, points = _viewer_with_particles(make_napari_viewer, field)
    rng = np.random.default_rng(0)
    places = rng.uniform(8, np.array(field.tomogram.shape) - 8, (400, 3))
    far = np.linalg.norm(places[:, None] - field.zyx[None], axis=-1).min(axis=1) > 20
    empty = places[far][:3]
    points.add(empty * 15.0 + np.array((30.0, -60.0, 90.0)))
    points.features.loc[[0], "status"] = -1  # rejected in QC: not scored
    widget = AveragingWidget(viewer)
    widget.average_view.show = False
    widget.tomogram.value, widget.particles.value = tomogram, points
    widget.output.value = tmp_path / "out"
    with pytest.raises(TomosegError, match="average first"):
        widget.score()  # neither a finished average nor a reference file yet
    widget.reference.value = write_volume(tmp_path / "ref.mrc", field.reference(32), 15.0)
    handle = widget.score()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=120_000)
    qtbot.waitUntil(lambda: "reference_score" in points.features, timeout=5_000)
    scores = points.features["reference_score"].to_numpy()
    assert np.isnan(scores[0]) and np.all(np.isfinite(scores[1:]))
    particles, places_scored = scores[1:len(field.zyx)], scores[len(field.zyx):]
    assert len(places_scored) == 3 and particles.min() > places_scored.max()
    import starfile  # RELION's own reader library, not ours

    table = starfile.read(tmp_path / "out" / OUTPUT_NAME)
    table = table["particles"] if isinstance(table, dict) else table
    assert len(table) == len(points.data) - 1
    np.testing.assert_allclose(np.sort(table["rlnTomosegReferenceScore"]),
                               np.sort(scores[1:]), atol=1e-6)
    assert "below the suggested cut" in widget.status.value and widget.score_button.enabled
    # the cut rejects as QC would: the empty places leave the kept picks, nothing else does
    assert widget.reject_button.enabled
    widget.score_cut.value = float(places_scored.max() + particles.min()) / 2
    assert abs(widget.score_cut.value - (places_scored.max() + particles.min()) / 2) < 1e-3
    widget.reject_button.changed.emit(True)
    status = points.features["status"].to_numpy()
    assert status[0] == -1 and np.all(status[1:len(field.zyx)] == 0)
    assert np.all(status[len(field.zyx):] == -1)
    assert widget._kept().sum() == len(field.zyx) - 1
    assert "3 picks with a reference score below" in widget.status.value
    grey = np.asarray(points.border_color)[-1]
    assert np.allclose(grey[:3], np.array([0x55, 0x55, 0x55]) / 255, atol=0.01)


def test_reject_below_the_cut_needs_scores(make_napari_viewer, field):
    from napari_tomoseg._napari.averaging_widget import AveragingWidget
    from napari_tomoseg._napari.picks_rescore import reject_below_cut

    viewer, tomogram, points = _viewer_with_particles(make_napari_viewer, field)
    widget = AveragingWidget(viewer)
    widget.average_view.show = False
    widget.tomogram.value, widget.particles.value = tomogram, points
    assert not widget.reject_button.enabled
    with pytest.raises(TomosegError, match="score the picks"):
        reject_below_cut(widget)
    assert np.all(points.features["status"].to_numpy() == 0)


def test_rejections_below_the_cut_are_saved_with_a_sessions_picks(make_napari_viewer, tmp_path):
    """A session's picks keep the cut's rejections and the scores on disk at once, as a
    judgement in the Pick tab is kept; picks without a score, or accepted by a person, are
    left alone."""
    from napari_tomoseg._napari import session_layers
    from napari_tomoseg._napari.averaging_widget import AveragingWidget
    from napari_tomoseg._napari.picks_rescore import reject_below_cut
    from napari_tomoseg.picks_store import SavedPicks, load_picks

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((16, 32, 32), np.float32), name="tomo")
    values = pd.DataFrame({"score": [0.9, 0.8, 0.7, 0.6], "score_norm": [1.0, 0.9, 0.8, 0.7],
                           "status": [0, 1, 0, 0]})
    points = session_layers.add_picks_layer(
        viewer, SavedPicks("ribosome", np.full((4, 3), 8.0), values), 5.0, tmp_path)
    points.features["reference_score"] = [0.20, 0.05, np.nan, 0.01]
    widget = AveragingWidget(viewer)
    widget.average_view.show = False
    widget.particles.value = points
    widget.score_cut.value = 0.1
    with pytest.raises(TomosegError, match="other picks"):  # scores not suggested for them
        reject_below_cut(widget)
    widget.scored_layer = points  # as scoring them leaves it
    assert reject_below_cut(widget) == 1
    (saved,), _ = load_picks(tmp_path)
    # the unscored pick and the one a person accepted stay as they were
    assert saved.values["status"].tolist() == [0, 1, 0, -1]
    np.testing.assert_allclose(saved.values["reference_score"], [0.20, 0.05, np.nan, 0.01])


def test_scores_of_picks_that_changed_meanwhile_stay_in_the_file_only(make_napari_viewer,
                                                                      tmp_path, field):
    """A pick deleted while scoring ran shifted every later score onto another pick, which
    the cut then rejected: the layer is now left alone and the cut stays off."""
    import pandas as pd

    from napari_tomoseg._napari.averaging_widget import AveragingWidget
    from napari_tomoseg._napari.picks_rescore import _on_scored

    viewer, tomogram, points = _viewer_with_particles(make_napari_viewer, field)
    widget = AveragingWidget(viewer)
    widget.average_view.show = False
    widget.tomogram.value, widget.particles.value = tomogram, points
    index = np.arange(len(points.data))
    where = np.array(points.data, copy=True)
    table = pd.DataFrame({"reference_score": np.linspace(0.0, 0.3, len(index))})
    points.data = points.data[1:]  # the first pick deleted by hand meanwhile
    _on_scored(widget, points, (index[:-1], where[:-1]), tmp_path / "s.star", (table[:-1], 0.1))
    assert "reference_score" not in points.features and not widget.reject_button.enabled
    assert "changed while they were scored" in widget.status.value
    _on_scored(widget, points, (index[:-1], np.array(points.data)), tmp_path / "s.star",
               (table[:-1], 0.12345))
    assert widget.reject_button.enabled and widget.score_cut.value == pytest.approx(0.123)
    assert np.allclose(points.features["reference_score"], table["reference_score"][:-1])
