"""The picking widget: Points layer from a probability map, score filter, QC, export."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_tomoseg.io.particles import TomogramFrame, read_star  # noqa: E402
from napari_tomoseg.picking import match_picks  # noqa: E402

CENTRES = np.array([[20.0, 20.0, 20.0], [20.0, 60.0, 30.0], [40.0, 40.0, 70.0],
                    [30.0, 75.0, 75.0]])


def _picked(make_napari_viewer, qtbot, prob, translate=(0.0, 0.0, 0.0)):
    """A viewer with the probability map, and the picking widget after picking it."""
    from napari_tomoseg._napari.picking_widget import PickingWidget

    viewer = make_napari_viewer()
    layer = viewer.add_image(prob, name="prediction: ribosome", scale=(10, 10, 10),
                             translate=translate)
    widget = PickingWidget(viewer)
    widget.source.value = layer
    widget.diameter.value = 120.0
    worker = widget.pick()
    with qtbot.waitSignal(worker.finished, timeout=30_000):
        pass
    qtbot.waitUntil(lambda: widget.points is not None, timeout=5_000)
    return viewer, widget


def test_pick_filter_judge_and_export(make_napari_viewer, qtbot, tmp_path, blobs):
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
