"""Particle files: STAR and CSV keep every coordinate, across origins and binnings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import starfile

from napari_tomoseg.errors import InvalidCoordinatesError
from napari_tomoseg.io.particles import (TomogramFrame, particle_table, read_csv, read_star,
                                         write_csv, write_star)

FRAME = TomogramFrame(name="TS_01", shape=(94, 864, 850), voxel_size=28.0,
                      origin=(-1316.0, 420.0, 12096.5))


def _table(n=25, seed=1):
    rng = np.random.default_rng(seed)
    zyx = rng.uniform(0, 1, (n, 3)) * np.array(FRAME.shape)
    return particle_table(zyx, score=rng.uniform(0, 1, n), rot=rng.uniform(-180, 180, n),
                          tilt=rng.uniform(0, 180, n), psi=rng.uniform(-180, 180, n))


def test_star_round_trip_keeps_coordinates_and_angles(tmp_path):
    table = _table()
    path = write_star(tmp_path / "p.star", table, FRAME)
    back = read_star(path, FRAME)
    np.testing.assert_allclose(back[["z", "y", "x"]], table[["z", "y", "x"]], atol=1e-3)
    np.testing.assert_allclose(back[["rot", "tilt", "psi", "score"]],
                               table[["rot", "tilt", "psi", "score"]], atol=1e-5)
    assert set(back["tomo_name"]) == {"TS_01"}


def test_star_has_the_relion5_columns_in_the_right_units(tmp_path):
    table = particle_table([[47.0, 432.0, 425.0], [0.0, 0.0, 0.0]])
    raw = starfile.read(write_star(tmp_path / "p.star", table, FRAME), always_dict=True)
    particles = raw["particles"]
    for label in ("rlnTomoName", "rlnCoordinateX", "rlnCenteredCoordinateXAngst",
                  "rlnCenteredCoordinateZAngst"):
        assert label in particles
    # the tomogram centre is (N/2) in pixels and 0 in centred Angstrom
    np.testing.assert_allclose(particles.loc[0, ["rlnCenteredCoordinateXAngst",
                                                 "rlnCenteredCoordinateYAngst",
                                                 "rlnCenteredCoordinateZAngst"]], 0.0, atol=1e-6)
    assert particles.loc[1, "rlnCenteredCoordinateXAngst"] == pytest.approx(-425.0 * 28.0)
    assert particles.loc[1, "rlnCoordinateZ"] == 0.0
    # the tilt-series pixel size is not the tomogram's voxel size: unknown, not written
    assert "optics" not in raw and "rlnOpticsGroup" not in particles
    bin4 = TomogramFrame("TS_01", FRAME.shape, 28.0, tilt_series_pixel_size=7.0)
    raw = starfile.read(write_star(tmp_path / "q.star", table, bin4), always_dict=True)
    assert raw["optics"]["rlnTomoTiltSeriesPixelSize"][0] == pytest.approx(7.0)
    assert list(raw["particles"]["rlnOpticsGroup"]) == [1, 1]


def test_centred_coordinates_carry_picks_to_another_binning(tmp_path):
    table = _table()
    write_star(tmp_path / "bin4.star", table, FRAME)
    unbinned = TomogramFrame(name="TS_01", shape=tuple(4 * s for s in FRAME.shape),
                             voxel_size=7.0, origin=(0.0, 0.0, 0.0))
    back = read_star(tmp_path / "bin4.star", unbinned)
    np.testing.assert_allclose(back[["z", "y", "x"]], 4 * table[["z", "y", "x"]], atol=1e-3)


def test_world_coordinates_respect_the_header_origin():
    pixel = np.array([[10.0, 20.0, 30.0]])
    world = FRAME.pixel_to_world(pixel)
    np.testing.assert_allclose(world, [[-1316.0 + 280.0, 420.0 + 560.0, 12096.5 + 840.0]])
    np.testing.assert_allclose(FRAME.world_to_pixel(world), pixel)


def test_csv_round_trip(tmp_path):
    table = _table()
    path = write_csv(tmp_path / "p.csv", table, FRAME)
    raw = pd.read_csv(path)
    assert {"x", "y", "z", "x_A", "score"} <= set(raw.columns)
    back = read_csv(path)
    np.testing.assert_allclose(back[["z", "y", "x"]], table[["z", "y", "x"]], atol=1e-3)
    np.testing.assert_allclose(back["score"], table["score"], atol=1e-6)


def test_only_one_tomograms_particles_are_read(tmp_path):
    write_star(tmp_path / "a.star", _table(5), FRAME)
    other = TomogramFrame("TS_02", FRAME.shape, FRAME.voxel_size)
    write_star(tmp_path / "b.star", _table(7, seed=2), other)
    a = starfile.read(tmp_path / "a.star", always_dict=True)
    b = starfile.read(tmp_path / "b.star", always_dict=True)
    a["particles"] = pd.concat([a["particles"], b["particles"]], ignore_index=True)
    starfile.write(a, tmp_path / "both.star")
    assert len(read_star(tmp_path / "both.star", FRAME, tomo_name="TS_02")) == 7


@pytest.mark.parametrize("content,message", [
    ("data_\nloop_\n_rlnMicrographName #1\nmic1\n", "no particle table with coordinates"),
    ("x,y\n1,2\n", "needs columns x, y and z"),
])
def test_bad_coordinate_files(tmp_path, content, message):
    path = tmp_path / ("bad.star" if content.startswith("data_") else "bad.csv")
    path.write_text(content)
    with pytest.raises(InvalidCoordinatesError, match=message):
        read_star(path) if path.suffix == ".star" else read_csv(path)


def test_centred_only_star_needs_a_tomogram(tmp_path):
    particles = pd.DataFrame({"rlnCenteredCoordinateXAngst": [1.0], "rlnCenteredCoordinateYAngst": [2.0],
                              "rlnCenteredCoordinateZAngst": [3.0]})
    starfile.write({"particles": particles}, tmp_path / "c.star")
    with pytest.raises(InvalidCoordinatesError, match="say which tomogram"):
        read_star(tmp_path / "c.star")
    back = read_star(tmp_path / "c.star", FRAME)
    np.testing.assert_allclose(back.loc[0, ["z", "y", "x"]],
                               np.array(FRAME.shape) / 2 + np.array([3.0, 2.0, 1.0]) / 28.0)


def test_eman2_json_and_other_binnings_round_trip(tmp_path):
    import json

    from napari_tomoseg.io.particles import (at_voxel_size, convert_pixels, read_eman2_json,
                                             write_eman2_json)

    table = _table()
    path = write_eman2_json(tmp_path / "TS_01_info.json", table, FRAME, box_size=32,
                            unbinned_voxel_size=7.0, feature="ribosome")
    record = json.loads(path.read_text())
    assert record["apix_unbin"] == 7.0 and record["class_list"]["0"]["name"] == "ribosome"
    # centred, unbinned pixels: the tomogram centre is (0, 0, 0)
    centre = particle_table([np.array(FRAME.shape) / 2])
    write_eman2_json(tmp_path / "c.json", centre, FRAME, 32, 7.0)
    assert json.loads((tmp_path / "c.json").read_text())["boxes_3d"][0][:3] == [0.0, 0.0, 0.0]
    # EMAN2 centres an odd-sized image on voxel N // 2, not N / 2
    odd = TomogramFrame(name="odd", shape=(95, 865, 851), voxel_size=28.0)
    write_eman2_json(tmp_path / "odd.json", particle_table([np.array(odd.shape) // 2]), odd, 32, 28.0)
    assert json.loads((tmp_path / "odd.json").read_text())["boxes_3d"][0][:3] == [0.0, 0.0, 0.0]
    back = read_eman2_json(path, FRAME)
    np.testing.assert_allclose(back[["z", "y", "x"]], table[["z", "y", "x"]], atol=1e-3)
    assert set(back["feature"]) == {"ribosome"}
    unbinned = at_voxel_size(FRAME, 7.0)
    assert unbinned.shape == (376, 3456, 3400)
    there = convert_pixels(table, FRAME, unbinned)
    np.testing.assert_allclose(convert_pixels(there, unbinned, FRAME)[["z", "y", "x"]],
                               table[["z", "y", "x"]], atol=1e-6)
    np.testing.assert_allclose(there[["z", "y", "x"]] - np.array(unbinned.shape) / 2,
                               4 * (table[["z", "y", "x"]] - np.array(FRAME.shape) / 2), atol=1e-6)


def test_tomogram_identity_from_a_file_header():
    """One rule names a tomogram and builds its frame, for the CLI and batch alike."""
    from napari_tomoseg.io.mrc import VolumeInfo
    from napari_tomoseg.tomogram import tomogram_name, volume_frame

    assert tomogram_name("/data/run 3/TS_01.rec.mrc.gz") == "TS_01.rec"
    assert tomogram_name("TS_01.mrc") == "TS_01"
    info = VolumeInfo(shape=FRAME.shape, voxel_size=(28.0, 28.0, 28.0), origin=FRAME.origin,
                      dtype="float32")
    assert volume_frame(info, "TS_01") == FRAME
    assert volume_frame(info, "TS_01", 7.0).tilt_series_pixel_size == 7.0


def test_a_csv_we_wrote_opens_where_its_particles_are(tmp_path):
    """The reader placed our CSV's pixel columns at scale 1: 12 A voxels landed 12x too near
    the origin. Its Angstrom columns place them exactly."""
    from napari_tomoseg._napari.reader import read_files
    from napari_tomoseg.io.particles import TomogramFrame, particle_table, write_csv

    frame = TomogramFrame("cell", (40, 300, 250), 12.0, (100.0, -50.0, 30.0))
    pixels = np.array([[3.0, 250.5, 17.0], [20.0, 10.0, 200.25]])
    path = write_csv(tmp_path / "picks.csv", particle_table(pixels), frame)
    data, kwargs, kind = read_files(str(path))[0]
    world = np.asarray(data) * np.asarray(kwargs["scale"]) + np.asarray(kwargs["translate"])
    assert kind == "points"
    np.testing.assert_allclose(world, frame.pixel_to_world(pixels), atol=1e-3)


def test_a_csv_used_on_a_tomogram_of_another_voxel_size_is_placed_by_its_angstrom(tmp_path):
    """Picked on a 20 A map, used on the 10 A tomogram: the pixel columns put every particle
    at half its place, silently (all still inside the larger volume)."""
    import warnings

    from napari_tomoseg.io.particle_files import read_particles
    from napari_tomoseg.io.particles import CoordinateWarning

    binned = TomogramFrame("t", (20, 50, 50), 20.0)
    full = TomogramFrame("t", (40, 100, 100), 10.0)
    path = write_csv(tmp_path / "p.csv", particle_table([[5.0, 10.0, 40.0]]), binned)
    with pytest.warns(CoordinateWarning, match="placed by its Angstrom columns"):
        table, _ = read_particles(path, full)
    np.testing.assert_allclose(table[["z", "y", "x"]].to_numpy(), [[10.0, 20.0, 80.0]])
    with warnings.catch_warnings():  # on its own tomogram: nothing to say
        warnings.simplefilter("error")
        same, _ = read_particles(path, binned)
    np.testing.assert_allclose(same[["z", "y", "x"]].to_numpy(), [[5.0, 10.0, 40.0]])
