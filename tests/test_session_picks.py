"""Picks, their judgements and the session's maps survive closing the viewer.

Found by a trial on the real M. pneumoniae cell: 510 picks, some judged, were gone after
the session was restored in a new viewer (only boxes and masks came back), although the
tutorial says everything is saved at once.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import starfile

napari = pytest.importorskip("napari")

from napari_tomoseg.io.mrc import write_volume  # noqa: E402
from napari_tomoseg.io.particles import read_star  # noqa: E402
from napari_tomoseg.picks_store import picks_path  # noqa: E402

from .conftest import _blobs  # noqa: E402

PLUGIN = "napari-tomoseg"
CENTRES = [(8.0, 20.0, 20.0), (8.0, 40.0, 44.0), (20.0, 30.0, 70.0), (24.0, 70.0, 30.0)]


def _dock(make_napari_viewer, tiny_files, folder):
    from napari_tomoseg._napari.workflow_widget import TomosegWidget

    viewer = make_napari_viewer()
    (image,) = viewer.open(str(tiny_files["tomogram"]), plugin=PLUGIN)
    widget = TomosegWidget(viewer)
    widget.tomogram.value = image
    widget.start_session(folder)
    wait_idle(widget)  # its maps come back in a thread
    return viewer, widget, image


def wait_idle(widget, seconds: float = 30.0) -> None:
    """Until the dock's job (e.g. reading a restored session's maps) has finished."""
    import time

    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + seconds
    while widget.workflow.busy and time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)
    QApplication.processEvents()  # its last callbacks
    assert not widget.workflow.busy


def test_picks_judgements_and_maps_come_back_with_the_session(make_napari_viewer, qtbot,
                                                              tiny_files, tmp_path):
    from napari_tomoseg._napari.picking_widget import PickingWidget

    folder = tmp_path / "session"
    viewer, widget, image = _dock(make_napari_viewer, tiny_files, folder)
    c = widget.controller
    prob = np.max([_blobs(image.data.shape, [c], 4.0) * (1.0 if i else 0.9)
                   for i, c in enumerate(CENTRES)], axis=0).astype(np.float16)  # one fainter
    # what Segment leaves: the map on disk and in the feature's prediction layer
    write_volume(c.session.segmentation_path("ribosome"), prob, float(image.scale[-1]),
                 tuple(image.translate))
    overlay = c.overlay("ribosome")
    overlay.data = prob
    picking = PickingWidget(viewer)
    picking.source.reset_choices()
    picking.source.value = overlay
    picking.diameter.value = 8 * float(image.scale[-1])
    picking.min_roundness.value = 0.0
    handle = picking.pick()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    qtbot.waitUntil(lambda: picking.points is not None, timeout=5_000)
    picked = np.asarray(picking.points.data).copy()
    assert len(picked) == len(CENTRES)
    assert picks_path(folder, "ribosome").exists()  # saved at once, not at export
    picking.step(1)
    picking.judge(-1)  # the first is rejected, the second accepted
    picking.judge(1)
    picking.points.add(np.array([[16.0, 50.0, 50.0]]))  # one the picker missed, by hand
    status = np.asarray(picking.points.features["status"]).copy()
    assert sorted(status[:2]) == [-1, 1] and json.loads(
        picks_path(folder, "ribosome").read_text())["rows"]  # the file follows every change
    cut = float(np.sort(picking.points.features["score_norm"].dropna())[1]) - 1e-6
    picking.min_score.value = cut  # hides the lowest score
    picking._save_soon.stop()
    picking._save()  # as when the slider rests
    shown_before = np.asarray(picking.points.shown).copy()
    assert not shown_before.all()

    viewer.close()  # the viewer goes; a new one restores the session
    viewer2, widget2, image2 = _dock(make_napari_viewer, tiny_files, folder)
    restored_map = widget2.controller.overlay("ribosome")
    np.testing.assert_array_equal(np.asarray(restored_map.data), prob)
    restored_map.data[0] = 0  # Segment and Train write into it: it crashed read-only
    (points,) = [layer for layer in viewer2.layers if layer.name == "picks: ribosome"]
    np.testing.assert_array_equal(points.shown, shown_before)  # before Pick is opened
    picking2 = PickingWidget(viewer2)
    assert picking2.points is points  # taken up at once
    assert picking2.min_score.value == pytest.approx(cut, abs=0.01)
    np.testing.assert_allclose(points.data[:len(picked)], picked, atol=1e-3)
    assert len(points.data) == len(picked) + 1
    np.testing.assert_array_equal(np.asarray(points.features["status"])[:len(status)], status)
    assert np.isnan(float(points.features["score"].iloc[-1]))  # the hand-added one: no score
    picking2.output.value = tmp_path / "kept.star"
    picking2.export()
    kept = read_star(tmp_path / "kept.star")
    assert len(kept) == int(np.sum(shown_before & (status >= 0)))  # not rejected, not cut
    assert len(kept) >= len(picked) - 2  # 4 picked + 1 by hand - 1 rejected - at most 1 cut

    # a voxel size typed now moves the picks with the tomogram, and their files with them
    before = starfile.read(tmp_path / "kept.star")
    voxel = float(image2.scale[-1])
    widget2.session_panel.voxel.value = 12.5
    assert tuple(points.scale) == tuple(image2.scale) == (12.5, 12.5, 12.5)
    assert json.loads(picks_path(folder, "ribosome").read_text())[
        "metadata"]["tomoseg"]["voxel_size"] == 12.5
    picking2.export()
    rescaled = read_star(tmp_path / "kept.star")
    np.testing.assert_allclose(rescaled[["z", "y", "x"]].to_numpy(),
                               kept[["z", "y", "x"]].to_numpy(), atol=1e-3)  # same voxels
    after = starfile.read(tmp_path / "kept.star")  # Angstrom: at the new size
    columns = [c for c in before.columns if "Angst" in c and "Centered" in c]
    assert len(columns) == 3
    np.testing.assert_allclose(after[columns].to_numpy(),
                               before[columns].to_numpy() * 12.5 / voxel, rtol=1e-4, atol=1e-3)


def test_a_damaged_picks_file_is_said_and_the_rest_restores(make_napari_viewer, tiny_files,
                                                           tmp_path):
    from napari_tomoseg._napari.workflow_widget import TomosegWidget

    folder = tmp_path / "session"
    viewer, widget, _ = _dock(make_napari_viewer, tiny_files, folder)
    n_boxes = len(widget.controller.session.boxes)
    viewer.close()
    path = picks_path(folder, "ribosome")
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "points": [[1, 2')  # cut short
    viewer2 = make_napari_viewer()
    (image,) = viewer2.open(str(tiny_files["tomogram"]), plugin=PLUGIN)
    widget2 = TomosegWidget(viewer2)
    widget2.tomogram.value = image
    session = widget2.start_session(folder)  # not refused: boxes and masks come back
    assert len(session.boxes) == n_boxes
    assert path.exists()  # nothing deleted


def _pick(picking, overlay, qtbot, diameter):
    picking.source.reset_choices()
    picking.source.value = overlay
    picking.diameter.value = diameter
    picking.min_roundness.value = 0.0
    handle = picking.pick()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    qtbot.waitUntil(lambda: picking.points is not None and picking.points.metadata.get(
        "tomoseg_role", {}).get("feature") == picking.feature.value, timeout=5_000)
    return picking.points


def _saved_rows(folder, feature):
    return json.loads(picks_path(folder, feature).read_text())["rows"]


def test_each_picks_layer_saves_itself_and_no_other(make_napari_viewer, qtbot, tiny_files,
                                                    tmp_path):
    """A review found the edit handler of one layer judging and saving another: a point
    added to the ribosome picks reset the last accepted pick of the other feature."""
    from napari_tomoseg._napari.layer_tags import tag, tomogram_key
    from napari_tomoseg._napari.picking_widget import PickingWidget

    folder = tmp_path / "session"
    viewer, widget, image = _dock(make_napari_viewer, tiny_files, folder)
    c = widget.controller
    prob = _blobs(image.data.shape, CENTRES, 4.0).astype(np.float16)
    ribosome_map = c.overlay("ribosome")
    ribosome_map.data = prob
    other_map = viewer.add_image(prob, name="other map", scale=image.scale,
                                 translate=image.translate)
    tag(other_map, "probability", feature="proteasome", tomogram=tomogram_key(image))
    picking = PickingWidget(viewer)
    diameter = 8 * float(image.scale[-1])
    ribosomes = _pick(picking, ribosome_map, qtbot, diameter)
    picking.feature.value = "proteasome"
    others = _pick(picking, other_map, qtbot, diameter)
    assert picking.feature.value == "proteasome" and ribosomes in viewer.layers
    while picking.step(1) != len(others.data) - 1:
        pass
    picking.judge(1)  # the last proteasome accepted
    ribosomes.add(np.array([[16.0, 50.0, 50.0]]))
    assert int(others.features["status"].iloc[-1]) == 1
    assert _saved_rows(folder, "proteasome")[-1][-1] == 1  # status, the last column
    assert len(_saved_rows(folder, "ribosome")) == len(CENTRES) + 1
    assert np.isnan(float(ribosomes.features["score"].iloc[-1]))
    # picking ribosomes again keeps the earlier ones (with any judgement) beside the new
    _pick(picking, ribosome_map, qtbot, diameter)
    assert (folder / "picks" / "ribosome.json.previous").exists()
    assert "kept as ribosome.json.previous" in picking.status.value


def test_restored_picks_edited_without_the_pick_tab_are_saved(make_napari_viewer, qtbot,
                                                              tiny_files, tmp_path):
    from napari_tomoseg._napari.picking_widget import PickingWidget

    folder = tmp_path / "session"
    viewer, widget, image = _dock(make_napari_viewer, tiny_files, folder)
    overlay = widget.controller.overlay("ribosome")
    overlay.data = _blobs(image.data.shape, CENTRES, 4.0).astype(np.float16)
    _pick(PickingWidget(viewer), overlay, qtbot, 120.0)
    viewer.close()
    viewer2, _, image2 = _dock(make_napari_viewer, tiny_files, folder)
    (points,) = [layer for layer in viewer2.layers if layer.name == "picks: ribosome"]
    points.selected_data = {0}
    points.remove_selected()  # napari's own tool, the Pick tab never opened
    assert len(_saved_rows(folder, "ribosome")) == len(CENTRES) - 1
    # a particle file opened from disk is not taken for picks to judge (it has no scores)
    from napari_tomoseg.io.particles import TomogramFrame, particle_table, write_star

    star = tmp_path / "other.star"
    frame = TomogramFrame("tiny", tuple(image2.data.shape), float(image2.scale[-1]),
                          tuple(image2.translate))
    write_star(star, particle_table(np.array([[5.0, 6.0, 7.0]])), frame)
    viewer2.open(str(star), plugin=PLUGIN)
    picking = PickingWidget(viewer2)
    assert picking._picks() is points  # the session's, below the STAR layer
    assert picking.diameter.value == 120.0  # the restored picks' own size
    viewer2.layers.remove(points)
    assert picking._picks() is None and picking.step(1) is None


def test_new_picks_replace_only_the_same_tomograms(make_napari_viewer):
    """Picking ribosomes on a second tomogram removed the first one's judged picks layer."""
    from napari_tomoseg._napari.layer_tags import tag
    from napari_tomoseg._napari.session_layers import earlier_picks as _earlier_picks

    viewer = make_napari_viewer()
    first = viewer.add_points(np.zeros((2, 3)), name="picks: ribosome")
    tag(first, "picks", feature="ribosome", tomogram="A", session="/s/A.tomoseg")
    loose = viewer.add_points(np.zeros((1, 3)), name="picks: ribosome [1]")
    tag(loose, "picks", feature="ribosome")
    assert _earlier_picks(viewer, "ribosome", "A", None) is first
    assert _earlier_picks(viewer, "ribosome", None, "/s/A.tomoseg") is first
    assert _earlier_picks(viewer, "ribosome", "B", "/s/B.tomoseg") is None
    assert _earlier_picks(viewer, "ribosome", None, None) is loose
    assert _earlier_picks(viewer, "membrane", "A", None) is None


def test_picks_of_no_session_are_replaced_only_on_their_own_tomogram_and_never_judged_ones(
        make_napari_viewer):
    """Maps opened from files (no session): picking TS_02 removed TS_01's judged picks, and a
    new pick on TS_01 dropped its judgements, which nothing else kept."""
    import pandas as pd

    from napari_tomoseg._napari import session_layers
    from napari_tomoseg._napari.layer_tags import tag_of
    from napari_tomoseg.layer_data import geometry_metadata
    from napari_tomoseg.picks_store import SavedPicks

    viewer = make_napari_viewer()
    values = pd.DataFrame({"score": [0.9, 0.8], "score_norm": [0.9, 0.8], "status": [1, 0]})
    frame = geometry_metadata("TS_01", (20, 64, 64), 10.0, (0.0, 0.0, 0.0))
    first = session_layers.add_picks_layer(
        viewer, SavedPicks("ribosome", np.ones((2, 3)), values, frame), 5.0, None)
    assert session_layers.earlier_picks(viewer, "ribosome", None, None, "TS_02") is None
    assert session_layers.earlier_picks(viewer, "ribosome", None, None, "TS_01") is first
    note = session_layers.retire_earlier(viewer, first)
    assert first in viewer.layers and "(earlier)" in first.name and "(earlier)" in note
    assert tag_of(first)["role"] == "earlier picks"
    assert session_layers.earlier_picks(viewer, "ribosome", None, None, "TS_01") is None
    unjudged = session_layers.add_picks_layer(
        viewer, SavedPicks("ribosome", np.ones((2, 3)), values.assign(status=0), frame), 5.0,
        None)
    assert session_layers.retire_earlier(viewer, unjudged) == ""
    assert unjudged not in viewer.layers


def test_choosing_another_tomogram_shows_its_own_session_folder(make_napari_viewer, tiny_files,
                                                                tmp_path):
    """The folder field kept A's session: Start for B made 'A.tomoseg-2', and for A again an
    empty 'A.tomoseg-2-2' (a trial)."""
    viewer, widget, image = _dock(make_napari_viewer, tiny_files, tmp_path / "a.tomoseg")
    panel = widget.session_panel
    other = viewer.add_image(np.zeros((8, 32, 32), np.float32), name="other", scale=(10,) * 3)
    panel.tomogram.reset_choices()
    panel.tomogram.value = other
    assert str(panel.folder.value) in ("", ".")
    panel.tomogram.value = image
    assert Path(panel.folder.value) == tmp_path / "a.tomoseg"
    panel.folder.value = tmp_path / "mine.tomoseg"  # typed by the user: kept
    panel.tomogram.value = other
    assert Path(panel.folder.value) == tmp_path / "mine.tomoseg"


def test_a_pick_tab_open_before_the_restore_takes_up_the_picks(make_napari_viewer, qtbot,
                                                               tiny_files, tmp_path):
    """Picks restored while the tab was open were taken up only at the first slider move,
    which the take-up then undid; a closed tab kept taking up layers (and their keys)."""
    from napari_tomoseg._napari.picking_widget import PickingWidget
    from napari_tomoseg._napari.workflow_widget import TomosegWidget

    folder = tmp_path / "session"
    viewer, widget, image = _dock(make_napari_viewer, tiny_files, folder)
    overlay = widget.controller.overlay("ribosome")
    overlay.data = _blobs(image.data.shape, CENTRES, 4.0).astype(np.float16)
    picking = PickingWidget(viewer)
    _pick(picking, overlay, qtbot, 120.0)
    picking.min_score.value = 0.5
    picking._save_soon.stop()
    picking._save()
    viewer.close()
    viewer2 = make_napari_viewer()
    (image2,) = viewer2.open(str(tiny_files["tomogram"]), plugin=PLUGIN)
    closed = PickingWidget(viewer2)
    closed.native.deleteLater()
    qtbot.waitUntil(lambda: not closed._alive, timeout=5_000)
    picking2 = PickingWidget(viewer2)  # the tab, opened before the session
    widget2 = TomosegWidget(viewer2)
    widget2.tomogram.value = image2
    widget2.start_session(folder)
    (points,) = [layer for layer in viewer2.layers if layer.name == "picks: ribosome"]
    assert picking2.points is points and picking2.min_score.value == pytest.approx(0.5)
    assert closed.points is None  # the closed tab took nothing up
    picking2.min_score.value = 0.2  # the first move stays
    assert picking2.min_score.value == pytest.approx(0.2)
    points.data = np.zeros((0, 3))  # every pick deleted: the diameter is kept for new ones
    saved = json.loads(picks_path(folder, "ribosome").read_text())
    assert saved["rows"] == [] and saved["diameter"] == 120.0


def test_picks_follow_a_renamed_feature_and_leave_the_session_with_a_removed_one(
        make_napari_viewer, qtbot, tiny_files, tmp_path):
    """A rename left the picks (and map) under the old name, and a removal left them in the
    session: a new feature of that name got them back as its own on the next restore."""
    from napari_tomoseg._napari.picking_widget import PickingWidget

    folder = tmp_path / "session"
    viewer, widget, image = _dock(make_napari_viewer, tiny_files, folder)
    overlay = widget.controller.overlay("ribosome")
    overlay.data = _blobs(image.data.shape, CENTRES, 4.0).astype(np.float16)
    write_volume(widget.controller.session.segmentation_path("ribosome"), overlay.data,
                 float(image.scale[-1]), tuple(image.translate))
    picking = PickingWidget(viewer)
    _pick(picking, overlay, qtbot, 120.0)
    widget.features.feature.value = "ribosome"
    widget.features.new_name.value = "70S"
    widget.features.rename()
    points = _pick(picking, overlay, qtbot, 120.0)  # the Pick tab follows the rename
    assert picking.feature.value == "70S"
    points.add(np.array([[16.0, 50.0, 50.0]]))  # saved under the new name
    assert len(_saved_rows(folder, "70S")) == len(CENTRES) + 1
    assert not picks_path(folder, "ribosome").exists()
    assert widget.controller.session.segmentation_path("70S").exists()
    widget.features.feature.value = "70S"
    widget.features.remove()
    points.add(np.array([[18.0, 52.0, 52.0]]))  # still open, no longer the session's
    assert not picks_path(folder, "70S").exists()
    assert len(list((folder / "removed").rglob("70S.json"))) == 1  # kept aside
    assert not [layer for layer in viewer.layers if layer.name.startswith("prediction: 70S")]
    widget.features.new_name.value = "70S"
    widget.features.add()
    assert not np.asarray(widget.controller.overlay("70S").data).any()  # not the old map
    viewer.close()
    viewer2, widget2, _ = _dock(make_napari_viewer, tiny_files, folder)
    assert not [layer for layer in viewer2.layers if layer.name.startswith("picks")]
    assert not np.asarray(widget2.controller.overlay("70S").data).any()


def test_a_score_cut_moved_just_before_closing_is_saved(make_napari_viewer, qtbot, tiny_files,
                                                        tmp_path):
    """The cut was saved 400 ms after the slider rested: closing napari sooner lost it."""
    from napari_tomoseg._napari.picking_widget import PickingWidget

    folder = tmp_path / "session"
    viewer, widget, image = _dock(make_napari_viewer, tiny_files, folder)
    overlay = widget.controller.overlay("ribosome")
    overlay.data = _blobs(image.data.shape, CENTRES, 4.0).astype(np.float16)
    picking = PickingWidget(viewer)
    viewer.window.add_dock_widget(picking)
    _pick(picking, overlay, qtbot, 120.0)
    picking.min_score.value = 0.6
    assert picking._save_soon.isActive()
    viewer.close()  # at once
    assert json.loads(picks_path(folder, "ribosome").read_text())["min_score"] == \
        pytest.approx(0.6)


def test_picks_of_a_removed_feature_are_not_saved_back_into_the_session(tmp_path):
    """A pick job still running at the removal, or a map of it opened from disk, wrote
    picks/NAME.json again, and a new feature of that name restored them as its own."""
    from napari_tomoseg._napari.session_layers import keep_earlier
    from napari_tomoseg.session import Session

    session = Session.create(tmp_path, None, 10.0, (8, 32, 32))
    session.add_feature("proteasome")
    session.segmentation_path("proteasome").parent.mkdir(parents=True)
    session.segmentation_path("proteasome").write_bytes(b"map")
    session.remove_feature("proteasome")
    folder, kept, note = keep_earlier(tmp_path, "proteasome")
    assert folder is None and "was removed" in note
    assert keep_earlier(tmp_path, "particle")[0] == tmp_path  # never a feature: kept as before
    session.add_feature("proteasome")  # added again: its picks belong to the session again
    assert keep_earlier(tmp_path, "proteasome")[0] == tmp_path


def test_discarded_picks_stay_gone_after_a_restore_and_are_kept_aside(
        make_napari_viewer, qtbot, tiny_files, tmp_path, monkeypatch):
    """Deleting a picks layer left its session file, so a restore brought the picks back;
    Discard sets the file aside (judgements are work) and the picks stay gone."""
    from qtpy.QtWidgets import QMessageBox

    from napari_tomoseg._napari.picking_widget import PickingWidget

    folder = tmp_path / "session"
    viewer, widget, image = _dock(make_napari_viewer, tiny_files, folder)
    overlay = widget.controller.overlay("ribosome")
    overlay.data = _blobs(image.data.shape, CENTRES, 4.0).astype(np.float16)
    picking = PickingWidget(viewer)
    points = _pick(picking, overlay, qtbot, 120.0)
    picking.step(1)
    picking.judge(-1)
    picking.min_score.value = 0.3  # a cut still waiting to be saved must not write them back
    answers = iter([QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes])
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: next(answers))
    assert picking._discard_asking() is None  # No: nothing happens
    assert points in viewer.layers and picks_path(folder, "ribosome").exists()
    kept = picking._discard_asking()
    assert points not in viewer.layers and picking.points is None
    assert not picks_path(folder, "ribosome").exists()
    assert kept == picks_path(folder, "ribosome").with_name("ribosome.json.previous")
    assert json.loads(kept.read_text())["rows"][0][list(points.features.columns).index(
        "status")] == -1  # the judgement is in the file set aside
    qtbot.wait(600)  # past the score cut's debounce
    assert not picks_path(folder, "ribosome").exists()
    with pytest.raises(Exception, match="no picks to discard"):
        picking.discard()
    viewer.close()
    viewer2, widget2, image2 = _dock(make_napari_viewer, tiny_files, folder)
    assert not [layer for layer in viewer2.layers if layer.name.startswith("picks")]


def test_picks_of_a_map_name_its_own_tomogram_and_keep_their_diameter(make_napari_viewer, qtbot,
                                                                      tiny_files, tmp_path):
    """With another tomogram of the same shape opened on top, the picks of A's map took B's
    name and geometry; and the Diameter typed for the next pick was saved over theirs."""
    import shutil

    from napari_tomoseg._napari.picking_widget import PickingWidget
    from napari_tomoseg.layer_data import frame_from_metadata

    viewer, widget, image = _dock(make_napari_viewer, tiny_files, tmp_path / "session")
    overlay = widget.controller.overlay("ribosome")
    overlay.data = _blobs(image.data.shape, CENTRES, 4.0).astype(np.float16)
    twin = shutil.copy(tiny_files["tomogram"], tmp_path / "twin.mrc")
    viewer.open(str(twin), plugin=PLUGIN)  # same shape and voxel size, on top
    picking = PickingWidget(viewer)
    points = _pick(picking, overlay, qtbot, 120.0)
    assert frame_from_metadata(points.metadata).name == frame_from_metadata(image.metadata).name
    picking.diameter.value = 40.0  # for the next pick
    picking.step(1)
    picking.judge(1)
    assert json.loads(picks_path(tmp_path / "session", "ribosome").read_text())["diameter"] == 120.0


def test_the_pick_threshold_follows_the_segment_slider_unless_typed(make_napari_viewer, qtbot,
                                                                    tiny_files, tmp_path):
    """The Segment slider says it sets Pick's threshold; an open Pick tab still picked at the
    map's old one."""
    from napari_tomoseg._napari.picking_widget import PickingWidget

    viewer, widget, image = _dock(make_napari_viewer, tiny_files, tmp_path / "session")
    overlay = widget.controller.overlay("ribosome")
    overlay.data = _blobs(image.data.shape, CENTRES, 4.0).astype(np.float16)
    picking = PickingWidget(viewer)
    picking.source.reset_choices()
    picking.source.value = overlay
    widget.features.feature.value = "ribosome"
    widget.segmenting.threshold.value = 0.3
    _pick(picking, overlay, qtbot, 120.0)
    assert picking.threshold.value == pytest.approx(0.3)
    picking.threshold.value = 0.6  # typed here: it holds
    widget.segmenting.threshold.value = 0.4
    _pick(picking, overlay, qtbot, 120.0)
    assert picking.threshold.value == pytest.approx(0.6)


def test_two_windows_judging_one_sessions_picks_never_lose_a_judgement(make_napari_viewer,
                                                                       tmp_path, monkeypatch):
    """The last window to save won: A's accept was gone after B's reject."""
    import pandas as pd

    from napari_tomoseg._napari import session_layers
    from napari_tomoseg.picks_store import SavedPicks, load_picks, save_picks

    said = []
    monkeypatch.setattr(session_layers, "show_error", said.append)
    save_picks(tmp_path, SavedPicks("ribosome", np.array([[1.0, 5.0, 5.0], [2.0, 9.0, 9.0]]),
                                    pd.DataFrame({"score": [0.9, 0.8], "status": [0, 0]})))
    (picks,), _ = load_picks(tmp_path)
    a, b = (session_layers.add_picks_layer(make_napari_viewer(), picks, 4.0, tmp_path)
            for _ in range(2))
    a.features.loc[0, "status"] = 1
    assert session_layers.save_or_say(a) == picks_path(tmp_path, "ribosome")
    b.features.loc[1, "status"] = -1
    assert session_layers.save_or_say(b) is None
    assert "saved by another window" in said[0] and "ribosome.json.conflict" in said[0]
    assert json.loads(picks_path(tmp_path, "ribosome").read_text())["rows"][0][-1] == 1
    conflict = picks_path(tmp_path, "ribosome").with_name("ribosome.json.conflict")
    assert [row[-1] for row in json.loads(conflict.read_text())["rows"]] == [0, -1]
    b.features.loc[0, "status"] = -1  # later edits go where the message said, quietly
    session_layers.save_or_say(b)
    assert len(said) == 1
    assert [row[-1] for row in json.loads(conflict.read_text())["rows"]] == [-1, -1]
    a.features.loc[1, "status"] = 1  # the first window goes on saving as before
    session_layers.save_or_say(a)
    assert [row[-1] for row in json.loads(picks_path(tmp_path, "ribosome").read_text())["rows"]] == [1, 1]


def test_opening_the_session_again_after_a_picks_conflict_shows_the_saved_picks(
        make_napari_viewer, tiny_files, tmp_path, monkeypatch):
    """The conflict message says to open the session again; the open layer then took up the
    file's stamp but kept showing this window's picks, and its next edit wrote over the
    other window's judgements."""
    import pandas as pd

    from napari_tomoseg._napari import session_layers
    from napari_tomoseg._napari.layer_tags import layers_with
    from napari_tomoseg.picks_store import SavedPicks, save_picks

    monkeypatch.setattr(session_layers, "show_error", lambda message: None)
    folder = tmp_path / "session"
    _dock(make_napari_viewer, tiny_files, folder)  # the session, then its picks
    save_picks(folder, SavedPicks("ribosome", np.array([[8.0, 20.0, 20.0], [8.0, 40.0, 44.0]]),
                                  pd.DataFrame({"score": [0.9, 0.8], "status": [0, 0]})))
    viewers = [_dock(make_napari_viewer, tiny_files, folder) for _ in range(2)]
    (a,), (b,) = (list(layers_with(v, "picks", feature="ribosome")) for v, _, _ in viewers)
    a.features.loc[0, "status"] = 1
    session_layers.save_or_say(a)
    b.features.loc[1, "status"] = -1
    assert session_layers.save_or_say(b) is None  # the conflict
    viewer_b, widget_b, _ = viewers[1]
    widget_b.start_session(folder)  # as the message says
    (shown,) = layers_with(viewer_b, "picks", feature="ribosome")
    assert shown is not b and list(shown.features["status"]) == [1, 0]  # as window A saved
    shown.features.loc[1, "status"] = 1
    session_layers.save_or_say(shown)
    saved = json.loads(picks_path(folder, "ribosome").read_text())["rows"]
    assert [row[-1] for row in saved] == [1, 1]  # A's accept kept, B's new one added


def test_opening_the_session_again_shows_picks_another_window_judged_since(
        make_napari_viewer, tiny_files, tmp_path, monkeypatch):
    """Without a conflict first: window B restored the session while its picks layer was
    open; the layer took up the file's new stamp (A's judgements) and B's next judgement
    wrote its older statuses over A's, with no message and no .conflict file."""
    import pandas as pd

    from napari_tomoseg._napari import session_layers
    from napari_tomoseg._napari.layer_tags import layers_with
    from napari_tomoseg.picks_store import SavedPicks, save_picks

    monkeypatch.setattr(session_layers, "show_error", lambda message: None)
    folder = tmp_path / "session"
    _dock(make_napari_viewer, tiny_files, folder)
    save_picks(folder, SavedPicks("ribosome", np.array([[8.0, 20.0, 20.0], [8.0, 40.0, 44.0]]),
                                  pd.DataFrame({"score": [0.9, 0.8], "status": [0, 0]})))
    viewers = [_dock(make_napari_viewer, tiny_files, folder) for _ in range(2)]
    (a,), (b,) = (list(layers_with(v, "picks", feature="ribosome")) for v, _, _ in viewers)
    a.features["status"] = 1
    session_layers.save_or_say(a)
    viewer_b, widget_b, _ = viewers[1]
    widget_b.start_session(folder)
    (shown,) = layers_with(viewer_b, "picks", feature="ribosome")
    assert shown is not b and list(shown.features["status"]) == [1, 1]
    kept = picks_path(folder, "ribosome").with_name("ribosome.json.conflict")  # B's, as shown
    assert [row[-1] for row in json.loads(kept.read_text())["rows"]] == [0, 0]
    shown.features.loc[1, "status"] = -1
    session_layers.save_or_say(shown)
    saved = json.loads(picks_path(folder, "ribosome").read_text())["rows"]
    assert [row[-1] for row in saved] == [1, -1]
    # once more: the first copy kept aside is never written over
    (a,) = layers_with(viewers[0][0], "picks", feature="ribosome")
    viewers[0][1].start_session(folder)  # A had not seen B's reject
    assert [row[-1] for row in json.loads(kept.read_text())["rows"]] == [0, 0]
    second = kept.with_name(kept.name + "-2")
    assert [row[-1] for row in json.loads(second.read_text())["rows"]] == [1, 1]


def test_picks_and_models_follow_a_voxel_size_typed_while_picks_were_closed(make_napari_viewer,
                                                                      tiny_files, tmp_path):
    """The typed size reached only open picks layers: restored later, closed ones were drawn
    (and exported) at the header's size, a pick at voxel 32 shown over voxel 24.6."""
    import pandas as pd

    from napari_tomoseg._napari.layer_tags import layers_with
    from napari_tomoseg.picks_store import SavedPicks, load_picks, save_picks

    from napari_tomoseg.nn.model_file import load_model, save_model

    from .test_bad_inputs import _model

    folder = tmp_path / "session"
    viewer, widget, image = _dock(make_napari_viewer, tiny_files, folder)
    frame = {"tomoseg": dict(image.metadata["tomoseg"])}
    save_picks(folder, SavedPicks("ribosome", np.array([[8.0, 32.0, 32.0]]),
                                  pd.DataFrame({"score": [0.9], "status": [1]}), frame))
    model_path = widget.controller.session.model_path("ribosome")
    save_model(_model("ribosome", float(image.scale[-1])), model_path)  # trained here
    widget.controller.session.register_model("ribosome")
    widget.start_session(folder)  # its model loaded
    typed = 1.3 * float(image.scale[-1])
    widget.session_panel.voxel.value = typed
    # the model learned these voxels: Segment must not resample them by 1.3
    assert widget.models["ribosome"].voxel_size == pytest.approx(typed)
    assert load_model(model_path).voxel_size == pytest.approx(typed)
    viewer2, widget2, image2 = _dock(make_napari_viewer, tiny_files, folder)
    assert widget2.session_panel.voxel.value == pytest.approx(typed)  # not 0: it applies
    (shown,) = layers_with(viewer2, "picks", feature="ribosome")
    np.testing.assert_allclose(shown.scale, image2.scale)
    np.testing.assert_allclose(shown.data_to_world(shown.data[0]),
                               image2.data_to_world((8.0, 32.0, 32.0)))
    (saved,), _ = load_picks(folder)
    assert saved.metadata["tomoseg"]["voxel_size"] == pytest.approx(typed)


def test_a_restored_map_keeps_the_threshold_of_the_model_that_made_it(make_napari_viewer,
                                                                     tiny_files, tmp_path):
    """Train again, close without segmenting, restore: the old map was shown, and picked, at
    the new model's threshold. Its header names its own; one set by hand still wins."""
    from napari_tomoseg._napari.session_layers import session_maps, show_restored_map
    from napari_tomoseg.io.probability_header import threshold_label
    from napari_tomoseg.jobs.session_maps import read_maps_job

    def restore_session_layers(viewer, c, thresholds):  # what a restore does with the maps
        for progress in _steps(read_maps_job(session_maps(c.session), c.shape)):
            feature, data, _ = progress.payload
            show_restored_map(c, thresholds, feature, data)

    folder = tmp_path / "session"
    viewer, widget, image = _dock(make_napari_viewer, tiny_files, folder)
    c = widget.controller
    prob = np.zeros(image.data.shape, np.float32)
    write_volume(c.session.segmentation_path("ribosome"), prob, float(image.scale[-1]),
                 tuple(image.translate), labels=(threshold_label("ribosome", 0.3),))
    restore_session_layers(viewer, c, {"ribosome": 0.6})  # the new model's
    assert c.overlay("ribosome").metadata["threshold"] == pytest.approx(0.3)
    c.session.thresholds["ribosome"] = 0.7
    restore_session_layers(viewer, c, {"ribosome": 0.7})
    assert c.overlay("ribosome").metadata["threshold"] == pytest.approx(0.7)


def test_a_map_stored_as_0_255_is_restored_as_probabilities(make_napari_viewer, tiny_files,
                                                            tmp_path):
    """segment --dtype uint8 into the session folder: restored as 0-255, every voxel read as
    above any threshold."""
    from napari_tomoseg.io.probability_header import threshold_label

    folder = tmp_path / "session"
    viewer, widget, image = _dock(make_napari_viewer, tiny_files, folder)
    c = widget.controller
    stored = np.full(image.data.shape, 128, np.uint8)
    write_volume(c.session.segmentation_path("ribosome"), stored, float(image.scale[-1]),
                 tuple(image.translate), labels=(threshold_label("ribosome", 0.5),))
    widget.start_session(folder)  # restored: its maps read in a thread
    assert widget.workflow.busy
    wait_idle(widget)
    c = widget.controller
    np.testing.assert_allclose(np.asarray(c.overlay("ribosome").data, float), 128 / 255,
                               atol=1e-3)


def _steps(job):
    """Every progress step of a job run here, in this thread."""
    steps = []
    try:
        while True:
            steps.append(next(job))
    except StopIteration:
        return steps


def test_a_restore_stopped_while_reading_maps_never_leaves_one_taken_for_whole(
        make_napari_viewer, tiny_files, tmp_path):
    """Maps are read in a thread; until one is shown its layer says so, and one a Stop left
    unread says so for good (another session's map could stay there, and Pick took it)."""
    from napari_tomoseg._napari.layer_tags import FILLING, incomplete_reason
    from napari_tomoseg.errors import TomosegError

    folder = tmp_path / "session"
    viewer, widget, image = _dock(make_napari_viewer, tiny_files, folder)
    maps = {"ribosome": 0.25, "membrane": 0.75}
    for feature, value in maps.items():
        write_volume(widget.controller.session.segmentation_path(feature),
                     np.full(image.data.shape, value, np.float32), float(image.scale[-1]),
                     tuple(image.translate))
    widget.start_session(folder)
    c = widget.controller
    assert all(incomplete_reason(c.overlay(f)) for f in maps)  # not yet read
    # Segment and Train pressed meanwhile are refused before they change anything (the map
    # stayed 'still being segmented'; the session remembered a training that never ran)
    for start in (widget.start_segmentation, widget.start_training):
        with pytest.raises(TomosegError, match="a job is running"):
            start()
    assert all(FILLING not in c.overlay(f).metadata for f in maps)
    assert c.session.training == []
    widget.workflow.stop()
    wait_idle(widget)
    unread = 0
    for feature, value in maps.items():
        why = incomplete_reason(c.overlay(feature))
        if why is None:  # read before the Stop: whole
            np.testing.assert_allclose(np.asarray(c.overlay(feature).data, float), value)
        else:
            assert "not read back" in why
            unread += 1
    if unread:
        assert "not read" in widget.status.value
    widget.start_session(folder)  # again, to the end
    wait_idle(widget)
    c = widget.controller
    assert not any(incomplete_reason(c.overlay(f)) for f in maps)
    assert "maps shown again" in widget.status.value
