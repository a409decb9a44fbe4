"""The tilt-series pixel size typed in the TomoSeg widget reaches RELION's STAR files.

RELION 5 (src/jaz/tomography/particle_set.cpp, ParticleSet::getParticleCoordDecenteredPixel)
reads a particle at tilt-series pixel
    rlnCenteredCoordinateXAngst / rlnTomoTiltSeriesPixelSize + rlnTomoSizeX / 2,
with rlnTomoSizeX the width of the unbinned tomogram, and its coordinate import reads
the first data block of the file. The STAR files are parsed here as plain text.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_tomoseg.io.mrc import write_volume  # noqa: E402
from napari_tomoseg.io.particles import CoordinateWarning  # noqa: E402
from napari_tomoseg.session import Session  # noqa: E402

PLUGIN = "napari-tomoseg"
SHAPE = (24, 40, 56)  # z, y, x voxels of the bin-4 tomogram
VOXEL, TILT_SERIES = 40.0, 10.0  # Angstrom
ORIGIN = (400.0, -800.0, 1200.0)  # header origin: RELION's centred coordinates ignore it
CENTRES = np.array([[8.0, 12.0, 14.0], [14.0, 28.0, 40.0], [16.0, 20.0, 30.0]])


def star_blocks(path) -> list[tuple[str, list[dict]]]:
    """A STAR file as (block name, rows) in file order: a plain reading of the format."""
    blocks, labels, in_loop = [], [], False
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("data_"):
            blocks.append((line[5:], []))
            labels, in_loop = [], False
        elif line == "loop_":
            in_loop = True
        elif line.startswith("_"):
            parts = line.split()
            if in_loop:
                labels.append(parts[0][1:])
            else:  # a key-value block: one row
                if not blocks[-1][1]:
                    blocks[-1][1].append({})
                blocks[-1][1][0][parts[0][1:]] = parts[1]
        elif in_loop:
            blocks[-1][1].append(dict(zip(labels, line.split())))
    return blocks


@pytest.fixture
def binned(make_napari_viewer, tmp_path, blobs):
    """A viewer with a bin-4 tomogram (40 A voxels), its session, and a probability map."""
    from napari_tomoseg._napari.workflow_widget import TomosegWidget

    rng = np.random.default_rng(0)
    path = write_volume(tmp_path / "TS_01.mrc", rng.normal(size=SHAPE).astype(np.float32),
                        VOXEL, ORIGIN)
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(path), plugin=PLUGIN)
    prob = blobs(SHAPE, CENTRES, radius=3).astype(np.float32)
    from napari_tomoseg._napari.layer_tags import tag

    layer = viewer.add_image(prob, name="prediction: ribosome", scale=image.scale,
                             translate=image.translate)
    tag(layer, "probability", feature="ribosome")  # as segmentation or the reader tag it
    widget = TomosegWidget(viewer)
    widget.tomogram.value = image
    widget.start_session(tmp_path / "session")
    return viewer, widget, image, path


def _pick(viewer, qtbot):
    from napari_tomoseg._napari.picking_widget import PickingWidget

    picker = PickingWidget(viewer)
    picker.source.value = viewer.layers["prediction: ribosome"]
    picker.diameter.value = 240.0
    picker.pick()  # a tiny map may be picked before a waitSignal could connect: poll
    qtbot.waitUntil(lambda: picker.points is not None, timeout=30_000)
    return picker


def _check_relion(path, picked_zyx):
    blocks = star_blocks(path)
    assert [name for name, _ in blocks] == ["particles", "optics"]  # particles first
    particles, (optics,) = blocks[0][1], blocks[1][1]
    assert float(optics["rlnTomoTiltSeriesPixelSize"]) == pytest.approx(TILT_SERIES)
    assert {row["rlnOpticsGroup"] for row in particles} == {optics["rlnOpticsGroup"]}
    assert {row["rlnTomoName"] for row in particles} == {"TS_01"}
    assert "rlnTomoTiltSeriesPixelSize" not in path.read_text().split("data_optics")[0]
    written = np.array([[float(row[f"rlnCenteredCoordinate{a}Angst"]) for a in "ZYX"]
                        for row in particles])
    order = np.lexsort(picked_zyx.T[::-1])
    written = written[np.lexsort(written.T[::-1])]
    picked = picked_zyx[order]
    # RELION 5: Angstrom from the tomogram's centre (N / 2), the header origin plays no part
    np.testing.assert_allclose(written, (picked - np.array(SHAPE) / 2) * VOXEL, atol=1e-3)
    # ... so RELION puts each pick on the unbinned tilt-series pixel 4 x the binned one
    unbinned_size = np.array(SHAPE) * VOXEL / TILT_SERIES
    np.testing.assert_allclose(written / TILT_SERIES + unbinned_size / 2, picked * 4, atol=1e-3)


def test_tilt_series_pixel_size_reaches_star_files_and_the_session(
        binned, make_napari_viewer, qtbot, tmp_path):
    from napari_tomoseg._napari.averaging_widget import AveragingWidget
    from napari_tomoseg._napari.workflow_widget import TomosegWidget

    viewer, widget, image, path = binned
    assert widget.session_panel.tilt_series.value == 0.0
    picker = _pick(viewer, qtbot)  # picked while the size is still unknown
    assert len(picker.points.data) == len(CENTRES)

    widget.session_panel.tilt_series.value = TILT_SERIES
    assert image.metadata["tomoseg"]["tilt_series_pixel_size"] == TILT_SERIES
    assert Session.load(tmp_path / "session").tilt_series_pixel_size == TILT_SERIES

    # the Pick widget's export
    picker.output.value = tmp_path / "picked.star"
    picker.export()
    _check_relion(tmp_path / "picked.star", np.asarray(picker.points.data))
    # File > Save of the picks layer made before the size was typed
    picker.points.save(str(tmp_path / "saved.star"), plugin=PLUGIN)
    _check_relion(tmp_path / "saved.star", np.asarray(picker.points.data))
    # File > Save of points added by hand on the tomogram
    hand = viewer.add_points(np.array([[5.0, 9.0, 11.0], [20.0, 30.0, 50.0]]),
                             scale=image.scale, translate=image.translate)
    hand.save(str(tmp_path / "hand.star"), plugin=PLUGIN)
    _check_relion(tmp_path / "hand.star", np.asarray(hand.data))
    # the Average widget writes its STAR on this tomogram's frame
    averager = AveragingWidget(viewer)
    assert averager._frame(image).tilt_series_pixel_size == TILT_SERIES

    # reopening the session restores the field, and with it the STAR files
    viewer2 = make_napari_viewer()
    (image2,) = viewer2.open(str(path), plugin=PLUGIN)
    widget2 = TomosegWidget(viewer2)
    widget2.tomogram.value = image2
    assert widget2.session_panel.tilt_series.value == 0.0
    widget2.start_session(tmp_path / "session")
    assert widget2.session_panel.tilt_series.value == pytest.approx(TILT_SERIES)
    assert image2.metadata["tomoseg"]["tilt_series_pixel_size"] == TILT_SERIES
    again = viewer2.add_points(np.array([[5.0, 9.0, 11.0]]), scale=image2.scale,
                               translate=image2.translate)
    again.save(str(tmp_path / "again.star"), plugin=PLUGIN)
    _check_relion(tmp_path / "again.star", np.asarray(again.data))


def test_unknown_tilt_series_pixel_size_warns_and_writes_no_guess(binned, qtbot, tmp_path):
    viewer, widget, image, _ = binned
    widget.session_panel.tilt_series.value = TILT_SERIES
    widget.session_panel.tilt_series.value = 0.0  # back to unknown
    assert image.metadata["tomoseg"]["tilt_series_pixel_size"] is None
    assert Session.load(tmp_path / "session").tilt_series_pixel_size is None
    picker = _pick(viewer, qtbot)
    picker.output.value = tmp_path / "picked.star"
    with pytest.warns(CoordinateWarning, match="tilt-series pixel size is unknown"):
        picker.export()
    text = (tmp_path / "picked.star").read_text()
    assert "rlnTomoTiltSeriesPixelSize" not in text and "data_optics" not in text
    assert [name for name, _ in star_blocks(tmp_path / "picked.star")] == ["particles"]


def test_a_tilt_series_pixel_size_out_of_range_is_refused(binned):
    viewer, widget, image, _ = binned
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        widget.session_panel.tilt_series.value = 0.01  # an error notification, nothing stored
    assert not image.metadata["tomoseg"].get("tilt_series_pixel_size")
    assert widget.controller.session.tilt_series_pixel_size is None


def test_a_tilt_series_coarser_than_the_voxel_is_refused_before_the_layer_holds_it(binned):
    """With IMOD's 1 A voxel left in place, 2.7 A was kept in the layer and every later STAR
    write failed, with advice about a CLI flag."""
    from napari_tomoseg._napari.tilt_series_size import apply_tilt_series_pixel_size
    from napari_tomoseg.errors import TomosegError

    viewer, widget, image, _ = binned
    voxel = float(image.scale[-1])
    with pytest.raises(TomosegError, match="Voxel size \\(A\\)"):
        apply_tilt_series_pixel_size(image, voxel * 2.5)
    assert not image.metadata["tomoseg"].get("tilt_series_pixel_size")
    apply_tilt_series_pixel_size(image, voxel / 4)  # a binned tomogram: fine
    assert image.metadata["tomoseg"]["tilt_series_pixel_size"] == voxel / 4
