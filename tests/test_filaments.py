"""Filaments traced through patchy maps: whole tubes, RELION's helical columns, bad input."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import starfile

from napari_tomoseg.cli import main
from napari_tomoseg.errors import InvalidSettingsError
from napari_tomoseg.filaments import FilamentSettings, axis_angles, trace_filaments
from napari_tomoseg.io.mrc import write_volume
from napari_tomoseg.io.probability_header import threshold_label
from napari_tomoseg.metrics import dice

from .test_relion_conventions import relion_euler_matrix, relion_tomogram_pixel

SHAPE = (40, 96, 96)
VOXEL = 10.0
DIAMETER = 100.0  # A: a radius of 5 voxels
START = np.array([20.0, 20.0, 12.0])  # z y x
DIRECTION = np.array([0.15, 0.45, 0.88]) / np.linalg.norm([0.15, 0.45, 0.88])
LENGTH = 80.0  # voxels


def _along_and_across(start=START, direction=DIRECTION):
    grid = np.indices(SHAPE).astype(float)
    offset = grid - start[:, None, None, None]
    along = np.tensordot(direction, offset, axes=1)
    across = np.sqrt(np.maximum((offset ** 2).sum(0) - along ** 2, 0))
    return along, across


def _patchy_map(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(map, the whole tube, the distractors): the tube's map has gaps (more than half of
    every 25 voxels), as the missing wedge leaves a filament across the tilt axis; balls
    of its width and a sheet are as strong."""
    along, across = _along_and_across()
    tube = (along >= 0) & (along <= LENGTH) & (across <= DIAMETER / 2 / VOXEL)
    seen = tube & ((along % 25) < 12)
    zz, yy, xx = np.indices(SHAPE)
    others = np.zeros(SHAPE, bool)
    for c in [(20, 75, 20), (12, 80, 70), (28, 72, 40)]:
        others |= (zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 36
    others |= (zz >= 3) & (zz <= 5) & (yy < 50) & (xx > 50)
    others &= ~tube
    rng = np.random.default_rng(seed)
    prob = 0.15 * rng.random(SHAPE, dtype=np.float32)
    prob[seen | others] = 0.9
    return prob, tube, others


def test_a_patchy_tube_is_traced_whole_and_balls_and_sheets_are_not():
    prob, tube, others = _patchy_map()
    assert dice(prob > 0.5, tube) < 0.65  # what a threshold keeps of it
    found = trace_filaments(prob, VOXEL, FilamentSettings(diameter=DIAMETER))
    assert len(found.paths) == 1
    assert dice(found.tubes > 0, tube) > 0.75
    assert not (found.tubes > 0)[others].any()
    (length,) = found.lengths(VOXEL)
    assert 0.7 * LENGTH < length / VOXEL < 1.1 * LENGTH  # its last stretch is the shortest
    along, across = _along_and_across()
    path = np.round(found.paths[0]).astype(int)
    assert np.median(across[tuple(path.T)]) < 1.5  # on the axis, through the gaps
    assert across[tuple(path.T)].max() < 4.0


def test_two_crossing_filaments_give_one_whole_line_and_the_other_in_two():
    along_a, across_a = _along_and_across()
    other = np.array([0.0, -0.9, 0.44]) / np.linalg.norm([0.0, -0.9, 0.44])
    along_b, across_b = _along_and_across(np.array([20.0, 75.0, 20.0]), other)
    radius = DIAMETER / 2 / VOXEL
    tubes = [(a >= 0) & (a <= LENGTH) & (r <= radius)
             for a, r in ((along_a, across_a), (along_b, across_b))]
    prob = np.where(tubes[0] | tubes[1], 0.9, 0.05).astype(np.float32)
    found = trace_filaments(prob, VOXEL, FilamentSettings(diameter=DIAMETER, min_length=150))
    assert 2 <= len(found.paths) <= 3
    assert dice(found.tubes > 0, tubes[0] | tubes[1]) > 0.8
    assert max(found.lengths(VOXEL)) > 0.8 * LENGTH * VOXEL


def test_priors_put_a_relion_reference_z_axis_along_the_filament():
    """RELION's helical references run along z; A (euler.cpp) takes a reference point u
    to pos + A u, so A's third column must be the filament's direction."""
    rng = np.random.default_rng(3)
    directions = rng.normal(size=(20, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    for d, (rot, tilt, psi) in zip(directions, axis_angles(directions)):
        assert rot == 0
        assert np.allclose(relion_euler_matrix(rot, tilt, psi)[:, 2], d, atol=1e-6)


def _map_file(tmp_path, prob):
    return write_volume(tmp_path / "TS_01_microtubule.mrc", prob, VOXEL, overwrite=True,
                        labels=(threshold_label("microtubule", 0.5),))


def test_trace_writes_relion_helical_points_and_numbered_tubes(tmp_path, capsys):
    prob, tube, _ = _patchy_map()
    path = _map_file(tmp_path, prob)
    star, tubes = tmp_path / "filaments.star", tmp_path / "tubes.mrc"
    assert main(["trace", str(path), str(star), "--tubes", str(tubes), "--diameter",
                 str(DIAMETER), "--tilt-series-pixel-size", "5"]) == 0
    assert "1 microtubule filaments" in capsys.readouterr().out
    table = starfile.read(star, always_dict=True)["particles"]
    assert set(table["rlnHelicalTubeID"]) == {1}
    assert (table["rlnTomoName"] == "TS_01").all()
    track = table["rlnHelicalTrackLengthAngst"].to_numpy()
    assert np.allclose(np.diff(track), DIAMETER / 2, atol=0.5)  # every radius, in order
    alignment = []
    for _, row in table.iterrows():  # RELION's own pixel, then back to this binned map
        pixel = relion_tomogram_pixel([row[f"rlnCenteredCoordinate{a}Angst"] for a in "XYZ"],
                                      [0, 0, 0], [0, 0, 0], 5.0,
                                      [2 * n for n in SHAPE[::-1]])
        zyx = (pixel / 2)[::-1]
        offset = zyx - START
        assert np.linalg.norm(offset - (offset @ DIRECTION) * DIRECTION) < 4.0  # radius 5
        axis = relion_euler_matrix(0, row["rlnAngleTiltPrior"], row["rlnAnglePsiPrior"])[:, 2]
        alignment.append(abs(axis @ DIRECTION[::-1]))  # x y z; no known polarity
    assert np.median(alignment) > 0.98 and min(alignment) > 0.9  # its ends bend a little
    with mrcfile.open(tubes) as mrc:
        assert float(mrc.voxel_size.x) == VOXEL
        labels = np.asarray(mrc.data)
    assert set(np.unique(labels)) == {0, 1}
    assert dice(labels > 0, tube) > 0.75


def test_trace_refuses_bad_input_before_any_work(tmp_path, capsys):
    prob, _, _ = _patchy_map()
    path = _map_file(tmp_path, prob)
    assert main(["trace", str(path)]) == 2  # nothing to write
    assert "give a points file" in capsys.readouterr().err
    assert main(["trace", str(path), str(tmp_path / "p.star"), "--diameter", "15"]) == 2
    assert "too thin" in capsys.readouterr().err
    taken = tmp_path / "taken.csv"
    taken.write_text("keep me\n")
    assert main(["trace", str(path), str(taken)]) == 2
    assert taken.read_text() == "keep me\n"
    assert main(["trace", str(path), str(tmp_path / "p.star"), "--feature", "ribosome"]) == 2
    assert "not 'ribosome'" in capsys.readouterr().err  # another feature's map
    assert main(["trace", str(path), str(tmp_path / "p.star"), "--tubes", str(path),
                 "--overwrite"]) == 2  # never onto its own map
    with mrcfile.open(path) as mrc:
        assert np.array_equal(mrc.data, prob)
    # a one-slice map (a 2D prediction or an image) gave "0 filaments", read as "none here"
    flat = tmp_path / "slice.mrc"
    write_volume(flat, prob[prob.shape[0] // 2:][:1], 10.0)
    for command in (["trace", str(flat), str(tmp_path / "f.star")],
                    ["pick", str(flat), str(tmp_path / "f.star")]):
        assert main(command) == 2
        assert "needs a 3D probability map" in capsys.readouterr().err
        assert not (tmp_path / "f.star").exists()


@pytest.mark.parametrize("bad", [{"diameter": 0}, {"threshold": 1.0}, {"stretch": -1},
                                 {"contrast": float("nan")}, {"min_length": 0},
                                 {"directions": 2}])
def test_bad_filament_settings_are_refused(bad):
    with pytest.raises(InvalidSettingsError):
        FilamentSettings(**bad)


def test_a_0_255_map_traces_as_its_probabilities_and_a_tomogram_is_refused():
    from napari_tomoseg.errors import InvalidVolumeError
    from napari_tomoseg.io.particles import TomogramFrame
    from napari_tomoseg.jobs import run_job
    from napari_tomoseg.jobs.filaments import trace_job

    prob, tube, others = _patchy_map()
    prob[others] = 0.05  # the tube alone: a ball of its width is a borderline case (docs)
    frame = TomogramFrame("t", SHAPE, VOXEL)
    settings = FilamentSettings(diameter=DIAMETER)
    as_float = run_job(trace_job(prob, frame, settings, "microtubule"))
    as_bytes = run_job(trace_job(np.round(prob * 255).astype(np.uint8), frame, settings,
                                 "microtubule"))
    assert len(as_bytes.paths) == len(as_float.paths) == 1
    assert dice(as_bytes.tubes > 0, tube) > 0.75 and dice(as_float.tubes > 0, tube) > 0.75
    assert dice(as_bytes.tubes > 0, as_float.tubes > 0) > 0.9  # a skeleton's end moves a little
    with pytest.raises(InvalidVolumeError, match="not probabilities"):
        run_job(trace_job(prob * 40 - 20, frame, settings, "microtubule"))


def test_a_tomogram_normalised_to_minus_one_one_is_not_traced():
    from napari_tomoseg.errors import InvalidVolumeError
    from napari_tomoseg.io.particles import TomogramFrame
    from napari_tomoseg.jobs import run_job
    from napari_tomoseg.jobs.filaments import trace_job

    prob, _, _ = _patchy_map()
    with pytest.raises(InvalidVolumeError, match="not probabilities"):
        run_job(trace_job(prob * 2 - 1, TomogramFrame("t", SHAPE, VOXEL),
                          FilamentSettings(diameter=DIAMETER), "microtubule"))


def test_a_point_moved_along_a_filament_moves_its_track_length_by_the_step():
    """An added or moved point took its nearest traced point's track length: two segments of
    one tube then shared a rlnHelicalTrackLengthAngst, by which RELION orders them."""
    from napari_tomoseg.filament_points import as_edited

    prob, _, _ = _patchy_map()
    found = trace_filaments(prob, VOXEL, FilamentSettings(diameter=DIAMETER))
    table = found.table(VOXEL, DIAMETER / 2)
    zyx = table[["z", "y", "x"]].to_numpy(float)
    same = as_edited(table, zyx, VOXEL)
    np.testing.assert_allclose(same["track_length"], table["track_length"], atol=1e-6)
    # the traced direction agrees with the tube's, and with the way the track grows
    grows = np.sign(np.dot(zyx[4] - zyx[3], DIRECTION))  # the points' order along the tube
    nudged = zyx[3] + 1.5 * grows * DIRECTION  # 1.5 voxels on, the way the track grows
    moved = as_edited(table, nudged[None], VOXEL)
    assert moved["track_length"][0] == pytest.approx(table["track_length"][3] + 15.0, abs=1.0)
    assert moved["filament"][0] == table["filament"][3]
    assert len(as_edited(table, np.zeros((0, 3)), VOXEL)) == 0


def test_trace_refuses_a_folder_for_the_tubes_before_writing_the_points(tmp_path, capsys):
    """``--tubes T.mrc --overwrite`` with T.mrc a folder replaced the points, then failed."""
    prob, _, _ = _patchy_map()
    path = _map_file(tmp_path, prob)
    points, tubes = tmp_path / "points.csv", tmp_path / "T.mrc"
    points.write_text("keep me\n")
    tubes.mkdir()
    assert main(["trace", str(path), str(points), "--tubes", str(tubes), "--overwrite"]) == 2
    assert points.read_text() == "keep me\n" and tubes.is_dir()
    assert "T.mrc is a folder" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGXFSZ"), reason="POSIX file-size limit")
def test_trace_writes_points_and_tubes_together_or_neither(tmp_path):
    """A write failing half way (a full disk; here a file-size limit the small points file
    passes and the tubes do not) leaves the earlier points, not new points without tubes."""
    import resource
    import signal

    from napari_tomoseg.io.particles import TomogramFrame
    from napari_tomoseg.jobs import run_job
    from napari_tomoseg.jobs.filaments import trace_job

    prob, _, _ = _patchy_map()
    points, tubes = tmp_path / "points.csv", tmp_path / "tubes.mrc"
    points.write_text("keep me\n")
    job = trace_job(prob, TomogramFrame("t", SHAPE, VOXEL), FilamentSettings(diameter=DIAMETER),
                    "microtubule", points, tubes, overwrite=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))  # tubes: > 360 kB
    try:
        with pytest.raises(OSError):
            run_job(job)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert points.read_text() == "keep me\n" and not tubes.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["points.csv"]  # no staging left


def test_trace_into_an_eman2_info_file_keeps_its_other_classes(tmp_path):
    """Written in a staging folder, the points found no info file there and replaced the
    user's: its other classes, tilt parameters and apix_unbin were gone."""
    import json

    prob, _, _ = _patchy_map()
    path = _map_file(tmp_path, prob)
    info = tmp_path / "TS_01_info.json"
    info.write_text(json.dumps({"class_list": {"0": {"name": "ribosome", "boxsize": 32}},
                                "boxes_3d": [[10.0, 20.0, 5.0, "manual", 0.0, 0]],
                                "tlt_params": [[0.0, 0.0, 0.0, 0.0, 0.0]], "apix_unbin": 10.0}))
    assert main(["trace", str(path), str(info), "--diameter", str(DIAMETER), "--overwrite"]) == 0
    kept = json.loads(info.read_text())
    assert kept["tlt_params"] == [[0.0, 0.0, 0.0, 0.0, 0.0]] and kept["apix_unbin"] == 10.0
    names = {c["name"] for c in kept["class_list"].values()}
    assert names == {"ribosome", "microtubule"}
    assert sum(box[-1] == 0 for box in kept["boxes_3d"]) == 1  # the ribosome box stays


def test_tubes_drawn_from_the_points_follow_the_traced_ones_and_the_users_edits():
    """A restored session has the points only, and points deleted or added by hand no longer
    match the traced tubes: tubes are drawn again from the points as they lie."""
    from napari_tomoseg.filament_points import tubes_from_points

    prob, tube, _ = _patchy_map()
    found = trace_filaments(prob, VOXEL, FilamentSettings(diameter=DIAMETER))
    table = found.table(VOXEL, DIAMETER / 2)
    drawn = tubes_from_points(table, prob.shape, VOXEL, DIAMETER)
    assert drawn.shape == prob.shape and set(np.unique(drawn)) == {0, 1}
    assert dice(drawn > 0, found.tubes > 0) > 0.85 and dice(drawn > 0, tube) > 0.75
    half = table[table["track_length"] <= table["track_length"].median()]  # the rest deleted
    shorter = tubes_from_points(half, prob.shape, VOXEL, DIAMETER)
    assert 0.35 < np.count_nonzero(shorter) / np.count_nonzero(drawn) < 0.65
    renumbered = tubes_from_points(table.assign(filament=3), prob.shape, VOXEL, DIAMETER)
    assert set(np.unique(renumbered)) == {0, 3}  # numbered as the points' filament
