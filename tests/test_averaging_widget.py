"""The averaging widget in a real viewer: QC'd points in, live average, files and vectors out."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

napari = pytest.importorskip("napari")

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
                               features=pd.DataFrame({"status": np.zeros(len(field.zyx), int)}))
    return viewer, tomogram, points


def test_average_shows_layers_and_writes_only_kept_picks(make_napari_viewer, qtbot, tmp_path, field):
    from napari_tomoseg._napari.averaging_widget import AveragingWidget

    viewer, tomogram, points = _viewer_with_particles(make_napari_viewer, field)
    points.features.loc[[0, 1], "status"] = -1  # rejected in QC
    reference = write_volume(tmp_path / "ref.mrc", field.reference(32), 15.0)
    widget = AveragingWidget(viewer)
    widget.tomogram.value, widget.particles.value = tomogram, points
    widget.iterations.value = 1
    widget.reference.value = reference
    widget.output.value = tmp_path / "out"
    np.testing.assert_allclose(widget.picked_voxels(), field.zyx[2:], atol=1e-6)
    worker = widget.run()
    with qtbot.waitSignal(worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: widget.result is not None, timeout=5_000)
    average = viewer.layers["average"]
    assert average.data.shape == (32, 32, 32) and average.rendering == "iso"
    frame = TomogramFrame("field", field.tomogram.shape, 15.0, (30.0, -60.0, 90.0))
    table = read_star(tmp_path / "out" / "average_particles.star", frame)
    kept = len(widget.subtomograms.data)
    assert len(table) == kept <= len(field.zyx) - 2
    assert len(viewer.layers["orientations"].data) == kept
    # refined centres stay on the true particles (world coordinates of the viewer)
    errors = np.linalg.norm(table[["z", "y", "x"]].to_numpy() - field.zyx[2:][widget.subtomograms.indices],
                            axis=1)
    assert np.median(errors) < 1.5
    assert widget.fsc_plot.fsc is not None and widget.classify_button.enabled
    assert widget.progress.value == widget.progress.max == 1 and not widget.progress.visible


def test_cancel_stops_without_writing(make_napari_viewer, qtbot, tmp_path, field):
    from napari_tomoseg._napari.averaging_widget import AveragingWidget

    viewer, tomogram, points = _viewer_with_particles(make_napari_viewer, field)
    widget = AveragingWidget(viewer)
    widget.tomogram.value, widget.particles.value = tomogram, points
    widget.output.value = tmp_path / "out"
    worker = widget.run()  # reference-free: long enough to cancel
    qtbot.waitUntil(lambda: widget.subtomograms is not None, timeout=30_000)
    widget.cancel()
    with qtbot.waitSignal(worker.finished, timeout=60_000):
        pass
    assert widget.result is None
    assert not (tmp_path / "out" / "average.mrc").exists()
    assert widget.run_button.enabled
