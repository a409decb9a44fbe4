"""The plugin in a real napari viewer (under Xvfb): open, save, samples, widget."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from napari_tomoseg.io.mrc import open_volume, write_volume  # noqa: E402
from napari_tomoseg.io.particles import TomogramFrame, read_star  # noqa: E402

PLUGIN = "napari-tomoseg"
ORIGIN = (-150.0, 320.0, 1200.0)


def test_opening_a_tomogram_sets_angstrom_scale_and_origin(make_napari_viewer, tiny_files):
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tiny_files["tomogram"]), plugin=PLUGIN)
    assert layer._type_string == "image"
    np.testing.assert_allclose(layer.scale, (20.0, 20.0, 20.0))
    np.testing.assert_allclose(layer.translate, ORIGIN)
    assert isinstance(layer.data, np.memmap)
    lo, hi = layer.contrast_limits
    assert -5 < lo < 0 < hi < 5
    (labels,) = viewer.open(str(tiny_files["membrane"]), plugin=PLUGIN)
    assert labels._type_string == "labels"
    np.testing.assert_allclose(labels.translate, ORIGIN)


@pytest.mark.parametrize("dtype", [np.float16, np.int8, np.uint16])
def test_other_modes_are_displayed(make_napari_viewer, tmp_path, dtype):
    """What the canvas shows follows the data, whatever the MRC mode."""
    viewer = make_napari_viewer(show=True)
    volume = np.zeros((8, 64, 64), np.float32)
    volume[:, 16:48, 16:48] = 100.0
    path = write_volume(tmp_path / f"m_{np.dtype(dtype).name}.mrc", volume.astype(dtype), 10.0)
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert layer.data.dtype == dtype
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    h, w = shot.shape[:2]
    centre = shot[h // 2 - 5:h // 2 + 5, w // 2 - 5:w // 2 + 5].mean()
    corner = shot[5:15, 5:15].mean()
    assert centre > corner + 100


@pytest.mark.parametrize("case", ["not_mrc", "truncated", "nan"])
def test_bad_files_raise_clear_errors_and_viewer_survives(make_napari_viewer, tmp_path, case):
    viewer = make_napari_viewer()
    path = tmp_path / f"{case}.mrc"
    if case == "not_mrc":
        path.write_text("hello " * 500)
        expected = "not a valid MRC file"
    elif case == "truncated":
        raw = write_volume(tmp_path / "ok.mrc", np.ones((4, 8, 8), np.float32)).read_bytes()
        path.write_bytes(raw[:-64])
        expected = "truncated"
    else:
        data = np.ones((4, 8, 8), np.float32)
        data[2, 3, 3] = np.nan
        write_volume(path, data)
        expected = "NaN or infinite"
    with pytest.raises(Exception) as info:
        viewer.open(str(path), plugin=PLUGIN)
    chain, exc = [], info.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__
    assert any(expected in message for message in chain), chain
    assert len(viewer.layers) == 0
    viewer.add_image(np.zeros((4, 4)))  # the viewer still works
    assert len(viewer.layers) == 1


def test_points_round_trip_through_napari_with_origin(make_napari_viewer, tiny_files, tmp_path):
    viewer = make_napari_viewer()
    viewer.open(str(tiny_files["tomogram"]), plugin=PLUGIN)
    (points,) = viewer.open(str(tiny_files["particles"]), plugin=PLUGIN)
    original = read_star(tiny_files["particles"])
    np.testing.assert_allclose(points.data, original[["z", "y", "x"]], atol=1e-4)
    np.testing.assert_allclose(points.translate, ORIGIN)
    assert "rot" in points.features
    # the points sit on the ribosome labels in world space (origin respected)
    (labels,) = viewer.open(str(tiny_files["ribosome"]), plugin=PLUGIN)
    hits = [labels.data[tuple(np.round(labels.world_to_data(points.data_to_world(p))).astype(int))]
            for p in points.data]
    assert np.mean(np.asarray(hits) == 1) > 0.9
    out_star = tmp_path / "saved.star"
    out_csv = tmp_path / "saved.csv"
    points.save(str(out_star), plugin=PLUGIN)
    points.save(str(out_csv), plugin=PLUGIN)
    frame = TomogramFrame("tiny", (32, 96, 96), 20.0, ORIGIN)
    np.testing.assert_allclose(read_star(out_star, frame)[["z", "y", "x"]],
                               original[["z", "y", "x"]], atol=1e-3)
    np.testing.assert_allclose(read_star(out_star, frame)[["rot", "tilt", "psi"]],
                               original[["rot", "tilt", "psi"]], atol=1e-4)
    from napari_tomoseg.io.particles import read_csv

    np.testing.assert_allclose(read_csv(out_csv)[["z", "y", "x"]], original[["z", "y", "x"]],
                               atol=1e-3)


REFINED = """
# version 50001

data_general

_rlnTomoSubTomosAre2DStacks                       1

# version 50001

data_optics

loop_
_rlnOpticsGroup #1
_rlnOpticsGroupName #2
_rlnTomoTiltSeriesPixelSize #3
_rlnVoltage #4
_rlnSphericalAberration #5
_rlnImagePixelSize #6
1 optics1 10.0 300.0 2.7 20.0

# version 50001

data_particles

loop_
_rlnTomoName #1
_rlnTomoParticleName #2
_rlnImageName #3
_rlnCenteredCoordinateXAngst #4
_rlnCenteredCoordinateYAngst #5
_rlnCenteredCoordinateZAngst #6
_rlnAngleRot #7
_rlnAngleTilt #8
_rlnAnglePsi #9
_rlnOpticsGroup #10
tiny tiny/1 Subtomograms/tiny/1_stack2d.mrcs 100.0 -60.0 20.0 10.0 20.0 30.0 1
tiny tiny/2 Subtomograms/tiny/2_stack2d.mrcs -200.0 40.0 0.0 0.0 90.0 0.0 1
other other/1 Subtomograms/other/1_stack2d.mrcs 0.0 0.0 0.0 0.0 0.0 0.0 1
"""


def test_saving_points_over_a_richer_star_is_refused_not_a_loss(make_napari_viewer, tiny_files,
                                                                  tmp_path, monkeypatch):
    """A RELION 5 refinement's STAR opened in napari and saved back kept only our columns and
    this tomogram's particles: rlnImageName, data_general and another tomogram were gone."""
    import shutil

    viewer = make_napari_viewer()
    shutil.copy(tiny_files["tomogram"], tmp_path / "tiny.mrc")
    refined = tmp_path / "refined.star"
    refined.write_text(REFINED)
    viewer.open(str(tmp_path / "tiny.mrc"), plugin=PLUGIN)
    with pytest.warns(Warning, match="other tomogram"):
        (points,) = viewer.open(str(refined), plugin=PLUGIN)
    assert len(points.data) == 2
    from napari_tomoseg._napari import writer

    shown = []
    monkeypatch.setattr(writer, "show_error", shown.append)
    with pytest.warns(UserWarning, match="not a valid writer"):  # napari's words for a refusal
        assert points.save(str(refined), plugin=PLUGIN) == []
    (text,) = shown
    assert "not replaced" in text and "data_general" in text and "rlnImageName" in text
    assert "rlnVoltage" in text and "other tomogram" in text
    assert refined.read_text() == REFINED
    points.save(str(tmp_path / "mine.star"), plugin=PLUGIN)  # under another name: written
    mine = read_star(tmp_path / "mine.star")
    np.testing.assert_allclose(mine[["rot", "tilt", "psi"]].to_numpy(),
                               [[10.0, 20.0, 30.0], [0.0, 90.0, 0.0]], atol=1e-4)
    (again,) = viewer.open(str(tmp_path / "mine.star"), plugin=PLUGIN)
    again.save(str(tmp_path / "mine.star"), plugin=PLUGIN)  # our own file saves back in place
    np.testing.assert_allclose(read_star(tmp_path / "mine.star")[["z", "y", "x"]],
                               mine[["z", "y", "x"]], atol=1e-3)


def test_saving_a_picks_layer_leaves_out_rejected_and_cut_picks(make_napari_viewer, tiny_files,
                                                                 tmp_path):
    """File > Save Selected Layers wrote every pick, rejected ones too (a trial); the Pick
    tab's Export wrote the kept ones. Both write the kept ones now."""
    viewer = make_napari_viewer()
    viewer.open(str(tiny_files["tomogram"]), plugin=PLUGIN)
    (points,) = viewer.open(str(tiny_files["particles"]), plugin=PLUGIN)
    n = len(points.data)
    status = np.zeros(n, int)
    status[0] = -1  # rejected
    points.features = points.features.assign(status=status)
    shown = np.ones(n, bool)
    shown[1] = False  # below the score cut
    points.shown = shown
    out = tmp_path / "kept.star"
    points.save(str(out), plugin=PLUGIN)
    saved = read_star(out, TomogramFrame("tiny", (32, 96, 96), 20.0, ORIGIN))
    assert len(saved) == n - 2
    np.testing.assert_allclose(saved[["z", "y", "x"]].to_numpy(), points.data[2:], atol=1e-3)


def test_points_added_by_hand_are_saved_in_tomogram_pixels(make_napari_viewer, tiny_files,
                                                          tmp_path, monkeypatch):
    """A layer saves from its own metadata, never from what else the viewer holds."""
    from napari_tomoseg.errors import InvalidCoordinatesError

    viewer = make_napari_viewer()
    (image,) = viewer.open(str(tiny_files["tomogram"]), plugin=PLUGIN)
    world = np.array([[ORIGIN[0] + 20.0 * 10, ORIGIN[1] + 20.0 * 40.5, ORIGIN[2] + 20.0 * 60]])
    points = viewer.add_points(world, metadata=dict(image.metadata))  # data in world Angstrom
    points.save(str(tmp_path / "hand.star"), plugin=PLUGIN)
    back = read_star(tmp_path / "hand.star", TomogramFrame("tiny", (32, 96, 96), 20.0, ORIGIN))
    np.testing.assert_allclose(back[["z", "y", "x"]].to_numpy(), [[10.0, 40.5, 60.0]], atol=1e-3)
    plain = viewer.add_points(world)  # says nothing of its tomogram: refused, not guessed
    from napari_tomoseg._napari import writer

    shown = []
    monkeypatch.setattr(writer, "show_error", shown.append)
    with pytest.raises(InvalidCoordinatesError, match="which tomogram"):
        writer.write_points_star(str(tmp_path / "plain.star"), plain.data,
                                 {"scale": plain.scale, "translate": plain.translate,
                                  "metadata": plain.metadata})
    assert not (tmp_path / "plain.star").exists()
    # napari reports a writer's ValueError only as "not a valid writer": ours is shown first
    assert len(shown) == 1 and "Not saved: cannot tell which tomogram" in shown[0]


def test_a_star_file_is_placed_the_same_whatever_the_viewer_holds(make_napari_viewer,
                                                                  tiny_files, tmp_path):
    """Placement comes from the tomogram the file names (beside it), not the open layers."""
    from napari_tomoseg.errors import InvalidCoordinatesError
    from napari_tomoseg.io.mrc import write_volume

    viewer = make_napari_viewer()
    write_volume(tmp_path / "decoy.mrc", np.zeros((8, 8, 8), np.float32), 5.0, (0.0, 0.0, 0.0))
    viewer.open(str(tmp_path / "decoy.mrc"), plugin=PLUGIN)  # another tomogram, opened last
    (points,) = viewer.open(str(tiny_files["particles"]), plugin=PLUGIN)
    original = read_star(tiny_files["particles"], TomogramFrame("tiny", (32, 96, 96), 20.0, ORIGIN))
    np.testing.assert_allclose(points.data, original[["z", "y", "x"]], atol=1e-4)
    np.testing.assert_allclose(points.scale, (20.0,) * 3)
    alone = tmp_path / "alone"
    alone.mkdir()
    import starfile

    blocks = starfile.read(tiny_files["particles"], always_dict=True)
    blocks["particles"] = blocks["particles"].drop(columns=[f"rlnCoordinate{a}" for a in "XYZ"])
    starfile.write(blocks, alone / "picks.star")  # RELION's centred coordinates only, and
    # its tomogram is elsewhere
    with pytest.raises(InvalidCoordinatesError, match="not beside the file"):
        from napari_tomoseg._napari.reader import read_files

        read_files(str(alone / "picks.star"))


def test_labels_and_images_save_with_voxel_size_and_origin(make_napari_viewer, tiny_files,
                                                           tmp_path):
    viewer = make_napari_viewer()
    (labels,) = viewer.open(str(tiny_files["membrane"]), plugin=PLUGIN)
    labels.data[0, 0, 0] = 2  # an edit
    labels.save(str(tmp_path / "edited.mrc"), plugin=PLUGIN)
    data, info = open_volume(tmp_path / "edited.mrc")
    assert data[0, 0, 0] == 2 and info.origin == ORIGIN and info.voxel_size == (20.0,) * 3
    (again,) = viewer.open(str(tmp_path / "edited.mrc"), plugin=PLUGIN)  # no hint in the name
    assert again._type_string == "labels"
    image = viewer.add_image(np.ones((3, 4, 5), np.float32), scale=(7, 7, 7), translate=(1, 2, 3))
    image.save(str(tmp_path / "img.mrc"), plugin=PLUGIN)
    assert open_volume(tmp_path / "img.mrc")[1].origin == (1.0, 2.0, 3.0)


def test_sample_data_contributions(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_cell")
    names = [layer.name for layer in viewer.layers]
    assert names[0] == "synthetic_cell"
    assert "truth: membrane" in names and "truth: ribosome centres" in names
    truth = viewer.layers["truth: ribosome centres"]
    labels = viewer.layers["truth: ribosome"]
    hits = [labels.data[tuple(np.round(labels.world_to_data(truth.data_to_world(p))).astype(int))]
            for p in truth.data]
    assert np.mean(np.asarray(hits) == 1) > 0.9
    viewer.open_sample(PLUGIN, "mpneumoniae")
    cell = viewer.layers["M. pneumoniae (EMPIAR-10499)"]
    np.testing.assert_allclose(cell.scale, (20.0, 20.0, 20.0))


def test_synthetic_widget_makes_and_shows_a_cell(make_napari_viewer, qtbot, tmp_path,
                                                 monkeypatch):
    from napari_tomoseg._napari.synthetic_widget import SIZES, SyntheticCellWidget

    monkeypatch.setitem(SIZES, "test (24 x 48 x 48)", (24, 48, 48))  # undone after the test
    viewer = make_napari_viewer()
    widget = SyntheticCellWidget(viewer)
    widget.size.choices = list(SIZES)
    widget.size.value = "test (24 x 48 x 48)"
    widget.voxel.value = 20.0
    widget.folder.value = tmp_path
    widget.button.clicked.emit()  # same as a click
    assert widget.worker is not None and not widget.button.enabled
    with qtbot.waitSignal(widget.worker.finished, timeout=120_000):
        pass
    qtbot.waitUntil(lambda: len(viewer.layers) >= 7, timeout=10_000)
    assert viewer.layers[0].data.shape == (24, 48, 48)
    assert (tmp_path / "synthetic_seed0.mrc").exists()
    assert widget.button.enabled and widget.progress.value == widget.progress.max
    assert "ribosomes" in widget.status.value  # how many, or that there are none
    # the same seed into the same folder asks first; No keeps the cell and starts nothing
    from qtpy.QtWidgets import QMessageBox

    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.No)
    before = (tmp_path / "synthetic_seed0.mrc").stat().st_mtime_ns
    widget.handle = None
    widget.button.clicked.emit()
    assert widget.handle is None and "kept" in widget.status.value
    assert (tmp_path / "synthetic_seed0.mrc").stat().st_mtime_ns == before


def test_launch_docks_the_widget_and_opens_the_sample(make_napari_viewer, monkeypatch):
    from napari_tomoseg._napari import launch as launch_module

    created = []
    monkeypatch.setattr(launch_module.napari, "Viewer",
                        lambda **kw: created.append(make_napari_viewer()) or created[-1])
    viewer = launch_module.launch(sample="synthetic", run=False)
    assert "synthetic_cell" in [layer.name for layer in viewer.layers]
    assert any("Synthetic cell" in name for name in viewer.window.dock_widgets)


def test_a_text_status_column_does_not_stop_a_save(make_napari_viewer, tiny_files, tmp_path):
    """'good'/'bad' from an imported table is not a judgement of ours: every point is kept."""
    viewer = make_napari_viewer()
    viewer.open(str(tiny_files["tomogram"]), plugin=PLUGIN)
    (points,) = viewer.open(str(tiny_files["particles"]), plugin=PLUGIN)
    points.features = points.features.assign(status=["good"] * len(points.data))
    points.save(str(tmp_path / "all.star"), plugin=PLUGIN)
    assert len(read_star(tmp_path / "all.star",
                         TomogramFrame("tiny", (32, 96, 96), 20.0, ORIGIN))) == len(points.data)


def test_a_0_255_map_of_segment_opens_as_probabilities(make_napari_viewer, tmp_path):
    """segment --dtype uint8 stores round(p * 255): opened, it was shown saturated against 0-1
    limits, and one holding only 0s and 1s was a mask of probability 1 to Pick."""
    from napari_tomoseg.io.mrc import write_volume
    from napari_tomoseg.io.probability_header import threshold_label

    stored = np.zeros((8, 32, 32), np.uint16)
    stored[4, 10:20, 10:20] = 204  # 0.8
    stored[2] = 1  # a trace
    path = write_volume(tmp_path / "t_ribosome.mrc", stored, 10.0,
                        labels=(threshold_label("ribosome", 0.5),))
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(path), plugin=PLUGIN)
    assert layer.data.dtype == np.float16
    np.testing.assert_allclose(np.asarray(layer.data)[4, 15, 15], 0.8, atol=1e-3)
    assert float(np.asarray(layer.data)[2].max()) < 0.01
