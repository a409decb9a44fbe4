"""Exploration views: slabs, display filters, pyramids, surfaces, numbers (real viewer)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tomoseg.errors import TomosegError

from napari_tomoseg.errors import InvalidSettingsError
from napari_tomoseg.explore import (DisplaySettings, feature_numbers, multiscale_pyramid,
                                    particle_density, slab, surface_from_volume)
from napari_tomoseg.explore.view import SlabView


def _sphere(shape=(48, 48, 48), radius=12.0):
    z, y, x = np.indices(shape)
    centre = np.array(shape) / 2
    return (((z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2) <= radius ** 2)


def test_slab_is_the_mean_of_the_right_planes_on_every_axis():
    volume = np.random.default_rng(0).normal(size=(20, 30, 40)).astype(np.float32)
    np.testing.assert_allclose(slab(volume, 0, 10, 5), volume[8:13].mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(slab(volume, 1, 0, 5), volume[:, 0:3].mean(axis=1), rtol=1e-5, atol=1e-6)  # edge
    np.testing.assert_allclose(slab(volume, 2, 7, 4, "sum"), volume[:, :, 6:10].sum(axis=2), rtol=1e-5, atol=1e-6)
    view = SlabView(volume, 10.0, DisplaySettings(thickness=3))
    np.testing.assert_allclose(view[:, 5, :], volume[:, 4:7].mean(axis=1), rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidSettingsError):
        slab(volume, 0, 25, 3)
    with pytest.raises(InvalidSettingsError):
        DisplaySettings(lowpass_nm=5, highpass_nm=2)


def test_sphere_surface_has_the_right_radius_and_area():
    voxel = 10.0
    surface = surface_from_volume(_sphere().astype(np.float32), 0.5, voxel, origin=(100.0, 0.0, -50.0))
    centre = np.array([24, 24, 24]) * voxel + np.array([100.0, 0.0, -50.0])
    radii = np.linalg.norm(surface.vertices - centre, axis=1) / voxel
    assert abs(radii.mean() - 12.0) < 0.3 and radii.std() < 0.5
    assert abs(surface.area_nm2 / (4 * np.pi * (12 * voxel / 10) ** 2) - 1) < 0.15
    with pytest.raises(InvalidSettingsError):
        surface_from_volume(np.zeros((8, 8, 8), np.float32), 0.5, voxel)


def test_a_large_volume_gets_a_mesh_step_that_keeps_its_surface_small():
    from napari_tomoseg.explore.surfaces import default_mesh_step

    assert default_mesh_step((96, 256, 256)) == 1  # 6 M voxels: every voxel
    assert default_mesh_step((256, 1024, 1024)) == 3  # 268 M: 3 keeps 10 M, 2 would 34 M
    assert default_mesh_step((64, 64, 64), budget=64 ** 3 // 8) == 2
    assert default_mesh_step((2000, 4000, 4000)) == 8  # the spin box's limit
    # the surface at that step still lies where the full one does
    coarse = surface_from_volume(_sphere().astype(np.float32), 0.5, 10.0, step=2)
    radii = np.linalg.norm(coarse.vertices - np.array([240.0, 240.0, 240.0]), axis=1) / 10.0
    assert abs(radii.mean() - 12.0) < 0.5


def test_numbers_count_components_and_density():
    mask = _sphere() | np.roll(_sphere(radius=3), 20, axis=2)
    numbers = feature_numbers(mask, 10.0)
    assert numbers["components"] == 2
    assert numbers["fraction"] == pytest.approx(mask.mean())
    # 48^3 voxels of 1 nm^3 = 1.1e-4 um^3
    assert particle_density(11, (48, 48, 48), 10.0) == pytest.approx(11 / (48 ** 3 * 1e-9))


def test_pyramid_opens_a_large_memory_mapped_file_without_reading_it(tmp_path):
    import resource

    from napari_tomoseg.io.mrc import open_volume, write_volume

    path = tmp_path / "large.mrc"
    write_volume(path, np.zeros((2, 16, 16), np.float32), 10.0)  # header, then grow sparsely
    import mrcfile
    with mrcfile.new_mmap(path, shape=(64, 2048, 2048), mrc_mode=12, overwrite=True) as mrc:
        mrc.voxel_size = 10.0
    data, _ = open_volume(path, check_finite=False)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    levels = multiscale_pyramid(data)
    assert [lvl.shape for lvl in levels] == [(64, 2048, 2048), (64, 1024, 1024), (64, 512, 512)]
    plane = np.asarray(levels[-1][32])
    assert plane.shape == (512, 512)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200  # the file is 512 MB


napari = pytest.importorskip("napari")


def test_explore_widget_shows_filtered_slabs_without_touching_the_data(make_napari_viewer, qtbot):
    from napari_tomoseg._napari.explore_widget import ExploreWidget

    viewer = make_napari_viewer()
    volume = np.random.default_rng(1).normal(size=(24, 64, 64)).astype(np.float32)
    original = volume.copy()
    tomogram = viewer.add_image(volume, name="tomo", scale=(10.0,) * 3, translate=(5.0, 0.0, 0.0))
    widget = ExploreWidget(viewer)
    widget.tomogram.value = tomogram
    widget.thickness.value = 5
    layer = widget.show_slab()
    viewer.dims.set_point(0, 5.0 + 10 * 12)  # world z of slice 12
    shown = np.asarray(layer._slice.image.raw)
    np.testing.assert_allclose(shown, volume[10:15].mean(axis=0), rtol=1e-5, atol=1e-6)
    widget.lowpass.value = 2.0
    widget.invert.value = True
    shown = np.asarray(layer._slice.image.raw)
    assert not np.allclose(shown, volume[10:15].mean(axis=0))
    assert shown.std() < volume[10:15].mean(axis=0).std()  # low-passed
    np.testing.assert_array_equal(tomogram.data, original)  # the data is untouched
    assert tomogram.data is volume

    labels = viewer.add_labels(_sphere((24, 64, 64), 8).astype(np.uint8), name="seg: ribosome",
                               scale=(10.0,) * 3)
    widget.segmentation.value = labels
    handle = widget.add_surface()  # whole-volume work runs in a thread
    assert not widget.surface_button.enabled
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    assert len(widget.surface_layer.data[1]) > 100 and widget.surface_button.enabled
    handle = widget.show_numbers()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    assert "1 components" in widget.numbers.value


def test_numbers_of_a_map_use_its_threshold_its_own_picks_and_refuse_a_part(
        make_napari_viewer, qtbot):
    """Explore counted at 0.5 (a calibrated 0.8 map's fringe), listed every points layer
    (another tomogram's too) and measured a stopped segmentation as the whole tomogram."""
    from napari_tomoseg._napari.explore_widget import ExploreWidget
    from napari_tomoseg._napari.layer_tags import INCOMPLETE, tag

    viewer = make_napari_viewer()
    ball = _sphere((24, 64, 64), 8).astype(np.float32)
    prob = np.where(ball > 0, 0.9, 0.0).astype(np.float32)
    prob[2:6, 2:6, 2:6] = 0.6  # a fringe blob that only a threshold of 0.5 counts
    layer = viewer.add_image(prob, name="prediction: ribosome", scale=(10.0,) * 3,
                             metadata={"threshold": 0.8})
    tag(layer, "probability", feature="ribosome")
    viewer.add_points([[12.0, 32.0, 32.0]], name="picks here", scale=(10.0,) * 3)
    viewer.add_points([[500.0, 32.0, 32.0]], name="picks elsewhere", scale=(10.0,) * 3)
    viewer.add_points([[3.0, 4.0]], name="2D points")  # no tomogram's picks: left out
    widget = ExploreWidget(viewer)
    widget.segmentation.value = layer
    assert widget.threshold.value == pytest.approx(0.8)
    handle = widget.show_numbers()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    assert "1 components" in widget.numbers.value
    assert "picks here" in widget.numbers.value and "elsewhere" not in widget.numbers.value
    layer.metadata[INCOMPLETE] = "holds a segmentation stopped part way"
    with pytest.raises(TomosegError, match="stopped part way"):
        widget.show_numbers()


def test_snapshot_and_turntable_movie(make_napari_viewer, tmp_path):
    import imageio.v3 as iio

    from napari_tomoseg._napari.explore_widget import ExploreWidget

    viewer = make_napari_viewer(show=True)  # a hidden canvas renders black under Xvfb
    bar = np.zeros((24, 32, 32), np.float32)
    bar[10:14, 14:18, 2:30] = 1.0  # not round: it must look different as it turns
    viewer.add_image(bar, name="bar")
    widget = ExploreWidget(viewer)
    widget.output.value = tmp_path
    png = widget.snapshot()
    assert png.name == "snapshot_001.png" and widget.snapshot().name == "snapshot_002.png"
    widget.movie_frames.value = 4
    gif = widget.turntable()
    frames = iio.imread(gif, index=None)
    assert frames.shape[0] == 4 and frames.shape[-1] == 3
    assert not np.array_equal(frames[0], frames[1])  # the view turned
    assert viewer.dims.ndisplay == 2  # the view is given back


def test_a_failed_snapshot_or_turntable_write_leaves_no_half_file(make_napari_viewer, tmp_path,
                                                                 monkeypatch):
    """A disk that fills up mid-write: the error reaches the user, no file is left behind."""
    import imageio.v3 as iio

    from napari_tomoseg._napari.explore_widget import ExploreWidget

    def half_then_full(uri, *args, **kwargs):
        with open(uri, "wb") as handle:
            handle.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((8, 16, 16), np.float32), name="v")
    widget = ExploreWidget(viewer)
    widget.output.value = tmp_path / "pictures"
    monkeypatch.setattr(iio, "imwrite", half_then_full)
    widget.movie_frames.value = 4
    for make in (widget.snapshot, widget.turntable):
        with pytest.raises(OSError, match="No space"):
            make()
    assert list((tmp_path / "pictures").iterdir()) == []


def test_gallery_lists_every_box_sorted_by_disagreement_and_jumps(make_napari_viewer, tmp_path):
    from napari_tomoseg._napari.gallery_widget import GalleryWidget
    from napari_tomoseg.session import Session

    viewer = make_napari_viewer()
    volume = np.random.default_rng(2).normal(size=(20, 128, 128)).astype(np.float32)
    session = Session.create(tmp_path / "s.tomoseg", None, 10.0, volume.shape, ("ribosome",))
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 1
    good = session.add_box("ribosome", 5, 40.0, 40.0, True, size=32, mask=mask)
    wrong = session.add_box("ribosome", 12, 90.0, 90.0, True, size=32, mask=mask)
    negative = session.add_box("ribosome", 15, 40.0, 90.0, False, size=32)
    # a "network" that agrees with the first box and the negative, not with the second
    probability = np.zeros(volume.shape, np.float32)
    probability[5, 32:48, 32:48] = 1.0
    layer = viewer.add_image(volume, name="tomo", scale=(10.0,) * 3, translate=(0.0, 50.0, 0.0))
    from napari_tomoseg._napari.layer_tags import INCOMPLETE, tag, tomogram_key

    prediction = viewer.add_image(probability, name="renamed by the user", scale=(10.0,) * 3)
    tag(prediction, "probability", feature="ribosome", tomogram=tomogram_key(layer))
    # a same-shape twin's map (all feature) and a stopped segmentation of this tomogram,
    # both above ours: neither may decide the order
    twin = viewer.add_image(volume.copy(), name="twin", scale=(10.0,) * 3)
    tag(viewer.add_image(np.ones_like(probability), name="twin map"), "probability",
        feature="ribosome", tomogram=tomogram_key(twin))
    stopped = viewer.add_image(np.ones_like(probability), name="stopped")
    tag(stopped, "probability", feature="ribosome", tomogram=tomogram_key(layer))
    stopped.metadata[INCOMPLETE] = "holds a segmentation stopped part way"
    widget = GalleryWidget(viewer)
    assert prediction not in widget.tomogram.choices
    widget.tomogram.value = layer
    widget.folder.value = tmp_path / "s.tomoseg"
    items = widget.refresh()
    assert {i.box.id for i in items} == {good.id, wrong.id, negative.id}
    assert items[0].box.id == wrong.id and items[-1].disagreement == pytest.approx(0.0)
    assert len(widget.buttons) == 3
    assert items[[i.box.id for i in items].index(good.id)].outline.sum() > 0
    widget.buttons[0].click()  # the most doubtful box: slice 12
    assert viewer.dims.point[0] == pytest.approx(120.0)
    assert tuple(viewer.camera.center[1:]) == pytest.approx((90.0 * 10 + 50.0, 900.0))
    # a map opened from a file names no tomogram: it still sorts the boxes
    viewer.layers.remove(prediction)
    viewer.layers.remove(stopped)
    opened = viewer.add_image(probability, name="ribosome.mrc", scale=(10.0,) * 3)
    tag(opened, "probability", feature="ribosome")
    items = widget.refresh()
    assert items[0].box.id == wrong.id and items[-1].disagreement == pytest.approx(0.0)


def test_side_views_follow_the_cursor_and_ruler_measures_nm(make_napari_viewer):
    from napari_tomoseg._napari.explore_widget import ExploreWidget

    viewer = make_napari_viewer()
    volume = np.random.default_rng(3).normal(size=(16, 40, 48)).astype(np.float32)
    layer = viewer.add_image(volume, name="tomo", scale=(20.0,) * 3)
    widget = ExploreWidget(viewer)
    widget.tomogram.value = layer
    widget.thickness.value = 3
    views = widget.show_ortho_views()
    viewer.cursor.position = (5 * 20.0, 30 * 20.0, 7 * 20.0)
    assert views.position == (5, 30, 7)
    xz, _ = views.cache.get(1, 30, views.settings)
    np.testing.assert_allclose(xz, volume[:, 29:32].mean(axis=1), rtol=1e-5, atol=1e-6)
    assert views.xz.pixmap() is not None and not views.xz.pixmap().isNull()
    ruler = widget.add_ruler()
    ruler.add_lines(np.array([[3.0, 0.0, 0.0], [3.0, 30.0, 40.0]]))  # data coordinates (voxels)
    assert widget.ruler_lengths_nm()[0] == pytest.approx(50 * (ruler.scale[-1] / 10.0))
    assert "nm" in widget.numbers.value


def test_surface_of_a_tagged_map_takes_its_colour_and_errors_show_in_one_line(
        make_napari_viewer, qtbot, monkeypatch):
    from napari_tomoseg._napari import notify
    from napari_tomoseg._napari.explore_widget import ExploreWidget
    from napari_tomoseg._napari.layer_tags import tag
    from napari_tomoseg.features import FEATURE_COLOURS

    shown = []
    monkeypatch.setattr(notify, "show_error", shown.append)
    viewer = make_napari_viewer()
    layer = viewer.add_image(_sphere((24, 48, 48), 8).astype(np.float32) * 0.8, name="map",
                             scale=(10.0,) * 3)
    tag(layer, "probability", feature="membrane")
    widget = ExploreWidget(viewer)
    widget.segmentation.value = layer
    handle = widget.add_surface()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    colour = FEATURE_COLOURS["membrane"]
    rgb = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    np.testing.assert_allclose(widget.surface_layer.colormap.colors[0][:3], rgb, atol=1e-6)
    widget.threshold.value = 0.9  # above every voxel: no surface
    handle = widget.add_surface()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=30_000)
    assert shown == [widget.numbers.value] and "internal error" not in shown[0]
    assert widget.surface_button.enabled
