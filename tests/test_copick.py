"""copick projects: built on disk the way copick lays them out, read and written by tomoseg.

What we write is checked two ways: with copick's own API (copick.from_file, get_picks,
get_segmentations, and its RELION importer copick/util/relion.py relion_rows_to_poses), and
against copick's documented layout (copick/impl/filesystem.py: Picks/{user}_{session}_{object}.json,
Segmentations/{vs:.3f}_{user}_{session}_{object}.zarr; copick/models.py CopickPicksFile and
CopickPoint: location in Angstrom, transformation from object space to tomogram space).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

copick = pytest.importorskip("copick")
zarr = pytest.importorskip("zarr")

from napari_tomoseg.cli import main  # noqa: E402
from napari_tomoseg.io import copick_project as cp  # noqa: E402
from napari_tomoseg.io.mrc import write_volume  # noqa: E402
from napari_tomoseg.io.particles import TomogramFrame  # noqa: E402

RUN = "TS_001"
SHAPE = (20, 40, 48)  # z y x
VS = 10.0
TRUE_ZYX = np.array([[10, 12, 12], [10, 28, 34], [7, 20, 26]], dtype=float)


def relion_euler_matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION src/euler.cpp Euler_angles2matrix, written out from its formula."""
    a, b, g = np.radians([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    return np.array([[cg * cb * ca - sg * sa, cg * cb * sa + sg * ca, -cg * sb],
                     [-sg * cb * ca - cg * sa, -sg * cb * sa + cg * ca, sg * sb],
                     [sb * ca, sb * sa, cb]])


def _write_tomograms(static: Path, runs: dict[str, tuple[np.ndarray, float]]) -> None:
    """Tomograms written by copick itself into what becomes the project's static root."""
    staging = copick.new_config(str(static.parent / "staging.json"), overlay_root=str(static),
                                pickable_objects=[])
    for run, (volume, voxel) in runs.items():
        tomogram = staging.new_run(run).new_voxel_spacing(voxel).new_tomogram("wbp")
        tomogram.from_numpy(volume, levels=2)


def _project(folder: Path, runs: dict[str, tuple[np.ndarray, float]]) -> Path:
    """A filesystem copick config (copick/impl/filesystem.py CopickConfigFSSpec) and its runs."""
    static, overlay = folder / "static", folder / "overlay"
    config = {
        "config_type": "filesystem", "name": "tomoseg test", "version": "1.31.0",
        "pickable_objects": [
            {"name": "ribosome", "is_particle": True, "label": 1, "radius": 30.0},
            {"name": "membrane", "is_particle": False, "label": 2},
        ],
        "overlay_root": f"local://{overlay}", "static_root": f"local://{static}",
        "overlay_fs_args": {"auto_mkdir": True},
    }
    _write_tomograms(static, runs)
    path = folder / "copick_config.json"
    path.write_text(json.dumps(config))
    return path


@pytest.fixture
def project(tmp_path):
    volume = np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)
    return _project(tmp_path, {RUN: (volume, VS)}), volume


def _blobs(centres_zyx: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    grid = np.indices(SHAPE, dtype=np.float32)
    out = np.zeros(SHAPE, np.float32)
    for c in centres_zyx:
        d2 = sum((grid[i] - c[i]) ** 2 for i in range(3))
        out = np.maximum(out, np.exp(-d2 / (2 * sigma ** 2)))
    return out


def _sorted(points: np.ndarray) -> np.ndarray:
    return points[np.lexsort(points.T[::-1])]


def test_open_tomogram_reads_the_static_root(project):
    config, volume = project
    data, info = cp.open_tomogram(cp.CopickSource(str(config), RUN, VS, "wbp"))
    np.testing.assert_array_equal(data, volume)
    assert info.shape == SHAPE and info.voxel_size == (VS, VS, VS) and info.origin == (0, 0, 0)
    assert cp.run_names(config) == [RUN]
    for source, words in [(cp.CopickSource(str(config), "TS_999"), "TS_999"),
                          (cp.CopickSource(str(config), RUN, 20.0), "voxel spacing 20"),
                          (cp.CopickSource(str(config), RUN, VS, "denoised"), "denoised"),
                          (cp.CopickSource(str(config.with_name("nope.json")), RUN), "not exist")]:
        with pytest.raises(cp.CopickError, match=words):
            cp.open_tomogram(source)


def test_pick_writes_copick_points_in_angstrom(project, tmp_path, capsys):
    config, _ = project
    probability = write_volume(tmp_path / "prob.mrc", _blobs(TRUE_ZYX), VS, (0.0, 0.0, 0.0))
    args = ["pick", str(probability), "--copick", str(config), "--run", RUN,
            "--voxel-spacing", "10", "--feature", "ribosome", "--diameter", "60"]
    assert main(args) == 0
    # copick's documented layout: the overlay root, Picks/{user}_{session}_{object}.json
    path = tmp_path / "overlay" / "ExperimentRuns" / RUN / "Picks" / "tomoseg_0_ribosome.json"
    record = json.loads(path.read_text())
    assert (record["pickable_object_name"], record["user_id"], record["session_id"]) == (
        "ribosome", "tomoseg", "0")
    assert record["unit"] == "angstrom" and record["trust_orientation"] is False
    xyz = np.array([[p["location"][k] for k in "xyz"] for p in record["points"]])
    np.testing.assert_allclose(_sorted(xyz), _sorted(TRUE_ZYX[:, ::-1] * VS), atol=VS * 0.5)
    for point in record["points"]:
        np.testing.assert_allclose(point["transformation_"], np.eye(4))
    assert not (tmp_path / "static" / "ExperimentRuns" / RUN / "Picks").exists()
    # copick's own API sees the same points
    run = copick.from_file(str(config)).get_run(RUN)
    picks = run.get_picks(object_name="ribosome", user_id="tomoseg", session_id="0")
    assert len(picks) == 1
    np.testing.assert_allclose(_sorted(picks[0].full_positions()), _sorted(xyz))
    # a second run into the same session needs --overwrite; an undeclared object is refused
    capsys.readouterr()
    assert main(args) == 2 and "--overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite"]) == 0
    assert main(args[:-4] + ["--feature", "actin", "--diameter", "60"]) == 2
    assert "not a pickable object" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--user-id", "tom_seg"]) == 2


def test_orientations_are_relion_matrices_object_to_tomogram(project):
    config, _ = project
    source = cp.CopickSource(str(config), RUN, VS, user_id="tomoseg", session_id="7")
    angles = np.array([[30.0, 50.0, -70.0], [0.0, 90.0, 0.0], [-120.0, 10.0, 45.0]])
    table = pd.DataFrame({"z": TRUE_ZYX[:, 0], "y": TRUE_ZYX[:, 1], "x": TRUE_ZYX[:, 2],
                          "rot": angles[:, 0], "tilt": angles[:, 1], "psi": angles[:, 2],
                          "score": [0.9, 0.8, 0.7]})
    frame = TomogramFrame(RUN, SHAPE, VS)
    cp.write_picks(source, table, frame, "ribosome")
    picks = copick.from_file(str(config)).get_run(RUN).get_picks(
        object_name="ribosome", user_id="tomoseg", session_id="7")[0]
    locations, transforms = picks.numpy()
    np.testing.assert_allclose(locations, TRUE_ZYX[:, ::-1] * VS)
    np.testing.assert_allclose(picks.scores(), [0.9, 0.8, 0.7])
    assert picks.trust_orientation
    # copick's RELION importer turns these rlnAngle* into the same object -> tomogram rotation
    from copick.util.relion import relion_rows_to_poses

    star = pd.DataFrame(angles, columns=["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"])
    rotations, _ = relion_rows_to_poses(star)
    for rotation, transform, a in zip(rotations, transforms, angles):
        np.testing.assert_allclose(transform[:3, :3], relion_euler_matrix(*a), atol=1e-12)
        np.testing.assert_allclose(transform[:3, :3], rotation, atol=1e-12)
        np.testing.assert_allclose(transform[:3, 3], 0.0)
    # copick's own RELION export gives back the angles we started from
    exported = picks.df("relion")
    for row, a in zip(exported[["rlnAngleRot", "rlnAngleTilt", "rlnAnglePsi"]].to_numpy(), angles):
        np.testing.assert_allclose(relion_euler_matrix(*row), relion_euler_matrix(*a), atol=1e-9)
    # and it reads back as the same rotations at the same voxels
    back = cp.read_picks(source, "ribosome", VS)
    np.testing.assert_allclose(back[["z", "y", "x"]].to_numpy(), TRUE_ZYX, atol=1e-9)
    # points another tool stored through copick's own API with a shift in the transform: the
    # centre is location + shift (copick's full_positions), in voxels (location + t) / vs
    shifted = copick.from_file(str(config)).get_run(RUN).new_picks(
        "ribosome", "8", user_id="other", exist_ok=True)
    moves = np.tile(np.eye(4), (3, 1, 1))
    moves[:, :3, 3] = [[20.0, -10.0, 5.0], [0.0, 0.0, 0.0], [-30.0, 40.0, 10.0]]  # x y z, A
    shifted.from_numpy(TRUE_ZYX[:, ::-1] * VS, moves, scores=np.ones(3))
    other = cp.CopickSource(str(config), RUN, VS, user_id="other", session_id="8")
    moved = cp.read_picks(other, "ribosome", VS)[["z", "y", "x"]].to_numpy()
    np.testing.assert_allclose(moved, TRUE_ZYX + moves[:, :3, 3][:, ::-1] / VS, atol=1e-9)
    np.testing.assert_allclose(moved[:, ::-1] * VS, shifted.full_positions(), atol=1e-9)
    for row, a in zip(back[["rot", "tilt", "psi"]].to_numpy(), angles):
        np.testing.assert_allclose(relion_euler_matrix(*row), relion_euler_matrix(*a), atol=1e-9)


def test_segmentation_round_trips_and_feeds_pick(project, tmp_path):
    config, _ = project
    source = cp.CopickSource(str(config), RUN, VS)
    mask = _blobs(TRUE_ZYX, sigma=3.0) > np.exp(-0.5)  # balls of 3 voxels radius (60 A across)
    written = cp.write_segmentation(source, mask, "ribosome", VS)
    store = tmp_path / "overlay" / "ExperimentRuns" / RUN / "Segmentations"
    assert Path(written) == store / "10.000_tomoseg_0_ribosome.zarr"
    attrs = zarr.open(str(written), mode="r").attrs["multiscales"][0]
    assert [a["unit"] for a in attrs["axes"]] == ["angstrom"] * 3
    assert attrs["datasets"][0]["coordinateTransformations"][0]["scale"] == [VS, VS, VS]
    run = copick.from_file(str(config)).get_run(RUN)
    seg = run.get_segmentations(name="ribosome", user_id="tomoseg", session_id="0",
                                voxel_size=VS)[0]
    data = seg.numpy()
    assert data.shape == SHAPE and data.dtype == np.uint8 and not seg.is_multilabel
    np.testing.assert_array_equal(data, mask.astype(np.uint8))
    again, info = cp.read_segmentation(source, "ribosome")
    assert info.voxel_size == (VS, VS, VS)
    np.testing.assert_array_equal(again, data)
    with pytest.raises(cp.CopickError, match="--overwrite"):
        cp.write_segmentation(source, mask, "ribosome", VS)
    # pick with no probability file reads the feature's segmentation from the project
    assert main(["pick", "--copick", str(config), "--run", RUN, "--voxel-spacing", "10",
                 "--feature", "ribosome", "--diameter", "60", "--session-id", "0"]) == 0
    picks = run.get_picks(object_name="ribosome", user_id="tomoseg", session_id="0")[0]
    picks.refresh()
    np.testing.assert_allclose(_sorted(picks.full_positions()), _sorted(TRUE_ZYX[:, ::-1] * VS),
                               atol=VS)


def test_pick_refuses_a_volume_that_does_not_span_the_run(project, tmp_path, capsys):
    config, _ = project
    cropped = write_volume(tmp_path / "crop.mrc", _blobs(TRUE_ZYX)[:, :30], VS, (0.0, 0.0, 0.0))
    assert main(["pick", str(cropped), "--copick", str(config), "--run", RUN,
                 "--feature", "ribosome", "--diameter", "60"]) == 2
    assert "does not span" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny_result):
    from napari_tomoseg.annotations import boxes_from_truth
    from napari_tomoseg.nn.model_file import save_model
    from napari_tomoseg.nn.training import TrainingSettings, train

    boxes = boxes_from_truth(tiny_result.cell.labels["ribosome"], "ribosome", 4, 8, 32, seed=0)
    model = train(tiny_result.tomogram, boxes, 20.0, TrainingSettings(
        steps=6, batch_size=4, parameters={"base": 8, "levels": 2, "context": 1}))
    return str(save_model(model, tmp_path_factory.mktemp("copick_model") / "ribosome.pt"))


def test_segment_and_batch_read_runs_and_write_results(tmp_path, tiny_result, tiny_model,
                                                        capsys):
    from napari_tomoseg.batch import BatchSettings, process_tomogram
    from napari_tomoseg.io.mrc import open_volume

    tomogram = np.asarray(tiny_result.tomogram, dtype=np.float32)
    # TS_001 has no 20 A tomogram: said and skipped (it stopped every later run), exit 1
    config = _project(tmp_path, {"TS_001": (tomogram, 10.0), "TS_002": (tomogram, 20.0)})
    out = tmp_path / "out"
    assert main(["segment", "--copick", str(config), "--voxel-spacing", "20", "-m", tiny_model,
                 "-o", str(out), "--copick-threshold", "0.4"]) == 1
    assert "skipped run 'TS_001'" in capsys.readouterr().err
    probability, _ = open_volume(out / "TS_002_ribosome.mrc")
    run = copick.from_file(str(config)).get_run("TS_002")
    seg = run.get_segmentations(name="ribosome", user_id="tomoseg", session_id="0",
                                voxel_size=20.0)[0]
    np.testing.assert_array_equal(seg.numpy(), (np.asarray(probability) > 0.4).astype(np.uint8))

    source = cp.CopickSource(str(config), voxel_spacing=20.0, session_id="1")
    settings = BatchSettings(models=(tiny_model,), output=str(tmp_path / "batch"),
                             pick=("ribosome",), diameter=250.0, copick=source)
    result = process_tomogram("TS_002", settings)
    assert result["status"] == "done", result["error"]
    run = copick.from_file(str(config)).get_run("TS_002")  # a fresh look at the project
    picks = run.get_picks(object_name="ribosome", user_id="tomoseg", session_id="1")[0]
    assert len(picks.points) == result["picks"]["ribosome"]
    labels, _ = open_volume(tmp_path / "batch" / "TS_002_labels.mrc")
    seg = run.get_segmentations(name="ribosome", user_id="tomoseg", session_id="1",
                                voxel_size=20.0)[0]
    np.testing.assert_array_equal(seg.numpy(), (np.asarray(labels) == 1).astype(np.uint8))
    assert cp.fingerprint(source.at_run("TS_002")) == cp.fingerprint(source.at_run("TS_002"))


def test_a_segmentation_is_filed_under_the_runs_spacing_and_guarded(project):
    """The OME-Zarr's float32 spacing (13.479999542 for 13.48) missed copick's == match: an
    existing segmentation was replaced unasked. Another voxel size is refused."""
    config, _ = project
    source = cp.CopickSource(str(config), RUN, VS)
    mask = _blobs(TRUE_ZYX, sigma=3.0) > 0.5
    written = cp.write_segmentation(source, mask, "ribosome", float(np.float32(VS * 1.0000001)))
    assert Path(written).name == "10.000_tomoseg_0_ribosome.zarr"
    with pytest.raises(cp.CopickError, match="--overwrite"):
        cp.write_segmentation(source, np.zeros_like(mask), "ribosome", VS * 1.0000001)
    with pytest.raises(cp.CopickError, match="voxel spacing 10"):
        cp.write_segmentation(source, mask, "ribosome", 2 * VS, overwrite=True)
    assert copick.from_file(str(config)).get_run(RUN).get_segmentations(
        name="ribosome", voxel_size=VS)[0].numpy().sum() == mask.sum()


def test_pick_reads_another_tools_label_valued_segmentation(project):
    """A binary segmentation storing its object's label (4) is the object wherever it is
    not 0 (read as a 0-255 map it gave no picks); picks go under our own user id."""
    config, _ = project
    run = copick.from_file(str(config)).get_run(RUN)
    theirs = run.new_segmentation(VS, "ribosome", "1", False, user_id="membrain")
    theirs.from_numpy(np.where(_blobs(TRUE_ZYX, sigma=3.0) > 0.5, 4, 0).astype(np.uint8))
    assert main(["pick", "--copick", str(config), "--run", RUN, "--voxel-spacing", "10",
                 "--feature", "ribosome", "--diameter", "60", "--from-user-id", "membrain",
                 "--from-session-id", "1"]) == 0
    run = copick.from_file(str(config)).get_run(RUN)
    assert not run.get_picks(object_name="ribosome", user_id="membrain")
    picks = run.get_picks(object_name="ribosome", user_id="tomoseg", session_id="0")[0]
    np.testing.assert_allclose(_sorted(picks.full_positions()), _sorted(TRUE_ZYX[:, ::-1] * VS),
                               atol=VS)


def test_segment_checks_copick_objects_before_segmenting(tmp_path, tiny_result, tiny_model,
                                                          capsys):
    tomogram = np.asarray(tiny_result.tomogram, dtype=np.float32)
    config = _project(tmp_path, {"TS_002": (tomogram, 20.0)})
    data = json.loads(config.read_text())
    data["pickable_objects"] = [o for o in data["pickable_objects"] if o["name"] != "ribosome"]
    config.write_text(json.dumps(data))
    out = tmp_path / "out"
    assert main(["segment", "--copick", str(config), "--voxel-spacing", "20", "-m", tiny_model,
                 "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "not a pickable object" in err and "--copick-object ribosome=OBJECT" in err
    assert not list(out.glob("*.mrc"))  # refused before any work

    # the project names it otherwise: --copick-object files the model's feature under it
    data["pickable_objects"].append({"name": "ribosome-70s", "is_particle": True, "label": 3,
                                     "radius": 125.0})
    config.write_text(json.dumps(data))
    assert main(["segment", "--copick", str(config), "--voxel-spacing", "20", "-m", tiny_model,
                 "-o", str(out), "--copick-object", "ribosme=ribosome-70s"]) == 2
    assert "'ribosme' is not a feature of this run" in capsys.readouterr().err
    assert main(["segment", "--copick", str(config), "--voxel-spacing", "20", "-m", tiny_model,
                 "-o", str(out), "--copick-object", "ribosome=ribosome-70s"]) == 0
    run = copick.from_file(str(config)).get_run("TS_002")
    assert run.get_segmentations(name="ribosome-70s", user_id="tomoseg", voxel_size=20.0)
    assert not run.get_segmentations(name="ribosome", voxel_size=20.0)
    # and pick reads that segmentation and files the picks under the same object
    assert main(["pick", "--copick", str(config), "--run", "TS_002", "--voxel-spacing", "20",
                 "--feature", "ribosome", "--copick-object", "ribosome=ribosome-70s"]) == 0
    run = copick.from_file(str(config)).get_run("TS_002")
    assert run.get_picks(object_name="ribosome-70s", user_id="tomoseg")
    assert not run.get_picks(object_name="ribosome")


def test_two_features_are_never_filed_under_one_object(project, capsys):
    """--copick-object ribosome=membrane with a membrane model besides: batch writes with
    overwrite, so the second feature's results replaced the first's without a word."""
    config, _ = project
    source = cp.CopickSource(str(config), RUN, VS, objects=(("ribosome", "membrane"),))
    with pytest.raises(cp.CopickError, match="ribosome and membrane would both be filed"):
        cp.check_result_objects(source, ["ribosome", "membrane"])
    cp.check_result_objects(source, ["ribosome"])  # alone it may take that name
    assert main(["pick", "prob.mrc", "p.star", "--feature", "ribosome",
                 "--copick-object", "ribosome=membrane"]) == 2
    assert "give --copick CONFIG too" in capsys.readouterr().err


def test_an_overwrite_that_fails_midway_keeps_the_earlier_result(project, monkeypatch):
    """copick truncates a picks file before writing it and fills a zarr chunk by chunk: a
    full disk there lost the earlier result. Now it is set aside and put back."""
    import copick.impl.filesystem as copick_fs
    import copick.models as copick_models

    config, _ = project
    source = cp.CopickSource(str(config), RUN, VS)
    frame = TomogramFrame("TS_001", SHAPE, VS)
    first = pd.DataFrame(TRUE_ZYX, columns=["z", "y", "x"])
    picks_file = Path(cp.write_picks(source, first, frame, "ribosome"))
    before = picks_file.read_bytes()
    mask = _blobs(TRUE_ZYX, sigma=3.0) > np.exp(-0.5)
    seg = Path(cp.write_segmentation(source, mask, "ribosome", VS))

    def disk_full_after_a_little(data, handle, **kwargs):
        handle.write("{\"pickable_object_name\": ")
        raise OSError(28, "No space left on device")

    def disk_full_after_one_level(loc, pyramid, **kwargs):
        import zarr as zarr_module

        level = next(iter(pyramid.values()))
        zarr_module.open_group(loc, mode="a").create_dataset("0", data=level * 0)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(copick_fs.json, "dump", disk_full_after_a_little)
    with pytest.raises(OSError, match="No space"):
        cp.write_picks(source, first.iloc[:2], frame, "ribosome", overwrite=True)
    assert picks_file.read_bytes() == before and not Path(f"{picks_file}.replacing").exists()
    monkeypatch.setattr(copick_models, "write_ome_zarr_3d", disk_full_after_one_level)
    with pytest.raises(OSError, match="No space"):
        cp.write_segmentation(source, ~mask, "ribosome", VS, overwrite=True)
    monkeypatch.undo()
    again, _ = cp.read_segmentation(source, "ribosome")
    np.testing.assert_array_equal(again, mask.astype(np.uint8))
    assert not Path(f"{seg}.replacing").exists()
    np.testing.assert_allclose(cp.read_picks(source, "ribosome", VS)[["z", "y", "x"]],
                               TRUE_ZYX, atol=1e-9)
    # a write that completes replaces it and leaves nothing aside
    cp.write_picks(source, first.iloc[:2], frame, "ribosome", overwrite=True)
    assert len(cp.read_picks(source, "ribosome", VS)) == 2
    assert not Path(f"{picks_file}.replacing").exists()
    # killed after setting the earlier result aside, before copick made the new file: the
    # next write does not go ahead and leave it there unnoticed
    picks_file.rename(f"{picks_file}.replacing")
    with pytest.raises(cp.CopickError, match="set aside by a write that did not finish"):
        cp.write_picks(source, first, frame, "ribosome", overwrite=True)
