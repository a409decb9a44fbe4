"""The annotate-train-segment workflow in a real viewer, driven as a user would."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_tomoseg.annotations import boxes_from_truth, crop_slice  # noqa: E402
from napari_tomoseg.errors import TomosegError  # noqa: E402
from napari_tomoseg.metrics import dice  # noqa: E402
from napari_tomoseg.session import Session  # noqa: E402

PLUGIN = "napari-tomoseg"


@pytest.fixture
def workflow(make_napari_viewer, tiny_files, tmp_path):
    from napari_tomoseg._napari.workflow_widget import TomosegWidget

    viewer = make_napari_viewer()
    (image,) = viewer.open(str(tiny_files["tomogram"]), plugin=PLUGIN)
    widget = TomosegWidget(viewer)
    widget.tomogram.value = image
    widget.start_session(tmp_path / "session")
    return viewer, widget


def _merged(widget, qtbot) -> np.ndarray:
    """Merge in the background, as the button does, and return the labels shown."""
    handle = widget.merge()
    bar = widget.segmenting.progress
    assert not bar.native.isHidden()  # a large tomogram merges a while: the bar says how far
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    assert handle.outcome == "done"
    qtbot.waitUntil(bar.native.isHidden, timeout=5_000)
    assert bar.max == bar.value > 1  # slabs and the final step, as the job reported them
    return np.asarray(widget.viewer.layers["segmentation (merged)"].data)


def _annotate(widget, truth, feature="ribosome", n_pos=6, n_neg=18):
    """Place boxes and paint masks through the layers, as the tools would."""
    c = widget.controller
    c.set_active(feature)
    widget.boxes.box_size.value = 32
    for box in boxes_from_truth(truth, feature, n_pos, n_neg, size=32, seed=0):
        placed = widget.place_box(box.positive, box.z, box.y, box.x)
        if box.positive:  # paint the truth inside the box (moved inside the slice at an
            # edge), like the brush would
            c.paint_box_mask(placed, (crop_slice(truth[placed.z], placed.corner(),
                                                 placed.size) > 0).astype(np.uint8))
    c.collect_masks()


def _train(widget, qtbot, steps: int) -> None:
    """Train the active feature for ``steps`` steps, through the widget, and wait."""
    widget.training.steps.value = steps
    worker = widget.start_training()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass


def test_features_can_be_added_renamed_recoloured_removed(workflow):
    viewer, widget = workflow
    session = widget.controller.session
    assert session.feature_names() == ["membrane", "ribosome"]
    widget.features.new_name.value = "microtubule"
    widget.features.add()
    assert widget.features.feature.choices == ("membrane", "ribosome", "microtubule")
    widget.features.feature.value = "microtubule"
    widget.features.new_name.value = "MT"
    widget.features.rename()
    assert "MT" in session.feature_names()
    assert session.active == "MT" == widget.controller.active  # remembered under its new name
    widget.features.colour.value = "#123456"
    widget.features.set_colour()
    assert session.feature("MT").colour == "#123456"
    widget.features.remove()
    assert "MT" not in session.feature_names()
    assert session.active == "membrane" == widget.controller.active


def _positive_box_in_view(workflow, feature: str):
    """A 32-px positive box of ``feature`` at slice 5 (40, 40), in view; the controller."""
    viewer, widget = workflow
    c = widget.controller
    c.set_active(feature)
    widget.boxes.box_size.value = 32
    widget.place_box(True, 5, 40.0, 40.0)
    viewer.dims.set_point(0, c.image.data_to_world((5, 0, 0))[0])
    return c


def test_removing_a_feature_keeps_the_paint_of_those_after_it(workflow, tmp_path):
    """Mask labels follow the feature list: removing 'membrane' made 'ribosome' label 1,
    its paint stayed 2, and the next stroke saved its mask as empty (and redrawing box by
    box saved every box but the first as empty)."""
    viewer, widget = workflow
    c = _positive_box_in_view(workflow, "ribosome")
    widget.features.new_name.value = "microtubule"
    widget.features.add()
    for z, feature in ((6, "ribosome"), (7, "microtubule")):
        c.set_active(feature)
        widget.place_box(True, z, 40.0, 40.0)
    for z, feature in ((5, "ribosome"), (6, "ribosome"), (7, "microtubule")):
        c.masks_layer.data[z, 36:44, 36:44] = c.session.label_of(feature)
    c.collect_masks()
    widget.features.feature.value = "membrane"
    widget.features.remove()
    assert c.session.label_of("ribosome") == 1 and c.session.label_of("microtubule") == 2
    c._on_paint()  # the next stroke anywhere
    masks = [b.mask for b in Session.load(tmp_path / "session").boxes]
    assert [int(m.sum()) if m is not None else 0 for m in masks] == [64, 64, 64]
    assert np.count_nonzero(c.masks_layer.data[5:7] == 1) == 128
    assert np.count_nonzero(c.masks_layer.data[7] == 2) == 64


def test_boxes_are_drawn_counted_moved_and_deleted(workflow, tiny_result):
    viewer, widget = workflow
    c = widget.controller
    c.set_active("membrane")
    widget.boxes.box_size.value = 32
    box = widget.place_box(True, 10, 40.0, 50.0)
    widget.place_box(False, 12, 60.0, 60.0)
    assert len(c.boxes_layer.data) == 2
    assert "membrane: 1 positive, 1 negative" in widget.boxes.counts.value
    np.testing.assert_allclose(c.boxes_layer.data[0][:, 0], 10)
    # move the first box with the shape tools: shift its vertices by 5 px in x
    moved = [d.copy() for d in c.boxes_layer.data]
    moved[0][:, 2] += 5
    c.boxes_layer.data = moved
    assert c.session.box(box.id).x == pytest.approx(55.0)
    # toggle it negative, then delete the other one
    c.boxes_layer.selected_data = {0}
    widget.boxes.toggle_selected()
    assert not c.session.box(box.id).positive
    c.boxes_layer.selected_data = {1}
    c.boxes_layer.remove_selected()
    assert [b.id for b in c.session.boxes] == [box.id]
    with pytest.raises(TomosegError, match="outside the tomogram"):
        c.session.add_box("membrane", 999, 1, 1, True)  # outside the volume
    assert [b.id for b in c.session.boxes] == [box.id]  # and nothing was added


def _painted_box(widget) -> tuple:
    """A 32-px positive membrane box on slice 5 with 100 painted pixels; (box, messages)."""
    c = widget.controller
    said = []
    c.notify = said.append
    c.set_active("membrane")
    widget.boxes.box_size.value = 32
    box = widget.place_box(True, 5, 40.0, 40.0)
    c.masks_layer.data[5, 30:40, 30:40] = c.session.label_of("membrane")
    c.collect_masks()
    return box, said


def test_boxes_removed_with_the_layer_tools_can_be_put_back_with_their_masks(workflow,
                                                                             tmp_path):
    """Select-all and Delete on the boxes layer removed a slice's boxes and their paint,
    saved at once; the session's one backup went with the next stroke."""
    viewer, widget = workflow
    c = widget.controller
    first, said = _painted_box(widget)
    widget.place_box(False, 5, 90.0, 90.0)
    c.boxes_layer.selected_data = {0, 1}
    c.boxes_layer.remove_selected()
    assert Session.load(tmp_path / "session").boxes == [] and any("Put back" in m for m in said)
    c.masks_layer.data[7, 0:4, 0:4] = 1  # work goes on: the backup generation is gone
    c.collect_masks()
    said.clear()
    assert widget.boxes.put_back() == 2
    assert not any("cleared" in m for m in said)  # its paint is back in the box, not gone
    saved = {b.id: b for b in Session.load(tmp_path / "session").boxes}
    assert set(saved) == {first.id, *(b.id for b in c.session.boxes)} and len(saved) == 2
    assert int(saved[first.id].mask.sum()) == 100
    assert np.count_nonzero(c.masks_layer.data[5]) == 100 and len(c.boxes_layer.data) == 2
    with pytest.raises(TomosegError, match="no removed boxes"):
        widget.boxes.put_back()
    c.boxes_layer.selected_data = {0}
    c.boxes_layer.remove_selected()
    widget.features.feature.value = "membrane"  # renamed before the put back: they follow
    widget.features.new_name.value = "mem"
    widget.features.rename()
    assert widget.boxes.put_back() == 1
    assert {b.feature for b in Session.load(tmp_path / "session").boxes} == {"mem"}
    c.boxes_layer.selected_data = {0}
    c.boxes_layer.remove_selected()
    widget.features.feature.value = "mem"  # removed: refused, as their label would be gone
    widget.features.remove()  # (the session could no longer be opened)
    with pytest.raises(TomosegError, match="no longer a feature"):
        widget.boxes.put_back()


def test_put_back_pressed_again_puts_back_the_removal_before(workflow, tmp_path):
    """Each press takes the newest removal not yet put back: two removals, two presses."""
    viewer, widget = workflow
    c = widget.controller
    widget.place_box(False, 5, 30.0, 30.0)
    widget.place_box(False, 6, 90.0, 90.0)
    older, newer = (b.id for b in c.session.boxes)
    for _ in range(2):
        c.boxes_layer.selected_data = {0}
        c.boxes_layer.remove_selected()
    assert c.session.boxes == []
    assert widget.boxes.put_back() == 1
    assert [b.id for b in Session.load(tmp_path / "session").boxes] == [newer]
    assert widget.boxes.put_back() == 1
    assert {b.id for b in Session.load(tmp_path / "session").boxes} == {older, newer}
    with pytest.raises(TomosegError, match="no removed boxes"):
        widget.boxes.put_back()


def test_a_shape_drawn_on_the_boxes_layer_never_moves_a_box_or_its_mask(workflow, tmp_path):
    """napari gives a shape drawn (or pasted) with its own tools the feature defaults, the
    last box's id: taken for that box, the box jumped there and its mask was saved empty."""
    viewer, widget = workflow
    c = widget.controller
    box, said = _painted_box(widget)
    assert int(Session.load(tmp_path / "session").box(box.id).mask.sum()) == 100
    c.boxes_layer.add_rectangles([np.array([[9, 80, 80], [9, 80, 110], [9, 110, 110],
                                            [9, 110, 80]], float)])
    saved = Session.load(tmp_path / "session").boxes
    assert [(b.id, b.z, b.y, b.x) for b in saved] == [(box.id, 5, 40.0, 40.0)]
    assert int(saved[0].mask.sum()) == 100
    assert len(c.boxes_layer.data) == 1 and "not a box" in said[-1]


def test_a_positive_box_starts_the_brush_and_spilled_paint_is_dropped(workflow):
    viewer, widget = workflow
    c = widget.controller
    c.set_active("membrane")
    widget.boxes.box_size.value = 32
    widget.place_box(True, 5, 40.0, 40.0)
    label = c.session.label_of("membrane")
    assert viewer.layers.selection.active is c.masks_layer
    assert c.masks_layer.mode == "paint" and c.masks_layer.selected_label == label
    assert c.masks_layer.brush_size == 4  # an eighth of the box
    c.masks_layer.data[5, 30:34, 30:34] = label  # inside the box
    c.masks_layer.data[5, 54:58, 40:44] = label  # a stroke spilling 2 px over the edge (y 56)
    c.masks_layer.data[5, 80:82, 80:82] = label  # outside any box
    assert c.stray_paint(5) == 2 * 4 + 4
    viewer.dims.set_point(0, c.image.data_to_world((5, 0, 0))[0])
    c._on_paint()  # the end of a stroke, on the slice in view
    assert c.stray_paint(5) == 0
    assert np.count_nonzero(c.masks_layer.data[5]) == 16 + 8
    assert c.session.boxes[0].mask.sum() == 16 + 8


def test_paint_a_moved_box_left_outside_survives_the_next_stroke(workflow):
    """Dragging a painted box used to lose its painting: the next stroke on the slice
    clipped everything outside the boxes, the paint the box had just left included."""
    viewer, widget = workflow
    c = widget.controller
    said = []
    c.notify = said.append
    c.set_active("membrane")
    widget.boxes.box_size.value = 32
    box = widget.place_box(True, 5, 40.0, 40.0)  # covers y, x 24..55
    label = c.session.label_of("membrane")
    c.masks_layer.data[5, 26:30, 26:30] = label  # the user's painting, near the box's corner
    viewer.dims.set_point(0, c.image.data_to_world((5, 0, 0))[0])
    c._on_paint()
    assert c.session.box(box.id).mask.sum() == 16
    widget.place_box(True, 7, 80.4, 80.3)  # a box not moved, its centre drawn rounded
    viewer.dims.set_point(0, c.image.data_to_world((5, 0, 0))[0])
    moved = [d.copy() for d in c.boxes_layer.data]
    moved[0][:, 1:] += 10  # dragged by 10 px in y and x: the painting is outside now
    c.boxes_layer.data = moved
    assert c.session.box(box.id).mask.sum() == 0
    assert said and said[-1].startswith("16 painted pixels now lie outside")
    assert set(c._left_outside) == {5}  # the unmoved box's slice is not watched
    c.masks_layer.data[5, 50:54, 64:68] = label  # the next stroke, spilling 2 px over x 65
    c._on_paint()
    plane = np.asarray(c.masks_layer.data[5])
    assert np.count_nonzero(plane[26:30, 26:30]) == 16  # kept
    assert np.count_nonzero(plane[50:54, 66:68]) == 0  # the stroke's own spill is dropped
    assert c.session.box(box.id).mask.sum() == 8
    back = [d.copy() for d in c.boxes_layer.data]
    back[0][:, 1:] -= 10  # moved back: the painting is the box's again, the stroke's is left
    c.boxes_layer.data = back
    assert c.session.box(box.id).mask.sum() == 16
    assert said[-1].startswith("8 painted pixels now lie outside")
    c.boxes_layer.selected_data = {0}
    widget.boxes.toggle_selected()  # made negative: its painting is left outside too
    c.masks_layer.data[5, 90:92, 90:92] = label
    c._on_paint()
    c.boxes_layer.selected_data = {0}
    widget.boxes.toggle_selected()  # and positive again
    assert c.session.box(box.id).mask.sum() == 16
    c.masks_layer.data[5, 26:30, 26:30] = 0  # erased, then painted outside again by a stroke
    c._on_paint()
    c.masks_layer.data[5, 60:62, 60:62] = label
    c._on_paint()
    assert np.count_nonzero(np.asarray(c.masks_layer.data[5])[60:62, 60:62]) == 0


def test_undo_and_redo_of_a_stroke_are_saved(workflow, tmp_path):
    """napari's undo and redo emit no paint event: an undone stroke came back after a
    crash, and a redone one was lost."""
    c = _positive_box_in_view(workflow, "membrane")
    c.masks_layer.brush_size = 4
    with c.masks_layer.block_history():  # one stroke: paint is announced at its end
        c.masks_layer.paint((5, 40, 40), c.session.label_of("membrane"))

    def saved() -> int:
        mask = Session.load(tmp_path / "session").boxes[0].mask
        return 0 if mask is None else int(mask.sum())

    painted = saved()
    assert painted > 0
    c.masks_layer.undo()
    assert saved() == 0
    c.masks_layer.redo()
    assert saved() == painted


def test_train_through_the_widget_overlays_a_good_preview(workflow, tiny_result, qtbot):
    viewer, widget = workflow
    truth = tiny_result.cell.labels["ribosome"]
    _annotate(widget, truth)
    widget.training.architecture.value = "unet"
    widget.training.steps.value = 150
    viewer.dims.set_point(0, viewer.layers[0].translate[0] + 16 * 20.0)  # slice 16
    worker = widget.start_training()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    overlay = viewer.layers["prediction: ribosome"]
    image = viewer.layers[0]
    assert overlay.data.shape == image.data.shape
    np.testing.assert_allclose(overlay.scale, image.scale)
    np.testing.assert_allclose(overlay.translate, image.translate)
    preview = np.asarray(overlay.data[16], np.float32)
    assert preview.max() > 0.5
    kept = widget.models["ribosome"].threshold  # calibrated on held-out pixels
    assert widget.thresholds["ribosome"] == kept
    assert dice(preview > kept, truth[16]) > 0.3
    assert 0 < len(widget.loss_plot.values) <= 150
    assert widget.controller.session.model_path("ribosome").exists()
    # segment the whole tomogram with the trained network
    worker = widget.start_segmentation()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    whole = np.asarray(overlay.data, np.float32)
    assert dice(whole > 0.5, truth) > 0.4
    assert widget.controller.session.segmentation_path("ribosome").exists()
    labels = _merged(widget, qtbot)
    # one feature: label 1 exactly where its probability passes its (calibrated) threshold
    threshold = np.float32(widget.thresholds.get("ribosome", 0.5))
    expected = (np.asarray(overlay.data, np.float32) > threshold).astype(np.uint8)
    assert expected.any() and not expected.all()
    np.testing.assert_array_equal(labels, expected)
    np.testing.assert_array_equal(viewer.layers["segmentation (merged)"].data, expected)
    from napari_tomoseg.io.mrc import open_volume

    saved, _ = open_volume(widget.controller.session.folder / "segmentations" / "merged.mrc")
    np.testing.assert_array_equal(saved, expected)


def test_stop_ends_training_and_never_replaces_a_scored_model(workflow, tiny_result, qtbot):
    from napari_tomoseg.feature_files import stopped_model_file

    viewer, widget = workflow
    _annotate(widget, tiny_result.cell.labels["ribosome"])
    widget.training.steps.value = 2  # a model whose weights a held-out check chose
    worker = widget.start_training()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60_000)
    first, path = widget.models["ribosome"], widget.controller.session.model_path("ribosome")
    saved = path.read_bytes()
    widget.training.steps.value = 100000
    worker = widget.start_training()
    qtbot.waitUntil(lambda: len(widget.loss_plot.values) >= 2, timeout=60_000)
    at_stop = len(widget.loss_plot.values)
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        widget.stop()
    # stopped within a step: at most the step in flight and a few queued updates follow
    assert at_stop <= len(widget.loss_plot.values) <= at_stop + 5
    assert widget.training.train_button.enabled
    # before its first held-out check: the earlier model stays, in the dock and on disk
    assert widget.models["ribosome"] is first and path.read_bytes() == saved
    assert stopped_model_file(path).exists()
    assert "keeps its earlier model" in widget.training.status.value


def test_session_restores_exactly_in_a_new_viewer(workflow, tiny_result, make_napari_viewer,
                                                  tiny_files, tmp_path):
    from napari_tomoseg._napari.workflow_widget import TomosegWidget

    viewer, widget = workflow
    _annotate(widget, tiny_result.cell.labels["ribosome"], n_pos=3, n_neg=4)
    before = widget.controller.session
    masks_before = np.asarray(widget.controller.masks_layer.data).copy()
    viewer2 = make_napari_viewer()
    (image,) = viewer2.open(str(tiny_files["tomogram"]), plugin=PLUGIN)
    widget2 = TomosegWidget(viewer2)
    widget2.tomogram.value = image
    after = widget2.start_session(tmp_path / "session")
    assert [(b.id, b.feature, b.z, b.y, b.x, b.positive) for b in after.boxes] == \
        [(b.id, b.feature, b.z, b.y, b.x, b.positive) for b in before.boxes]
    for a, b in zip(after.boxes, before.boxes):
        if b.positive:
            np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(widget2.controller.masks_layer.data, masks_before)
    assert len(widget2.controller.boxes_layer.data) == len(before.boxes)
    assert Session.load(tmp_path / "session").feature_names() == before.feature_names()
    # the feature worked on last (not the first, membrane) is the active one again
    assert widget2.controller.active == "ribosome" == widget2.features.feature.value


def test_errors_become_notifications_not_crashes(workflow, monkeypatch):
    from napari_tomoseg._napari import notify

    messages = []
    monkeypatch.setattr(notify, "show_error", messages.append)
    viewer, widget = workflow
    widget.training.train_button.changed.emit(True)  # no positives yet
    assert messages and "no positive boxes" in messages[-1]
    widget.segmenting.segment_button.changed.emit(True)  # no model yet
    assert "train a network first" in messages[-1]
    with pytest.raises(TomosegError, match="no trained network for 'ribosome'"):
        widget.start_segmentation(["ribosome"])  # from a script: was a bare KeyError


def test_closing_the_viewer_mid_training_stops_the_worker(make_napari_viewer, tiny_files,
                                                         tiny_result, tmp_path, qtbot):
    from qtpy.QtCore import QThreadPool

    from napari_tomoseg._napari.workflow_widget import TomosegWidget

    viewer = make_napari_viewer()
    (image,) = viewer.open(str(tiny_files["tomogram"]), plugin=PLUGIN)
    widget = TomosegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.tomogram.value = image
    widget.start_session(tmp_path / "s")
    _annotate(widget, tiny_result.cell.labels["ribosome"])
    widget.training.steps.value = 100000
    worker = widget.start_training()
    qtbot.waitUntil(lambda: len(widget.loss_plot.values) >= 1, timeout=60_000)
    viewer.close()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=30_000)
    assert QThreadPool.globalInstance().waitForDone(10_000)
    assert not list((tmp_path / "s").rglob("*.partial"))


def test_a_click_places_a_box_where_it_lands(workflow):
    from types import SimpleNamespace

    viewer, widget = workflow
    assert widget.boxes.click_places.value  # on by default
    image = viewer.layers[0]
    c = widget.controller
    c.masks_layer.mode = "pan_zoom"  # another layer active, no tool in use: a click places too
    viewer.layers.selection.active = c.masks_layer
    event = SimpleNamespace(button=1, type="mouse_press", position=image.data_to_world(
        (4, 30.0, 30.0)), modifiers=())
    handler = widget.boxes.on_click(viewer, event)
    next(handler)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(handler)
    assert len(c.session.boxes) == 1
    c.session.remove_boxes([c.session.boxes[0].id])
    viewer.layers.selection.active = image  # with the masks active a click paints instead
    world = image.data_to_world((10, 40.0, 50.0))
    viewer.dims.set_point(0, world[0])
    for shift in (False, True):
        viewer.layers.selection.active = image  # after a positive box the brush is active
        event = SimpleNamespace(button=1, type="mouse_press", position=world,
                                modifiers=("Shift",) if shift else ())
        handler = widget.boxes.on_click(viewer, event)
        next(handler)
        event.type = "mouse_release"
        with pytest.raises(StopIteration):
            next(handler)
    boxes = widget.controller.session.boxes
    assert [(b.z, round(b.y), round(b.x), b.positive) for b in boxes] == \
        [(10, 40, 50, True), (10, 40, 50, False)]


def test_models_apply_to_another_open_tomogram(workflow, tiny_result, qtbot, tmp_path):
    from napari_tomoseg.io.mrc import write_volume

    viewer, widget = workflow
    _annotate(widget, tiny_result.cell.labels["ribosome"])
    _train(widget, qtbot, steps=5)
    other_path = write_volume(tmp_path / "other.mrc", tiny_result.tomogram[:, :64, :80], 20.0,
                              (1.0, 2.0, 3.0))
    (other,) = viewer.open(str(other_path), plugin=PLUGIN)
    widget.segmenting.target.reset_choices()
    widget.segmenting.target.value = other
    worker = widget.start_segmentation()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    layer = viewer.layers["prediction: ribosome [other]"]
    assert layer.data.shape == (32, 64, 80)
    np.testing.assert_allclose(layer.translate, (1.0, 2.0, 3.0))
    assert (widget.controller.session.folder / "segmentations" / "other_ribosome.mrc").exists()


def test_a_box_clicked_at_the_edge_moves_inside_and_says_so(workflow):
    """A box centred 3 px from the corner lay three quarters off the slice, silently (a trial
    on real data); it now moves inward until all of it is on the slice."""
    viewer, widget = workflow
    c = widget.controller
    widget.boxes.box_size.value = 32
    _, ny, nx = c.shape
    box = widget.place_box(False, 4, 3.0, 3.0)
    assert (box.y, box.x) == (16.0, 16.0)
    assert "moved inside the tomogram" in widget.status.value
    box = widget.place_box(False, 4, ny - 2.0, 40.0)
    assert (box.y, box.x) == (ny - 16.0, 40.0)
    widget.status.value = ""
    box = widget.place_box(False, 4, 40.0, 40.0)  # inside: where it was clicked, nothing said
    assert (box.y, box.x) == (40.0, 40.0) and widget.status.value == ""
    y0, x0 = c.session.boxes[0].corner()
    assert y0 >= 0 and x0 >= 0


def test_thresholds_are_per_feature(workflow, qtbot):
    from napari_tomoseg.io.mrc import write_volume

    viewer, widget = workflow
    c = widget.controller
    with pytest.raises(TomosegError, match="segment the whole tomogram first"):
        widget.merge()  # previews alone are never merged
    for feature in ("membrane", "ribosome"):
        c.overlay(feature).data[:] = 0.6
        write_volume(c.session.segmentation_path(feature),  # what a finished segment leaves
                     np.full(c.image.data.shape, 0.6, np.float16), tuple(c.image.scale),
                     tuple(c.image.translate))
    widget.features.feature.value = "ribosome"
    widget.segmenting.threshold.value = 0.7
    widget.features.feature.value = "membrane"
    assert widget.segmenting.threshold.value == 0.5
    ribosome = viewer.layers["prediction: ribosome"]
    assert ribosome.metadata["threshold"] == 0.7  # Pick's default
    assert ribosome.contrast_limits == [0.0, 1.0]  # shown from 0; the step sits at 0.7
    assert ribosome.colormap.map(np.array([0.69]))[0, 0] < ribosome.colormap.map(
        np.array([0.71]))[0, 0] * 0.6
    labels = _merged(widget, qtbot)
    assert np.all(labels == c.session.label_of("membrane"))  # 0.6 passes 0.5, not 0.7
    for typo, said in (("membrnae=2000", "'membrnae' is not a feature of this run"),
                       ("membrane=-1", "0 or more"), ("membrane", "FEATURE=NM3")):
        widget.segmenting.min_sizes.value = typo  # refused before any work, in its own words
        with pytest.raises(TomosegError, match=said):
            widget.merge()
    widget.segmenting.min_sizes.value = "membrane=1e9, ribosome=0"  # the whole sheet: a piece
    assert not _merged(widget, qtbot).any()


def test_a_map_of_an_earlier_model_merges_at_its_own_threshold(workflow, qtbot, monkeypatch):
    """After a new training the map on disk is the old model's, and Merge used it at the new
    model's threshold without a word; its header keeps the threshold it was made for."""
    from napari_tomoseg.io.mrc import write_volume
    from napari_tomoseg.io.probability_header import threshold_label

    viewer, widget = workflow
    c = widget.controller
    write_volume(c.session.segmentation_path("ribosome"),  # made by the earlier model
                 np.full(c.image.data.shape, 0.6, np.float16), tuple(c.image.scale),
                 tuple(c.image.translate), labels=(threshold_label("ribosome", 0.55),))
    widget.thresholds["ribosome"] = 0.7  # what a new model brought
    messages = []
    monkeypatch.setattr("napari_tomoseg._napari.workflow.segment_panel.show_info",
                        messages.append)
    labels = _merged(widget, qtbot)
    assert np.all(labels > 0)  # 0.6 passes 0.55, not 0.7
    assert "from an earlier model: merged at its own threshold 0.55" in messages[-1]
    widget.features.feature.value = "ribosome"
    widget.segmenting.threshold.value = 0.65  # set by hand: it wins
    assert np.all(_merged(widget, qtbot) == 0)


def test_a_calibrated_threshold_is_kept_exactly_for_merge_and_pick(workflow):
    from types import SimpleNamespace

    _, widget = workflow
    widget.controller.set_active("ribosome")
    widget.segmenting.use_threshold("ribosome", SimpleNamespace(threshold=0.37))
    assert widget.segmenting.threshold.value == pytest.approx(0.35)  # the slider's grid
    assert widget.thresholds["ribosome"] == 0.37  # what merge and Pick use
    widget.segmenting.threshold.value = 0.5  # the user moves it: that value counts
    assert widget.thresholds["ribosome"] == 0.5


def test_a_threshold_set_by_hand_comes_back_with_the_session(workflow, make_napari_viewer,
                                                            tiny_files, tmp_path):
    """A restore brought back the calibrated (or default) threshold, and Merge and Pick used
    it, not the one the user had chosen (a trial)."""
    from napari_tomoseg._napari.workflow_widget import TomosegWidget

    viewer, widget = workflow
    widget.features.feature.value = "ribosome"
    widget.segmenting.threshold.value = 0.7
    assert Session.load(tmp_path / "session").thresholds == {"ribosome": 0.7}
    widget.segmenting.threshold.value = 0.5  # back to the default: nothing of its own
    assert Session.load(tmp_path / "session").thresholds == {}
    widget.segmenting.threshold.value = 0.65
    viewer2 = make_napari_viewer()
    (image,) = viewer2.open(str(tiny_files["tomogram"]), plugin=PLUGIN)
    widget2 = TomosegWidget(viewer2)
    widget2.tomogram.value = image
    widget2.start_session(tmp_path / "session")
    assert widget2.thresholds["ribosome"] == 0.65
    widget2.features.feature.value = "ribosome"
    assert widget2.segmenting.threshold.value == pytest.approx(0.65)
    # a removed feature's threshold is not handed to a new feature of that name
    widget2.features.feature.value = "ribosome"
    widget2.features.remove()
    widget2.features.new_name.value = "ribosome"
    widget2.features.add()
    widget2.features.feature.value = "ribosome"
    assert widget2.thresholds.get("ribosome", 0.5) == 0.5
    assert Session.load(tmp_path / "session").thresholds == {}


def test_a_calibrated_threshold_off_the_slider_is_not_stored_as_set_by_hand(workflow):
    from types import SimpleNamespace

    _, widget = workflow
    widget.controller.set_active("ribosome")
    model = SimpleNamespace(threshold=0.02)  # e.g. a loaded model's; the slider stops at 0.05
    widget.models["ribosome"] = model
    widget.segmenting.use_threshold("ribosome", model)
    assert widget.controller.session.thresholds == {}


def test_renaming_a_trained_feature_keeps_its_model_working(workflow, tiny_result, qtbot):
    from napari_tomoseg.feature_files import previous_model_file

    viewer, widget = workflow
    _annotate(widget, tiny_result.cell.labels["ribosome"])
    widget.training.steps.value = 2
    handle = widget.start_training()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    first = widget.controller.session.model_path("ribosome").read_bytes()
    handle = widget.start_training()  # again: the first model is kept beside the new one
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    assert previous_model_file(widget.controller.session.model_path("ribosome")).read_bytes() \
        == first
    widget.features.feature.value = "ribosome"
    widget.features.new_name.value = "80S"
    widget.features.rename()
    assert widget.models["80S"].feature == "80S"
    assert widget.controller.session.model_path("80S").exists()
    handle = widget.start_segmentation()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    assert handle.outcome == "done"
    assert np.asarray(viewer.layers["prediction: 80S"].data).any()


def test_a_changed_origin_keeps_every_box_on_reopening(make_napari_viewer, tiny_files, tiny_result,
                                                      tmp_path):
    """Issue #14: a header edit used to wipe the session (6 boxes became 0)."""
    from napari_tomoseg._napari.workflow_widget import TomosegWidget
    from napari_tomoseg.io.mrc import open_volume, write_volume

    volume, info = open_volume(tiny_files["tomogram"])
    path = write_volume(tmp_path / "t.mrc", np.asarray(volume), info.voxel_size, info.origin)

    def reopen():
        viewer = make_napari_viewer()
        (image,) = viewer.open(str(path), plugin=PLUGIN)
        widget = TomosegWidget(viewer)
        widget.tomogram.value = image
        widget.start_session()
        return viewer, widget

    viewer, widget = reopen()
    _annotate(widget, tiny_result.cell.labels["ribosome"], n_pos=3, n_neg=3)
    before = {b.id: (b.z, b.y, b.x, b.positive, None if b.mask is None else b.mask.tobytes())
              for b in widget.controller.session.boxes}
    assert len(before) == 6 and any(b[4] and any(b[4]) for b in before.values())
    painted = np.count_nonzero(widget.controller.masks_layer.data)
    write_volume(path, np.asarray(volume), info.voxel_size, (0.0, 55.0, -40.0), overwrite=True)
    viewer, widget = reopen()
    session = widget.controller.session
    after = {b.id: (b.z, b.y, b.x, b.positive, None if b.mask is None else b.mask.tobytes())
             for b in session.boxes}
    assert after == before
    assert session.folder == tmp_path / "t.mrc.tomoseg" and session.origin == (0.0, 55.0, -40.0)
    assert len(widget.controller.boxes_layer.data) == 6  # drawn again
    assert np.count_nonzero(widget.controller.masks_layer.data) == painted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.mrc", "t.mrc.tomoseg"]


@pytest.mark.parametrize("threshold", [0.95, 0.05, 0.7])  # the held-out grid
def test_a_calibrated_threshold_becomes_the_slider_value(workflow, threshold):
    """Any stored threshold lands on the slider's 0.05 grid inside its range (0.95 once
    became 0.9500000000000001 and raised)."""
    from types import SimpleNamespace

    _, widget = workflow
    widget.controller.set_active("ribosome")
    widget.segmenting.use_threshold("ribosome", SimpleNamespace(threshold=threshold))
    assert widget.thresholds["ribosome"] == threshold
    assert widget.segmenting.threshold.value == pytest.approx(round(threshold * 20) / 20)


def test_b_places_a_box_whatever_layer_is_active(make_napari_viewer, tiny_files, tmp_path, qtbot):
    """napari binds b on its own layers (e.g. Shapes: move to back); ours must win."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    from napari_tomoseg._napari.workflow_widget import TomosegWidget

    viewer = make_napari_viewer(show=True)
    (image,) = viewer.open(str(tiny_files["tomogram"]), plugin=PLUGIN)
    widget = TomosegWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.tomogram.value = image
    widget.start_session(tmp_path / "s")
    c = widget.controller
    overlay = c.overlay("ribosome")
    viewer.cursor.position = image.data_to_world((16, 48.0, 48.0))  # the mouse over the cell
    canvas = viewer.window._qt_viewer.canvas.native
    for n, layer in enumerate([image, c.masks_layer, c.boxes_layer, overlay], start=1):
        viewer.layers.selection.active = layer
        canvas.setFocus()
        QTest.keyClick(canvas, Qt.Key.Key_B)
        qtbot.waitUntil(lambda n=n: len(c.session.boxes) == n, timeout=5_000)
    QTest.keyClick(canvas, Qt.Key.Key_B, Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: len(c.session.boxes) == 5, timeout=5_000)
    assert [b.positive for b in c.session.boxes] == [True] * 4 + [False]
    widget.close_down()  # the keys are released with the widget
    viewer.layers.selection.active = c.masks_layer
    QTest.keyClick(canvas, Qt.Key.Key_B)
    qtbot.wait(100)
    assert len(c.session.boxes) == 5


def test_training_shows_a_preview_from_step_one_and_continue_keeps_the_curve(workflow,
                                                                             tiny_result, qtbot):
    viewer, widget = workflow
    _annotate(widget, tiny_result.cell.labels["ribosome"])
    widget.training.steps.value = 3
    viewer.dims.set_point(0, viewer.layers[0].translate[0] + 16 * 20.0)
    seen = []
    overlay = widget.controller.overlay("ribosome")
    overlay.events.set_data.connect(lambda e: seen.append(np.asarray(overlay.data[16]).copy()))
    handle = widget.start_training()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    assert seen and np.count_nonzero(seen[0]) > 0  # the very first preview shows something
    assert overlay.contrast_limits == [0.0, 1.0]  # from 0, not only what passes 0.5
    first = list(widget.loss_plot.values)
    assert len(first) == 3
    qtbot.waitUntil(lambda: "trained 3 steps" in widget.training.model_state.value,
                    timeout=5_000)  # the dock's end-of-job callback may come a moment later
    widget.training.continue_training.value = True
    handle = widget.start_training()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    assert widget.loss_plot.values[:3] == pytest.approx(first)  # kept, not restarted
    assert len(widget.loss_plot.values) == 6
    assert len(widget.models["ribosome"].history) == 6


def test_models_load_into_a_feature_and_export(workflow, tiny_result, qtbot, tmp_path):
    from napari_tomoseg.nn.model_file import load_model

    viewer, widget = workflow
    _annotate(widget, tiny_result.cell.labels["ribosome"])
    widget.training.steps.value = 2
    handle = widget.start_training()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    exported = widget.training.export_model(tmp_path / "mine")
    assert exported.name == "mine.pt" and load_model(exported).feature == "ribosome"
    widget.controller.set_active("membrane")
    widget.training.load_model(exported)
    assert widget.models["membrane"].history == widget.models["ribosome"].history
    assert widget.controller.session.model_path("membrane").exists()
    assert "trained 2 steps" in widget.training.model_state.value
    # loading another model over it keeps the one it replaces, as a new training does
    session = widget.controller.session
    first = session.model_path("membrane").read_bytes()
    widget.training.load_model(session.model_path("ribosome"))
    assert session.model_path("membrane").with_name("membrane.previous.pt").read_bytes() == first
    with pytest.raises(TomosegError, match="choose a model file"):
        widget.training.load_model(tmp_path / "missing.pt")


def test_a_bundled_sample_keeps_its_session_in_the_user_data_folder(make_napari_viewer,
                                                                    monkeypatch, tmp_path):
    from napari_tomoseg import session as session_module
    from napari_tomoseg._napari.workflow_widget import TomosegWidget
    from napari_tomoseg.sample_files import sample_folders

    monkeypatch.setattr(session_module, "user_sessions_folder", lambda: tmp_path / "data")
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_cell")
    widget = TomosegWidget(viewer)
    widget.tomogram.value = viewer.layers["synthetic_cell"]
    session = widget.start_session()
    assert session.folder == tmp_path / "data" / "synthetic_cell.mrc.tomoseg"
    for folder in sample_folders():
        assert not list(folder.rglob("*.tomoseg"))
    assert str(widget.session_panel.folder.value) == str(session.folder)


def test_a_thick_slab_averages_slices_in_the_annotation_view(workflow):
    viewer, widget = workflow
    image = widget.controller.image
    widget.boxes.slab.value = 7
    assert image.projection_mode == "mean"
    assert viewer.dims.thickness[0] == pytest.approx(7 * image.scale[0])
    widget.boxes.slab.value = 1
    assert image.projection_mode == "none"


def test_boxes_placed_while_training_runs_reach_no_network_of_it(workflow, tiny_result, qtbot):
    """Training read the session's live box list: an ensemble's later networks trained on
    boxes placed after Train, which its first network (and its held-out split) never saw."""
    viewer, widget = workflow
    _annotate(widget, tiny_result.cell.labels["ribosome"], n_pos=3, n_neg=6)
    widget.training.steps.value = 3
    widget.training.networks.value = "2"
    handle = widget.start_training()
    widget.place_box(False, 3, 20.0, 20.0)  # the user goes on annotating
    widget.place_box(False, 4, 90.0, 90.0)
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    members = widget.models["ribosome"].info["members"]
    assert [m["negatives"] for m in members] == [6, 6]
    assert sum(not b.positive for b in widget.controller.session.boxes) == 8


def test_stem_and_orientation_choices_reach_the_network_and_a_continued_model_keeps_its_own(
        workflow, tiny_result, qtbot):
    from napari_tomoseg.errors import InvalidSettingsError

    viewer, widget = workflow
    _annotate(widget, tiny_result.cell.labels["ribosome"], n_pos=3, n_neg=6)
    widget.training.steps.value = 2
    widget.training.stem3d.value = "on"  # a ribosome has no stem unless asked
    widget.training.orientations.value = "wedge"
    handle = widget.start_training()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    model = widget.models["ribosome"]
    assert model.network.stem is not None and model.parameters["context"] == 4
    assert model.network.symmetry == "wedge"
    assert "3D stem, tilt axis kept" in widget.training.model_state.value
    widget.training.continue_training.value = True
    widget.training.stem3d.value = "off"
    with pytest.raises(InvalidSettingsError, match="keeps its own"):
        widget.start_training()
    widget.training.stem3d.value = "auto"
    with pytest.raises(InvalidSettingsError, match="keeps its own"):
        widget.start_training()
    assert widget.models["ribosome"] is model  # nothing trained, nothing replaced
    widget.training.continue_training.value = False
    widget.training.orientations.value = "auto"
    assert widget.training.networks.value == "auto"
    widget.training.networks.value = "2"
    handle = widget.start_training()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    model = widget.models["ribosome"]
    assert model.parameters["members"] == 2 and len(model.network.members) == 2
    assert "(unet, 2 networks averaged)" in widget.training.model_state.value
    # one loss curve per network, drawn over each other (not one sawtooth)
    own = [[loss for _, loss in m["history"]] for m in model.info["members"]]
    assert [list(c) for c in widget.loss_plot.curves()] == own
    widget.loss_plot.grab()  # painted without error
    widget.training.continue_training.value = True  # each network goes on with its curve
    handle = widget.start_training()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    more = widget.models["ribosome"]
    assert more.parameters["members"] == 2
    assert [list(c) for c in widget.loss_plot.curves()] == \
        [[loss for _, loss in m["history"]] for m in more.info["members"]]
    assert [len(c) for c in widget.loss_plot.curves()] == [len(c) + 2 for c in own]


def test_pick_refuses_a_training_preview_and_a_stopped_segmentation(workflow, tiny_result, qtbot):
    """Both fill a prediction layer only in part; picked, they gave picks on a few slices."""
    from napari_tomoseg._napari.picking_widget import PickingWidget

    viewer, widget = workflow
    _annotate(widget, tiny_result.cell.labels["ribosome"])
    _train(widget, qtbot, steps=5)
    overlay = viewer.layers["prediction: ribosome"]
    picking = PickingWidget(viewer)
    picking.source.reset_choices()
    picking.source.value = overlay
    with pytest.raises(TomosegError, match="training preview"):
        picking.pick()
    handle = widget.start_segmentation()
    widget.stop()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    assert handle.outcome == "cancelled"
    with pytest.raises(TomosegError, match="part way"):
        picking.pick()
    handle = widget.start_segmentation()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=120_000)
    assert handle.outcome == "done"
    handle = picking.pick()  # a whole map now
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    assert handle.outcome == "done"


def test_a_deleted_masks_layer_comes_back_with_its_paint(workflow):
    """Deleting 'tomoseg masks' broke every later action ('Cannot select item ...')."""
    viewer, widget = workflow
    c = widget.controller
    c.set_active("membrane")
    widget.boxes.box_size.value = 32
    box = widget.place_box(True, 5, 40.0, 40.0)
    label = c.session.label_of("membrane")
    c.masks_layer.data[5, 30:34, 30:34] = label
    c.collect_masks()
    viewer.layers.remove(c.masks_layer)
    widget.place_box(True, 6, 40.0, 40.0)  # any action: the layer is made again
    masks = c.masks_layer
    assert masks in viewer.layers and np.count_nonzero(masks.data[5] == label) == 16
    masks.data[6, 30:32, 30:32] = label
    viewer.dims.set_point(0, c.image.data_to_world((6, 0, 0))[0])
    masks.events.paint()  # a stroke on the new layer reaches the session
    assert [b.mask.sum() for b in c.session.boxes if b.positive] == [16, 4]
    assert c.session.box(box.id).mask.sum() == 16


def test_another_session_folder_for_the_same_tomogram_shows_only_its_own_boxes(workflow, tmp_path):
    """Switching folders crashed ('Length of values (0) does not match length of index (2)')."""
    viewer, widget = workflow
    c = widget.controller
    c.set_active("membrane")
    widget.boxes.box_size.value = 32
    widget.place_box(True, 5, 40.0, 40.0)
    c.masks_layer.data[5, 30:34, 30:34] = c.session.label_of("membrane")
    c.collect_masks()
    widget.place_box(False, 8, 60.0, 60.0)
    first = c.session.folder
    widget.start_session(tmp_path / "other")
    other = widget.controller
    assert other.session.folder != first and other.session.boxes == []
    assert len(other.boxes_layer.data) == 0 and not np.asarray(other.masks_layer.data).any()
    widget.place_box(False, 9, 50.0, 50.0)
    assert len(Session.load(first).boxes) == 2  # the first session is untouched
    widget.start_session(first)
    back = widget.controller
    assert len(back.session.boxes) == 2 and len(back.boxes_layer.data) == 2
    assert np.count_nonzero(back.masks_layer.data[5]) == 16
    assert len(Session.load(tmp_path / "other").boxes) == 1


def test_renaming_or_resizing_the_tomogram_keeps_its_layers_in_step(workflow, tiny_result, qtbot):
    """A new voxel size moved the tomogram under its boxes and paint; a new name made a
    second set of session layers beside the first."""
    viewer, widget = workflow
    c = widget.controller
    image = c.image
    _annotate(widget, tiny_result.cell.labels["ribosome"], n_pos=2, n_neg=2)
    _train(widget, qtbot, steps=3)
    widget.session_panel.voxel.value = 10.0
    for layer in (c.boxes_layer, c.masks_layer, viewer.layers["prediction: ribosome"]):
        np.testing.assert_allclose(layer.scale, image.scale)
    assert image.scale[-1] == 10.0 and Session.load(c.session.folder).voxel_size == 10.0
    box = c.session.boxes[0]  # the box is drawn over its own voxel, in world coordinates
    np.testing.assert_allclose(c.boxes_layer.data_to_world((box.z, box.y, box.x)),
                               image.data_to_world((box.z, box.y, box.x)))
    names = [layer.name for layer in viewer.layers]
    image.name = "my cell"
    widget.start_session(c.session.folder)
    handle = widget.start_segmentation()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=120_000)
    assert sorted(layer.name for layer in viewer.layers) == sorted(
        ["my cell" if n == names[0] else n for n in names])


def test_a_typed_voxel_size_comes_back_with_the_session(make_napari_viewer, tiny_result, tmp_path):
    """A header without a voxel size asked for it again at every restore."""
    from napari_tomoseg._napari.voxel_size import voxel_size_of
    from napari_tomoseg._napari.workflow_widget import TomosegWidget
    from napari_tomoseg.io.mrc import write_volume

    path = write_volume(tmp_path / "nohead.mrc", tiny_result.tomogram, 0.0)
    for typed in (12.5, None):  # typed in the first viewer; a new viewer restores it
        viewer = make_napari_viewer()
        (image,) = viewer.open(str(path), plugin=PLUGIN)
        widget = TomosegWidget(viewer)
        widget.tomogram.value = image
        if typed:
            with pytest.raises(TomosegError, match="Voxel size"):
                voxel_size_of(image)
            widget.session_panel.voxel.value = typed
        widget.start_session(tmp_path / "s.tomoseg")
        assert voxel_size_of(image) == 12.5 and widget.controller.session.voxel_size == 12.5
    # over a header's value (2.7 A on a tomogram of 10.8 A voxels): a restore dropped it
    path = write_volume(tmp_path / "binned.mrc", tiny_result.tomogram, 2.7)
    for typed in (10.8, None):  # a size typed before a restore: tests/test_session.py
        viewer = make_napari_viewer()
        (image,) = viewer.open(str(path), plugin=PLUGIN)
        widget = TomosegWidget(viewer)
        widget.tomogram.value = image
        if typed:
            widget.session_panel.voxel.value = typed
        widget.start_session(tmp_path / "binned.tomoseg")
        expected = typed or 10.8
        assert voxel_size_of(image) == pytest.approx(expected)
        assert widget.controller.session.voxel_size == pytest.approx(expected)


def test_every_layer_of_a_session_is_in_angstrom(workflow, tiny_result):
    """napari draws its scale bar and reads the cursor in layer units, and ignores units
    altogether (with a warning) while layers disagree: each layer must say Angstrom."""
    import pint

    viewer, widget = workflow
    _annotate(widget, tiny_result.cell.labels["ribosome"], n_pos=2, n_neg=2)
    widget.controller.overlay("ribosome")
    assert len(viewer.layers) >= 4  # tomogram, boxes, masks, prediction
    angstrom = pint.get_application_registry()("angstrom").units
    assert {tuple(layer.units) for layer in viewer.layers} == {(angstrom,) * 3}
    viewer.scale_bar.visible = True
    assert viewer.layers.extent.units == (angstrom,) * 3 or \
        tuple(viewer.dims.units) == (angstrom,) * 3


def test_a_session_started_again_after_another_tomogram_saves_without_conflict(workflow,
                                                                               tiny_result,
                                                                               tmp_path):
    """T1, then T2, then T1 again: T1's first controller still listened to its reused layers
    and saved a stale copy first, so every later save met a conflict."""
    from napari_tomoseg._napari.workflow_widget import TomosegWidget
    from napari_tomoseg.io.mrc import write_volume

    viewer, widget = workflow
    first = widget.tomogram.value
    folder = widget.controller.session.folder
    other = write_volume(tmp_path / "other.mrc", tiny_result.tomogram + 1.0, 20.0)
    (image2,) = viewer.open(str(other), plugin=PLUGIN)
    widget.tomogram.value = image2
    widget.start_session(tmp_path / "other.tomoseg")
    widget.tomogram.value = first
    widget.start_session(folder)
    widget.place_box(False, 4, 40.0, 40.0)
    widget.place_box(True, 5, 48.0, 48.0)
    assert len(Session.load(folder).boxes) == 2
    widget.close_down()  # the dock closed (its destroyed signal) and opened again on the
    again = TomosegWidget(viewer)  # same layers
    again.tomogram.value = first
    again.start_session(folder)
    again.place_box(False, 6, 40.0, 40.0)
    assert len(Session.load(folder).boxes) == 3
    assert not (folder / "session.conflict.json").exists()


def test_a_failed_save_at_the_end_of_a_job_still_gives_the_dock_back(workflow, qtbot,
                                                                     monkeypatch):
    """A save that raised when a training finished (a full disk, a session conflict) left
    Train, Segment and Load disabled and Stop enabled until the dock was reopened."""
    from napari_tomoseg.jobs.progress import Progress

    viewer, widget = workflow
    said = []
    monkeypatch.setattr("napari_tomoseg._napari.workflow.state.report_error", said.append)

    def job():
        yield Progress(1, 1, "working")

    def full():
        raise OSError(28, "No space left on device")

    handle = widget.workflow.run(job(), on_finished=full)
    assert not widget.training.train_button.enabled
    qtbot.waitUntil(lambda: not handle.is_running, timeout=10_000)
    qtbot.waitUntil(lambda: widget.training.train_button.enabled, timeout=5_000)
    assert not widget.training.stop_button.enabled
    assert said and "No space" in str(said[0])


def test_renames_and_thresholds_stay_with_their_own_tomogram(workflow, tiny_result, tmp_path):
    """Renaming 'ribosome' in B's session renamed A's map too (and Pick then saved it into A's
    session under the new name); B's threshold slider set A's map threshold."""
    from napari_tomoseg.io.mrc import write_volume

    viewer, widget = workflow
    a_map = widget.controller.overlay("ribosome")
    a_map.metadata["threshold"] = 0.4
    other = write_volume(tmp_path / "other.mrc", tiny_result.tomogram + 1.0, 20.0)
    (image2,) = viewer.open(str(other), plugin=PLUGIN)
    widget.tomogram.value = image2
    widget.start_session(tmp_path / "other.tomoseg")
    widget.controller.overlay("ribosome")
    widget.features.feature.value = "ribosome"
    widget.segmenting.threshold.value = 0.85
    assert a_map.metadata["threshold"] == 0.4
    widget.features.new_name.value = "ribo"
    widget.features.rename()
    assert a_map.name == "prediction: ribosome"
    assert a_map.metadata["tomoseg_role"]["feature"] == "ribosome"


def test_a_particle_file_opened_during_a_session_is_not_claimed_by_its_tomogram(workflow,
                                                                                tmp_path):
    """Any points layer without a frame took the session tomogram's, a CSV of another
    tomogram too: saved again, its particles carried this tomogram's name."""
    from napari_tomoseg.layer_data import frame_from_metadata

    viewer, widget = workflow
    csv = tmp_path / "other_cell.csv"
    csv.write_text("x,y,z\n10,20,5\n30,40,6\n")
    (opened,) = viewer.open(str(csv), plugin=PLUGIN)
    assert frame_from_metadata(opened.metadata) is None  # its own, or none: never this one
    by_hand = viewer.add_points(np.zeros((0, 3)), scale=widget.tomogram.value.scale)
    assert frame_from_metadata(by_hand.metadata).name == \
        frame_from_metadata(widget.tomogram.value.metadata).name


def test_the_voxel_size_field_shows_the_chosen_tomograms_own(workflow, tiny_result, tmp_path):
    """25 A typed for A stayed in the field when B was chosen, and typing 25 for B then did
    nothing (no change): B kept its 20 A."""
    from napari_tomoseg.io.mrc import write_volume

    viewer, widget = workflow
    first = widget.tomogram.value
    widget.session_panel.voxel.value = 25.0
    other = write_volume(tmp_path / "other.mrc", tiny_result.tomogram + 1.0, 20.0)
    (image2,) = viewer.open(str(other), plugin=PLUGIN)
    widget.tomogram.value = image2
    assert widget.session_panel.voxel.value == 0.0 and float(image2.scale[-1]) == 20.0
    widget.session_panel.voxel.value = 25.0
    assert float(image2.scale[-1]) == 25.0
    widget.tomogram.value = first
    assert widget.session_panel.voxel.value == 25.0


def test_a_stop_after_a_map_is_whole_leaves_it_pickable(workflow, tiny_result, qtbot,
                                                        monkeypatch):
    """Stop landing after the map was written (the job had only its last progress left)
    marked the finished map incomplete, and Pick refused it."""
    import threading
    from types import SimpleNamespace

    from napari_tomoseg._napari.layer_tags import INCOMPLETE
    from napari_tomoseg._napari.workflow import segment_panel
    from napari_tomoseg.io.mrc import write_volume
    from napari_tomoseg.jobs.progress import Progress

    viewer, widget = workflow
    _annotate(widget, tiny_result.cell.labels["ribosome"])
    widget.training.steps.value = 2
    handle = widget.start_training()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    gate = threading.Event()

    def whole_then_last_progress(volume, voxel, origin, models, outputs, options, tomogram=None):
        write_volume(outputs[0], np.zeros(volume.shape, np.float32), voxel, origin,
                     overwrite=True)  # the map is whole on disk
        update = SimpleNamespace(z0=0, z1=1, probability=np.zeros((1, *volume.shape[1:])))
        yield Progress(1, 2, "written", payload=(models[0].feature, update))
        gate.wait(10)  # Stop comes now
        yield Progress(2, 2, "done", payload=(models[0].feature, update))
        return {models[0].feature: outputs[0]}

    monkeypatch.setattr(segment_panel, "segment_tomogram", whole_then_last_progress)
    handle = widget.start_segmentation()
    qtbot.waitUntil(lambda: widget.segmenting.progress.value == 1, timeout=10_000)
    widget.stop()
    gate.set()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=10_000)
    assert handle.outcome == "cancelled"
    assert INCOMPLETE not in viewer.layers["prediction: ribosome"].metadata


def test_a_model_rescued_from_a_full_disk_stays_in_the_dock(workflow, tiny_result, qtbot,
                                                            monkeypatch, tmp_path):
    from napari_tomoseg.nn import model_file

    viewer, widget = workflow
    _annotate(widget, tiny_result.cell.labels["ribosome"])
    real_save = model_file.save_model
    monkeypatch.setattr(model_file, "rescue_folder", lambda: tmp_path / "rescued")

    def session_disk_full(model, path, backup=None):
        if tmp_path / "rescued" not in path.parents:
            raise OSError(28, "No space left on device")
        return real_save(model, path, backup)

    monkeypatch.setattr(model_file, "save_model", session_disk_full)
    widget.training.steps.value = 2
    handle = widget.start_training()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    assert handle.outcome == "failed" and widget.models.get("ribosome") is not None
    assert "Export it" in widget.training.status.value
    assert list((tmp_path / "rescued").glob("*.pt"))


def test_the_binning_chosen_in_the_panel_is_the_models(workflow, tiny_result, qtbot):
    """Binning auto is the feature's default; a number replaces it for a new model, and a
    continued model, which keeps its own, refuses one."""
    from napari_tomoseg.errors import InvalidSettingsError

    viewer, widget = workflow
    _annotate(widget, tiny_result.cell.labels["ribosome"], n_pos=3, n_neg=6)
    widget.training.steps.value = 2
    widget.training.binning.value = "2"
    worker = widget.start_training()
    qtbot.waitUntil(lambda: not worker.is_running, timeout=60_000)
    assert widget.models["ribosome"].preprocess.binning == 2
    widget.training.continue_training.value = True
    with pytest.raises(InvalidSettingsError, match="binning is fixed"):
        widget.start_training()
