"""The picking widget: Points layer from a probability map, score filter, QC, export."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_tomoseg.io.particles import TomogramFrame, read_star  # noqa: E402
from napari_tomoseg.picking import match_picks  # noqa: E402
from napari_tomoseg.errors import TomosegError  # noqa: E402

CENTRES = np.array([[20.0, 20.0, 20.0], [20.0, 60.0, 30.0], [40.0, 40.0, 70.0],
                    [30.0, 75.0, 75.0]])


def _picked(make_napari_viewer, qtbot, prob, translate=(0.0, 0.0, 0.0)):
    """A viewer with the probability map, and the picking widget after picking it."""
    from napari_tomoseg._napari.picking_widget import PickingWidget

    from napari_tomoseg._napari.layer_tags import tag

    viewer = make_napari_viewer()
    layer = viewer.add_image(prob, name="prediction: ribosome", scale=(10, 10, 10),
                             translate=translate)
    tag(layer, "probability", feature="ribosome")
    widget = PickingWidget(viewer)
    widget.source.value = layer
    widget.diameter.value = 120.0
    handle = widget.pick()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    qtbot.waitUntil(lambda: widget.points is not None, timeout=5_000)
    return viewer, widget


def test_pick_filter_judge_and_export(make_napari_viewer, qtbot, tmp_path, blobs, monkeypatch):
    prob = sum((1.0 - 0.05 * i) * blobs((64, 96, 96), c[None], radius=6)
               for i, c in enumerate(CENTRES)).astype(np.float32)  # distinct scores
    viewer, widget = _picked(make_napari_viewer, qtbot, prob, translate=(50.0, -20.0, 5.0))
    points = widget.points
    assert len(points.data) == 4
    np.testing.assert_allclose(points.translate, (50.0, -20.0, 5.0))
    assert match_picks(points.data, CENTRES, 1.0)["f1"] == 1.0
    assert {"score", "size", "status"} <= set(points.features.columns)
    # QC: step to the first pick, reject it; the view follows
    first = widget.step(1)
    assert viewer.dims.point[0] == pytest.approx(points.data_to_world(points.data[first])[0])
    widget.judge(-1)
    assert points.features["status"][first] == -1
    path = tmp_path / "picks.star"
    widget.output.value = path
    widget.export()
    # rlnTomoName is never the layer's name ("prediction: ribosome")
    assert "prediction" not in path.read_text()
    frame = TomogramFrame("ribosome", (64, 96, 96), 10.0, (50.0, -20.0, 5.0))
    exported = read_star(path, frame)
    assert len(exported) == 3
    assert match_picks(exported[["z", "y", "x"]].to_numpy(),
                       np.delete(points.data, first, axis=0), 1e-3)["f1"] == 1.0
    # the score filter hides low scores and exports only what is shown
    widget.min_score.value = 0.95
    assert points.shown.sum() == 1
    widget.export()
    kept = points.shown & (np.asarray(points.features["status"]) >= 0)
    assert len(read_star(path, frame)) == int(kept.sum())
    # the button asks before it replaces a typed path's file; No keeps the file
    from qtpy.QtWidgets import QMessageBox

    before = path.read_bytes()
    widget.min_score.value = 0.0
    for answer, replaced in ((QMessageBox.StandardButton.No, False),
                             (QMessageBox.StandardButton.Yes, True)):
        monkeypatch.setattr(QMessageBox, "question", lambda *a, answer=answer, **k: answer)
        widget.export_button.changed.emit(True)
        assert (path.read_bytes() != before) == replaced


def test_points_added_or_deleted_by_hand_are_exported(make_napari_viewer, qtbot, tmp_path,
                                                      blobs):
    prob = sum(blobs((64, 96, 96), c[None], radius=6) for c in CENTRES).astype(np.float32)
    viewer, widget = _picked(make_napari_viewer, qtbot, prob)
    points = widget.points
    points.add(np.array([[10.0, 10.0, 50.0]]))  # a particle the network missed
    points.selected_data = {0}
    points.remove_selected()  # a false pick
    widget._apply_filter()
    path = tmp_path / "picks.star"
    widget.output.value = path
    widget.export()
    exported = read_star(path, TomogramFrame("ribosome", (64, 96, 96), 10.0))
    assert len(exported) == len(CENTRES)
    assert np.min(np.linalg.norm(exported[["z", "y", "x"]].to_numpy() - [10.0, 10.0, 50.0], axis=1)) < 1e-3
    # the added point has no score of its own (it copied the last pick's), and is kept
    assert np.isnan(points.features["score"].iloc[-1])
    assert points.shown[-1] and np.isnan(widget.selected_table()[0]["score"].iloc[-1])
    while widget.step(1) != len(points.data) - 1:
        pass
    assert "added by hand (no score)" in widget.status.value
    assert "reference score" not in widget.status.value
    # scored against a reference on the Average tab: QC shows that score beside the network's
    points.features["reference_score"] = np.linspace(0.1, 0.2, len(points.data))
    current = widget.step(1)
    expected = points.features["reference_score"][current]
    assert widget.status.value.endswith(f"reference score {expected:.3f}")


def test_qc_after_picks_change_by_hand_never_judges_another_pick(make_napari_viewer, qtbot,
                                                                  blobs):
    """Accept after a point was deleted by hand marked the pick now at the old index; a
    deleted picks layer was still judged and exported."""
    prob = sum(blobs((64, 96, 96), c[None], radius=6) for c in CENTRES).astype(np.float32)
    viewer, widget = _picked(make_napari_viewer, qtbot, prob)
    points = widget.points
    widget.step(1)
    widget.step(1)
    points.selected_data = {0}
    points.remove_selected()
    with pytest.raises(TomosegError, match="step to a pick first"):
        widget.judge(1)
    assert (np.asarray(points.features["status"]) == 0).all()
    current = widget.step(1)
    widget.judge(1)
    assert points.features["status"][current] == 1
    viewer.layers.remove(points)
    with pytest.raises(TomosegError, match="pick first"):
        widget.judge(1)
    with pytest.raises(TomosegError, match="pick first"):
        widget.export()


def test_pick_refuses_what_is_not_a_probability_map(make_napari_viewer, qtbot, tmp_path,
                                                   monkeypatch):
    """Only maps tagged ``probability`` are offered; a tomogram is refused with one clear line."""
    from napari_tomoseg._napari import notify
    from napari_tomoseg._napari.layer_tags import KEY, tag, tag_of
    from napari_tomoseg._napari.picking_widget import PickingWidget
    from napari_tomoseg.errors import TomosegError

    shown = []
    monkeypatch.setattr(notify, "show_error", shown.append)
    viewer = make_napari_viewer()
    tomogram = np.random.default_rng(0).normal(size=(16, 32, 32)).astype(np.float32)
    plain = viewer.add_image(tomogram, name="prediction: ribosome", scale=(10.0,) * 3)
    widget = PickingWidget(viewer)
    assert plain not in widget.source.choices  # the name alone does not make a map
    with pytest.raises(TomosegError, match="probability map first"):
        widget.pick()
    tag(plain, "probability", feature="ribosome")  # a tomogram tagged by mistake
    widget.source.reset_choices()
    widget.source.value = plain
    assert widget.feature.value == "ribosome"
    handle = widget.pick()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    assert "is it a tomogram" in widget.status.value and widget.points is None
    assert shown == [widget.status.value]  # one line, not a bug report
    assert widget.pick_button.text == "Pick"
    del plain.metadata[KEY]  # no longer a map: refused before any thread starts
    assert tag_of(plain) == {}
    with pytest.raises(TomosegError, match="not a probability map"):
        widget.pick()
    assert not list(tmp_path.iterdir())  # picking writes nothing; Export does


def test_picks_are_tagged_and_export_writes_eman2_json(make_napari_viewer, qtbot, tmp_path,
                                                       blobs):
    import json

    from napari_tomoseg._napari.layer_tags import tag_of

    prob = sum(blobs((64, 96, 96), c[None], radius=6) for c in CENTRES).astype(np.float32)
    viewer, widget = _picked(make_napari_viewer, qtbot, prob)
    assert tag_of(widget.points) == {"role": "picks", "feature": "ribosome"}
    first = widget.points
    widget.pick()  # picking again replaces that feature's picks, found by tag
    qtbot.waitUntil(lambda: widget.points is not first, timeout=30_000)
    assert first not in viewer.layers
    assert sum(tag_of(layer).get("role") == "picks" for layer in viewer.layers) == 1
    widget.output.value = tmp_path / "picks.json"
    widget.export()
    boxes = json.loads((tmp_path / "picks.json").read_text())["boxes_3d"]
    assert len(boxes) == len(CENTRES)


def test_an_artifact_map_chosen_to_exclude_keeps_picks_off_it(make_napari_viewer, qtbot, blobs):
    from napari_tomoseg._napari.layer_tags import tag
    from napari_tomoseg._napari.picking_widget import PickingWidget
    from napari_tomoseg.errors import TomosegError

    viewer = make_napari_viewer()
    prob = blobs((64, 96, 96), CENTRES, radius=6).astype(np.float32)
    layer = viewer.add_image(prob, name="prediction: ribosome", scale=(10, 10, 10))
    tag(layer, "probability", feature="ribosome")
    carbon = np.zeros_like(prob)
    carbon[:, :, 60:] = 0.7  # above its own threshold (0.6), under the last two particles
    artifact = viewer.add_image(carbon, name="prediction: carbon", scale=(10, 10, 10),
                                metadata={"threshold": 0.6})
    tag(artifact, "probability", feature="carbon")
    widget = PickingWidget(viewer)
    widget.source.value = layer
    widget.diameter.value = 120.0
    widget.exclude.value = layer
    with pytest.raises(TomosegError, match="being picked"):
        widget.pick()
    widget.exclude.value = artifact
    handle = widget.pick()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    qtbot.waitUntil(lambda: widget.points is not None, timeout=5_000)
    assert match_picks(widget.points.data, CENTRES[:2], 1.0)["f1"] == 1.0
    artifact.metadata["threshold"] = 0.8  # now below its threshold: nothing excluded
    handle = widget.pick()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    qtbot.waitUntil(lambda: len(widget.points.data) == 4, timeout=5_000)


def test_max_blob_drops_picks_along_an_edge(make_napari_viewer, qtbot, blobs):
    """A wall above threshold (a carbon edge) gives a row of false picks: the default Min
    roundness drops them (flat peaks); without it, Max blob 3 does."""
    prob = blobs((64, 96, 96), CENTRES, radius=6).astype(np.float32)
    prob[:, 50:54, 40:] = np.maximum(prob[:, 50:54, 40:], 0.9)  # clear of the particles
    viewer, widget = _picked(make_napari_viewer, qtbot, prob)
    assert widget.min_roundness.value == 0.15
    assert match_picks(widget.points.data, CENTRES, 1.0)["f1"] == 1.0
    assert "flat or long peaks dropped" in widget.status.value  # said, not silent
    table, _ = widget.selected_table()
    assert table["roundness"].between(0.15, 1.0).all()  # exported with the picks (CSV)
    widget.min_roundness.value = 0.0
    handle = widget.pick()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    qtbot.waitUntil(lambda: len(widget.points.data) > len(CENTRES) + 5, timeout=5_000)
    widget.max_blob.value = 3.0
    handle = widget.pick()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    qtbot.waitUntil(lambda: len(widget.points.data) == len(CENTRES), timeout=5_000)
    assert match_picks(widget.points.data, CENTRES, 1.0)["f1"] == 1.0



def test_relative_roundness_drops_the_odd_long_peak_and_zero_keeps_it(make_napari_viewer,
                                                                        qtbot):
    from .test_picking import _stretched_blobs

    round_centres = [[20.0, 15.0 + 30 * i, 15.0 + 30 * j] for i in range(3) for j in range(3)]
    shape = (70, 100, 100)
    prob = np.maximum(_stretched_blobs(shape, round_centres, 3.3, 1.0),
                      _stretched_blobs(shape, [[50.0, 30.0, 25.0], [50.0, 70.0, 65.0]], 3.3, 2.3))
    viewer, widget = _picked(make_napari_viewer, qtbot, prob)
    assert widget.relative_roundness.value == 0.5
    assert match_picks(widget.points.data, np.array(round_centres), 5.0)["f1"] == 1.0
    assert "less round" in widget.status.value  # the drops are said
    widget.relative_roundness.value = 0.0
    handle = widget.pick()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    qtbot.waitUntil(lambda: len(widget.points.data) == 11, timeout=5_000)


def test_pick_reads_the_map_as_it_was_when_started(make_napari_viewer, qtbot, blobs):
    """Segment or a training preview writing into the layer while Pick runs must not
    change what Pick picks from (it read the live array)."""
    from napari_tomoseg._napari.layer_tags import tag
    from napari_tomoseg._napari.picking_widget import PickingWidget

    prob = np.stack([blobs((64, 96, 96), c[None], radius=6) for c in CENTRES]).max(0)
    viewer = make_napari_viewer()
    layer = viewer.add_image(prob, name="prediction: ribosome", scale=(10, 10, 10))
    tag(layer, "probability", feature="ribosome")
    widget = PickingWidget(viewer)
    widget.source.value = layer
    widget.diameter.value = 120.0
    handle = widget.pick()
    layer.data[:] = 0.0  # a new segmentation starts filling the layer
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    qtbot.waitUntil(lambda: widget.points is not None, timeout=5_000)
    assert len(widget.points.data) == len(CENTRES)


def test_the_pick_button_stops_a_running_pick(make_napari_viewer, qtbot, blobs):
    """While picking, the button is Stop: it ends the job between passes, no picks come."""
    from napari_tomoseg._napari.layer_tags import tag
    from napari_tomoseg._napari.picking_widget import PickingWidget

    prob = np.zeros((64, 384, 384), np.float32)  # seconds of scipy passes on two cores
    prob[:64, :96, :96] = blobs((64, 96, 96), CENTRES, radius=6)
    viewer = make_napari_viewer()
    layer = viewer.add_image(prob, name="prediction: ribosome", scale=(10, 10, 10))
    tag(layer, "probability", feature="ribosome")
    widget = PickingWidget(viewer)
    widget.source.value = layer
    handle = widget._pick_or_stop()
    assert widget.pick_button.text == "Stop"
    assert widget._pick_or_stop() is None  # the second press stops it
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    qtbot.waitUntil(lambda: widget.pick_button.text == "Pick", timeout=5_000)
    assert handle.outcome == "cancelled" and widget.points is None
    assert widget.status.value == "stopped"


def test_picks_of_a_map_opened_from_its_file_are_kept_beside_it_and_come_back(
        make_napari_viewer, qtbot, tmp_path, blobs):
    """A batch's map opened in napari (no session): accepts and rejects lived only in the
    viewer and closing it lost them."""
    from napari_tomoseg._napari.layer_tags import tag_of
    from napari_tomoseg._napari.picking_widget import PickingWidget
    from napari_tomoseg.io.mrc import write_volume
    from napari_tomoseg.io.probability_header import threshold_label

    prob = sum(blobs((64, 96, 96), c[None], radius=6) for c in CENTRES).astype(np.float32)
    path = write_volume(tmp_path / "TS_03_ribosome.mrc", prob, 10.0,
                        labels=(threshold_label("ribosome", 0.5),))

    def opened():
        viewer = make_napari_viewer()
        viewer.open(str(path), plugin="napari-tomoseg")
        widget = PickingWidget(viewer)
        widget.diameter.value = 120.0
        return viewer, widget

    viewer, widget = opened()
    handle = widget.pick()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    qtbot.waitUntil(lambda: widget.points is not None, timeout=5_000)
    first = widget.step(1)
    widget.judge(-1)
    saved = tmp_path / "TS_03_ribosome.mrc.picks" / "picks" / "ribosome.json"
    assert saved.is_file()
    viewer2, widget2 = opened()  # the viewer closed, the map opened again
    shown = widget2.points
    assert shown is not None and tag_of(shown)["role"] == "picks"
    assert list(shown.features["status"]) == list(widget.points.features["status"])
    assert shown.features["status"][first] == -1
    np.testing.assert_allclose(shown.data, widget.points.data)
    # the map written again since (a batch rerun): its old picks are another map's
    import os
    later = saved.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(later, later))
    viewer3, widget3 = opened()
    assert widget3.points is None
