"""Batch processing on a real dask LocalCluster: equal outputs, resume, failures, lost workers."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from napari_tomoseg.batch import BatchSettings, process_tomogram, run_batch  # noqa: E402
from napari_tomoseg.io.mrc import open_volume, write_volume  # noqa: E402
from napari_tomoseg.io.particles import read_star  # noqa: E402
from napari_tomoseg.nn.model_file import save_model  # noqa: E402
from napari_tomoseg.nn.training import TrainingSettings, train  # noqa: E402
from napari_tomoseg.annotations import boxes_from_truth  # noqa: E402
from napari_tomoseg.errors import TomosegError  # noqa: E402


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_result):
    folder = tmp_path_factory.mktemp("batch")
    boxes = boxes_from_truth(tiny_result.cell.labels["ribosome"], "ribosome", 5, 10, 32, seed=0)
    model = train(tiny_result.tomogram, boxes, 20.0, TrainingSettings(
        steps=20, batch_size=8, parameters={"base": 8, "levels": 2, "context": 1},
        hold_out=False))  # a tiny model: threshold 0.5, as the assertions below assume
    model_path = save_model(model, folder / "ribosome.pt")
    tomograms = []
    for i in range(3):
        volume = np.roll(tiny_result.tomogram, 7 * i, axis=2)
        tomograms.append(str(write_volume(folder / f"tomo{i}.mrc", volume, 20.0, (0, 0, 10.0 * i))))
    bad = folder / "broken.mrc"
    bad.write_bytes(b"not an mrc file" * 100)
    return folder, str(model_path), tomograms, str(bad)


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0")
    with Client(cluster) as c:
        yield c
    cluster.close()


def test_batch_matches_single_process_resumes_and_reports_failures(project, client, tmp_path):
    folder, model, tomograms, bad = project
    settings = BatchSettings(models=(model,), output=str(tmp_path / "out"), pick=("ribosome",),
                             diameter=250.0)
    rows = run_batch(tomograms + [bad], settings, client=client)
    status = {r["name"]: r["status"] for r in rows}
    assert status == {"tomo0": "done", "tomo1": "done", "tomo2": "done", "broken": "failed"}
    assert "not a valid MRC file" in [r for r in rows if r["name"] == "broken"][0]["error"]
    # the work ran in the cluster's worker processes, not in this one
    pids = {r["worker_pid"] for r in rows if r["status"] == "done"}
    assert pids and pids <= set(client.run(os.getpid).values()) and os.getpid() not in pids
    # the same tomogram processed in this process gives identical files
    single = BatchSettings(models=(model,), output=str(tmp_path / "single"), pick=("ribosome",))
    process_tomogram(tomograms[1], single)
    a, _ = open_volume(tmp_path / "out" / "tomo1_ribosome.mrc")
    b, _ = open_volume(tmp_path / "single" / "tomo1_ribosome.mrc")
    # equal up to one float16 step: workers run torch with 1 thread, this process with more
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=5e-4)
    np.testing.assert_allclose(read_star(tmp_path / "out" / "tomo1_ribosome.star")[["z", "y", "x"]],
                               read_star(tmp_path / "single" / "tomo1_ribosome.star")[["z", "y", "x"]])
    combined = read_star(tmp_path / "out" / "all_ribosome.star")
    assert len(combined) == sum(r["picks"].get("ribosome", 0) for r in rows)
    assert set(combined["tomo_name"]) <= {"tomo0", "tomo1", "tomo2"}
    assert not list((tmp_path / "out").glob("*.partial")) and not list((tmp_path / "out").glob(".*partial"))
    # a rerun skips what is finished and retries the failure
    again = run_batch(tomograms + [bad], settings, client=client)
    assert {r["name"]: r["status"] for r in again} == {
        "tomo0": "skipped", "tomo1": "skipped", "tomo2": "skipped", "broken": "failed"}


def test_a_worker_killed_mid_task_does_not_lose_a_tomogram(project, client, tmp_path):
    import threading
    import time

    folder, model, tomograms, _ = project
    settings = BatchSettings(models=(model,), output=str(tmp_path / "out"))

    killed = []

    def kill_one_busy_worker():
        deadline = time.time() + 60
        while time.time() < deadline:
            busy = [w for w, tasks in client.processing().items() if tasks]
            if busy:
                pid = client.run(os.getpid, workers=busy[:1])
                for value in pid.values():  # the worker process dies, as in an OOM kill
                    os.kill(value, signal.SIGKILL)
                    killed.append(value)
                return
            time.sleep(0.01)

    killer = threading.Thread(target=kill_one_busy_worker)
    killer.start()
    rows = run_batch(tomograms, settings, client=client)
    killer.join()
    assert killed, "no worker was busy to kill"
    assert [r["status"] for r in rows] == ["done", "done", "done"]
    assert killed[0] not in {r["worker_pid"] for r in rows}  # its task ran again elsewhere
    for name in ("tomo0", "tomo1", "tomo2"):
        assert (tmp_path / "out" / f"{name}_ribosome.mrc").exists()


def test_unique_names_tell_files_of_one_name_apart(tmp_path):
    from napari_tomoseg.batch_inputs import unique_names

    paths = [tmp_path / "a" / "t.mrc", tmp_path / "b" / "t.mrc", tmp_path / "c.mrc",
             tmp_path / "x" / "run" / "t.rec", tmp_path / "y" / "run" / "t.rec.gz"]
    assert unique_names(paths) == ["a_t", "b_t", "c", "x_run_t", "y_run_t"]
    # the same file twice, or a name that equals a disambiguated one, gets a number
    assert unique_names([tmp_path / "t.mrc", tmp_path / "t.mrc"]) == ["t", "t_2"]
    assert unique_names([tmp_path / "a_t.mrc", tmp_path / "a" / "t.mrc",
                         tmp_path / "b" / "t.mrc"]) == ["a_t", "a_t_2", "b_t"]


def _same_name_pair(folder, tomograms):
    """a/t.mrc and b/t.mrc: two different tomograms with one file name."""
    pair = []
    for sub, source in (("a", tomograms[0]), ("b", tomograms[1])):
        (folder / sub).mkdir()
        volume, info = open_volume(source)
        pair.append(str(write_volume(folder / sub / "t.mrc", np.asarray(volume), 20.0, info.origin)))
    return pair


def test_batch_of_two_files_of_one_name_keeps_both_and_no_duplicate_rows(project, client, tmp_path):
    from napari_tomoseg.io.particles import read_star as read

    _, model, tomograms, _ = project
    pair = _same_name_pair(tmp_path, tomograms)
    out = tmp_path / "out"
    settings = BatchSettings(models=(model,), output=str(out), pick=("ribosome",), diameter=250.0)
    rows = run_batch(pair, settings, client=client)
    assert [(r["name"], r["status"]) for r in rows] == [("a_t", "done"), ("b_t", "done")]
    a, _ = open_volume(out / "a_t_ribosome.mrc")
    b, _ = open_volume(out / "b_t_ribosome.mrc")
    assert not np.array_equal(np.asarray(a), np.asarray(b))  # b did not overwrite a
    for row in rows:
        assert len(read(out / f"{row['name']}_ribosome.star")) == row["picks"]["ribosome"]
    expected = sum(r["picks"]["ribosome"] for r in rows)
    assert expected > 0
    for attempt in ("first", "rerun"):
        combined = read(out / "all_ribosome.star")
        assert len(combined) == expected, attempt
        assert sorted(set(combined["tomo_name"])) == ["a_t", "b_t"]
        assert not combined.duplicated(subset=["tomo_name", "x", "y", "z"]).any()
        if attempt == "first":
            rows = run_batch(pair, settings, client=client)
            assert [r["status"] for r in rows] == ["skipped", "skipped"]


def test_segment_overwrite_with_two_files_of_one_name_writes_both(project, tmp_path, capsys):
    from napari_tomoseg.cli import main

    _, model, tomograms, _ = project
    pair = _same_name_pair(tmp_path, tomograms)
    out = tmp_path / "seg"
    assert main(["segment", *pair, "-m", model, "-o", str(out), "--overwrite",
                 "--device", "cpu"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_t_ribosome.mrc", "b_t_ribosome.mrc"]
    for name, source in (("a_t", tomograms[0]), ("b_t", tomograms[1])):
        single = tmp_path / f"single_{name}"
        assert main(["segment", source, "-m", model, "-o", str(single), "--device", "cpu"]) == 0
        expected, _ = open_volume(next(single.iterdir()))
        got, _ = open_volume(out / f"{name}_ribosome.mrc")
        np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


def test_batch_refuses_a_header_without_voxel_size_unless_given(project, tmp_path, monkeypatch,
                                                                  capsys):
    """Header voxel size 0 with a 2 A model: once taken as 1 A and rescaled 2x without a
    word; now a failed row naming --voxel-size, no outputs, and --voxel-size processes it."""
    import dataclasses

    import mrcfile
    from distributed import Client

    from napari_tomoseg import cli
    from napari_tomoseg.nn.model_file import load_model

    folder, model, tomograms, _ = project
    fine = load_model(model)
    small = save_model(dataclasses.replace(fine, voxel_size=2.0), tmp_path / "small.pt")
    volume, _ = open_volume(tomograms[0])
    tomogram = write_volume(tmp_path / "novoxel.mrc", volume, 0.0)
    with mrcfile.open(tomogram, permissive=True) as mrc:
        assert float(mrc.voxel_size.x) == 0.0  # a real MRC whose header says 0 A

    # the worker function: a failure of this tomogram, nothing written
    settings = BatchSettings(models=(str(small),), output=str(tmp_path / "one"))
    result = process_tomogram(str(tomogram), settings)
    assert result["status"] == "failed" and not result["outputs"]
    assert "no usable voxel size" in result["error"] and "--voxel-size" in result["error"]
    assert not list((tmp_path / "one").glob("*.mrc"))

    # the CLI: one failed row and exit 1; with --voxel-size the tomogram is segmented
    monkeypatch.setattr("napari_tomoseg.batch.make_client", lambda *a, **k: Client(
        processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0"))
    out = tmp_path / "out"
    assert cli.main(["batch", str(tomogram), "-m", str(small), "-o", str(out),
                     "--device", "cpu"]) == 1
    report = capsys.readouterr().out
    assert "| novoxel | failed |" in report and "no usable voxel size" in report
    assert not list(out.glob("*.mrc"))
    assert cli.main(["batch", str(tomogram), "-m", str(small), "-o", str(out), "--device", "cpu",
                     "--voxel-size", "2", "--dtype", "float32"]) == 0
    probability, info = open_volume(out / "novoxel_ribosome.mrc")
    assert probability.shape == volume.shape and info.voxel_size == (2.0, 2.0, 2.0)
    with mrcfile.open(out / "novoxel_ribosome.mrc", permissive=True, header_only=True) as mrc:
        assert int(mrc.header.mode) == 2  # --dtype float32: readable by IMOD before 4.10


@pytest.mark.parametrize("extra, fragment", [
    (["--threshold", "ribsome=0.9"], "'ribsome' is not a feature of this run"),
    (["--pick", "actin"], "--pick actin: no model of that feature"),
    (["--min-size", "ribsome=2000"], "--min-size ribsome=2000: 'ribsome' is not a feature"),
    (["--min-size", "ribosome=-5"], "0 or more")])
def test_batch_refuses_features_no_model_has_before_any_work(project, tmp_path, capsys, extra,
                                                             fragment):
    """A misspelled --threshold was ignored, and --pick of a feature no model has failed every
    tomogram after segmenting it: both are refused before a client starts or a file is written."""
    from napari_tomoseg import cli

    folder, model, tomograms, _ = project
    out = tmp_path / "out"
    assert cli.main(["batch", tomograms[0], "-m", model, "-o", str(out), *extra]) == 2
    assert fragment in capsys.readouterr().err
    assert not out.exists()


def test_rerun_with_new_pick_settings_reuses_maps_unless_a_map_changed(project, client, tmp_path):
    folder, model, tomograms, _ = project
    out = tmp_path / "out"
    first = BatchSettings(models=(model,), output=str(out), pick=("ribosome",), diameter=250.0)
    run_batch(tomograms[:2], first, client=client)
    maps = [out / "tomo0_ribosome.mrc", out / "tomo1_ribosome.mrc"]
    written = [m.stat().st_mtime_ns for m in maps]
    star_before = (out / "tomo0_ribosome.star").read_text()
    # only the picking changed: the maps are reused, the picks redone with the new diameter
    second = BatchSettings(models=(model,), output=str(out), pick=("ribosome",), diameter=120.0)
    rows = run_batch(tomograms[:2], second, client=client)
    assert [r["status"] for r in rows] == ["done", "done"]
    assert all(r.get("reused_maps") for r in rows)
    assert [m.stat().st_mtime_ns for m in maps] == written
    assert (out / "tomo0_ribosome.star").read_text() != star_before
    single = tmp_path / "single"
    process_tomogram(tomograms[0], BatchSettings(models=(model,), output=str(single),
                                                 pick=("ribosome",), diameter=120.0))
    np.testing.assert_allclose(read_star(out / "tomo0_ribosome.star")[["z", "y", "x"]],
                               read_star(single / "tomo0_ribosome.star")[["z", "y", "x"]])
    # a map changed since (here: replaced by another tomogram's) is never trusted
    maps[0].write_bytes(maps[1].read_bytes())
    third = BatchSettings(models=(model,), output=str(out), pick=("ribosome",), diameter=250.0)
    rows = run_batch(tomograms[:2], third, client=client)
    assert [bool(r.get("reused_maps")) for r in rows] == [False, True]
    a, _ = open_volume(maps[0])
    b, _ = open_volume(single / "tomo0_ribosome.mrc")
    np.testing.assert_allclose(a.astype(np.float32), b.astype(np.float32), atol=5e-4)
    # other segmentation settings segment again
    fourth = BatchSettings(models=(model,), output=str(out), pick=("ribosome",), dtype="float32")
    assert not any(r.get("reused_maps") for r in run_batch(tomograms[:2], fourth, client=client))


@pytest.mark.parametrize("pick", [("ribosome",), ()])
def test_the_summary_has_a_cell_per_column_for_failed_rows(capsys, pick):
    from napari_tomoseg.cli.batch import _print_summary

    rows = [{"name": "a", "status": "done", "picks": {"ribosome": 3}, "seconds": 1.0},
            {"name": "c", "status": "failed", "picks": {}, "seconds": 0.0, "error": "bad\nmore"}]
    assert _print_summary(rows, pick, "out") == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert len({line.count("|") for line in lines}) == 1  # without --pick the header had more
    assert lines[-1] == "| c | failed |" + "  |" * len(pick) + " 0.0 | bad |"


def test_a_workers_warnings_reach_the_summary_one_line_each(project, tmp_path, capsys):
    """A dask worker's warnings went to its own stderr in Python's several-line format."""
    from napari_tomoseg.cli.batch import _print_summary

    _, model, tomograms, _ = project
    settings = BatchSettings(models=(model,), output=str(tmp_path / "out"), voxel_size=21.0)
    row = process_tomogram(tomograms[0], settings)
    assert row["status"] == "done"
    assert row["warnings"] == ["tomo0.mrc: the voxel size given, 21 A, replaces the header's "
                               "20 x 20 x 20 A."]
    _print_summary([row, {**row, "name": "old", "status": "skipped"}], (), "out")
    said = capsys.readouterr().err.splitlines()
    assert said == [f"tomoseg: warning: tomo0: {row['warnings'][0]}"]  # not a skipped row's


def test_batch_never_writes_over_an_input_or_a_file_no_batch_wrote(project, tmp_path):
    """NAME_FEATURE.mrc was written over whatever held the name: another input (then
    segmented as the first tomogram's map and reported done) or another program's file."""
    import shutil

    from napari_tomoseg.batch_outputs import check_batch_outputs

    _, model, tomograms, _ = project
    out = tmp_path / "out"
    out.mkdir()
    first, second = out / "t.mrc", out / "t_ribosome.mrc"
    shutil.copy(tomograms[0], first)
    shutil.copy(tomograms[1], second)
    before = second.read_bytes()
    settings = BatchSettings(models=(model,), output=str(out))
    with pytest.raises(TomosegError, match="t_ribosome.mrc over one of its inputs"):
        run_batch([str(first), str(second)], settings)
    with pytest.raises(TomosegError, match="holds t_ribosome.mrc, not written by a batch"):
        run_batch([str(first)], settings)  # the map of t would replace another file
    assert second.read_bytes() == before and not (out / "manifest.json").exists()
    check_batch_outputs(out, ["t"], ["ribosome"], (), [str(first)], set(), overwrite=True)
    check_batch_outputs(out, ["t"], ["ribosome"], (), [str(first)], {"t_ribosome.mrc"},
                        overwrite=False)  # its own output, listed in the manifest: a rerun


def test_runs_into_one_folder_never_share_output_names(project, client, tmp_path):
    """b/t.mrc in a second run replaced a/t.mrc's outputs, and a rerun of a/t called them its
    own ('skipped', with a's pick count over b's picks)."""
    import shutil

    folder, model, tomograms, _ = project
    for sub, source in (("a", tomograms[0]), ("b", tomograms[1])):
        (tmp_path / sub).mkdir()
        shutil.copy(source, tmp_path / sub / "t.mrc")
    out = tmp_path / "out"
    settings = BatchSettings(models=(model,), output=str(out), pick=("ribosome",))
    first = run_batch([str(tmp_path / "a" / "t.mrc")], settings, client=client)
    second = run_batch([str(tmp_path / "b" / "t.mrc")], settings, client=client)
    assert first[0]["name"] == "t" and second[0]["name"] == "t_2"
    a_map, _ = open_volume(out / "t_ribosome.mrc")
    b_map, _ = open_volume(out / "t_2_ribosome.mrc")
    assert not np.array_equal(a_map, b_map)  # each tomogram's own map, side by side
    again = run_batch([str(tmp_path / "a" / "t.mrc"), str(tmp_path / "b" / "t.mrc")], settings,
                      client=client)
    assert [(r["name"], r["status"]) for r in again] == [("t", "skipped"), ("t_2", "skipped")]
    # the combined STAR of a run over b alone still holds a's picks
    run_batch([str(tmp_path / "b" / "t.mrc")], settings, client=client)
    combined = read_star(out / "all_ribosome.star")
    assert set(combined["tomo_name"]) == {"t", "t_2"}
    assert len(combined) == sum(len(read_star(out / f"{n}_ribosome.star")) for n in ("t", "t_2"))


def test_a_finished_copick_run_whose_results_were_deleted_is_redone(tmp_path):
    from napari_tomoseg.batch_manifest import Manifest

    written = tmp_path / "overlay" / "picks.json"
    written.parent.mkdir()
    written.write_text("{}")
    (tmp_path / "TS_1_labels.mrc").write_text("x")
    manifest = Manifest(tmp_path)
    manifest.record({"tomogram": "TS_1", "name": "TS_1", "status": "done",
                     "outputs": ["TS_1_labels.mrc"], "copick": [str(written)]}, "f", "d", "s")
    assert Manifest(tmp_path).finished("TS_1", "f", "d", "TS_1")
    written.unlink()
    assert not Manifest(tmp_path).finished("TS_1", "f", "d", "TS_1")


def test_an_older_manifest_with_two_tomograms_of_one_name_gives_the_second_a_new_one(tmp_path):
    from napari_tomoseg.batch_manifest import Manifest

    manifest = Manifest(tmp_path)
    for path in ("/d/a/t.mrc", "/d/b/t.mrc"):  # as the code before this fix recorded them
        manifest.record({"tomogram": path, "name": "t", "status": "done", "outputs": []},
                        "f", "d", "s")
    names = Manifest(tmp_path).names(["/d/a/t.mrc", "/d/b/t.mrc"], ["a_t", "b_t"])
    assert names["/d/a/t.mrc"] == "t" and names["/d/b/t.mrc"] not in ("t", "a_t")


def test_a_run_killed_while_rewriting_outputs_leaves_them_to_be_redone(tmp_path):
    """A rerun with new thresholds reuses the maps and rewrites labels and picks; killed
    before it recorded them, its entry still said 'done' with the earlier settings, so a run
    with those skipped the tomogram and kept the killed run's files."""
    from napari_tomoseg.batch_manifest import Manifest

    (tmp_path / "t_labels.mrc").write_text("labels at 0.5")
    (tmp_path / "t_ribosome.mrc").write_text("a map")
    from napari_tomoseg.session import fingerprint

    maps = {"ribosome": {"file": "t_ribosome.mrc",
                         "fingerprint": fingerprint(tmp_path / "t_ribosome.mrc")}}
    Manifest(tmp_path).record({"tomogram": "/d/t.mrc", "name": "t", "status": "done",
                               "outputs": ["t_labels.mrc"], "maps": maps}, "f", "S1", "seg")
    assert Manifest(tmp_path).finished("/d/t.mrc", "f", "S1", "t")
    planned = {"/d/t.mrc": ("t", ["t_ribosome.mrc", "t_labels.mrc"]),
               "/d/new.mrc": ("new", ["new_ribosome.mrc", "new_labels.mrc"])}
    Manifest(tmp_path).begin(["/d/t.mrc", "/d/new.mrc"], planned)  # a run with S2 ... killed
    (tmp_path / "t_labels.mrc").write_text("labels at 0.2")
    (tmp_path / "new_ribosome.mrc").write_text("a map the killed run wrote")
    again = Manifest(tmp_path)
    assert not again.finished("/d/t.mrc", "f", "S1", "t")  # redone, not skipped
    assert again.reusable_maps("/d/t.mrc", "f", "seg", "t") == {"ribosome": "t_ribosome.mrc"}
    assert not again.finished("/d/new.mrc", "g", "S2", "new")
    # the killed run's files are the batch's own: the rerun replaces them without --overwrite
    from napari_tomoseg.batch_outputs import check_batch_outputs

    recorded = {o for e in again.entries.values() for o in e.get("outputs", [])}
    check_batch_outputs(tmp_path, ["t", "new"], ["ribosome"], (), [], recorded, overwrite=False)
    assert again.names(["/d/new.mrc"], ["new"]) == {"/d/new.mrc": "new"}


def test_one_batch_run_at_a_time_writes_an_output_folder(tmp_path):
    """Two runs into one -o gave their tomograms the same names and replaced each other's
    files and manifest entries."""
    import subprocess
    import sys

    from napari_tomoseg.batch import BatchSettings, run_batch
    from napari_tomoseg.io.atomic import host_name
    from napari_tomoseg.io.folder_lock import LOCK, folder_lock

    out = tmp_path / "out"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        out.mkdir()
        (out / LOCK).write_text(f"{host_name()} {other.pid}")  # a live run holds it
        with pytest.raises(TomosegError, match=f"another tomoseg batch \\(process {other.pid}"):
            run_batch([str(tmp_path / "t.mrc")], BatchSettings(models=(), output=str(out)))
        assert not (out / "manifest.json").exists()
    finally:
        other.kill()
        other.wait()
    with folder_lock(out) as lock:  # its process died: taken over, and given back after
        assert lock.read_text() == f"{host_name()} {os.getpid()}"
        with pytest.raises(TomosegError, match="is writing to"):
            with folder_lock(out):
                pass
    assert not (out / LOCK).exists()
    (out / LOCK).write_text("other-host 123")  # another machine's: not judged from here
    with pytest.raises(TomosegError, match="process 123 on other-host.*delete"):
        with folder_lock(out):
            pass


def test_batch_picks_read_a_uint8_map_by_its_header(project, tmp_path):
    """`batch --dtype uint8 --pick` opened its own 0-255 maps without the header rule: a map
    of a tomogram without the particle holds only 0s and 1s, which read as probability 1
    everywhere (picks all over an empty map). Read as merge reads them, it has none."""
    from napari_tomoseg.batch import _chain_jobs
    from napari_tomoseg.io.probability_header import threshold_label

    _, model, tomograms, _ = project
    shape = open_volume(tomograms[0])[0].shape
    faint = np.round(np.random.default_rng(0).uniform(0.001, 0.005, shape) * 255)
    assert set(np.unique(faint)) == {0, 1}
    out = tmp_path / "out"
    out.mkdir()
    write_volume(out / "tomo0_ribosome.mrc", faint.astype(np.uint16), 20.0,
                 labels=(threshold_label("ribosome", 0.5),))
    settings = BatchSettings(models=(model,), output=str(out), pick=("ribosome",), dtype="uint8")
    result = {"outputs": [], "picks": {}}
    _chain_jobs(tomograms[0], settings, "tomo0", None, result,
                ready_maps={"ribosome": "tomo0_ribosome.mrc"})
    assert result["picks"]["ribosome"] == 0


def test_batch_drops_small_pieces_as_merge_does_and_old_runs_keep_their_digest(project,
                                                                              tmp_path):
    """batch --min-size drops a feature's pieces under a volume from the label volume, as
    merge --min-size does; a run without it keeps the digest of runs from before the option."""
    from napari_tomoseg.jobs import run_job
    from napari_tomoseg.jobs.merge import merge_maps
    from napari_tomoseg.merge import MergeSettings

    _, model, tomograms, _ = project
    labels = {}
    for size in (0.0, 50.0):
        out = tmp_path / f"out{size}"
        settings = BatchSettings(models=(model,), output=str(out),
                                 min_sizes={"ribosome": size} if size else {})
        assert process_tomogram(tomograms[0], settings, "t")["status"] == "done"
        labels[size] = open_volume(out / "t_labels.mrc")[0][...]
    expected = run_job(merge_maps({"ribosome": str(tmp_path / "out0.0" / "t_ribosome.mrc")},
                                  MergeSettings(["ribosome"], thresholds={"ribosome": 0.5},
                                                min_sizes={"ribosome": 50.0}),
                                  None, 20.0, (0, 0, 0)))
    assert 0 < (labels[50.0] > 0).sum() < (labels[0.0] > 0).sum()  # some pieces went, not all
    np.testing.assert_array_equal(labels[50.0], expected)
    plain = BatchSettings(models=(model,), output="o")
    assert plain.digest() != BatchSettings(models=(model,), output="o",
                                           min_sizes={"ribosome": 50.0}).digest()


def test_batch_traces_filaments_into_named_files_and_refuses_what_it_cannot(project, tmp_path,
                                                                            capsys):
    from napari_tomoseg.cli import main

    folder, model, tomograms, _ = project
    settings = BatchSettings(models=(model,), output=str(tmp_path / "out"),
                             trace={"ribosome": 200.0})  # a tiny model's map, traced
    before = settings.digest()
    row = process_tomogram(tomograms[0], settings)
    assert row["status"] == "done", row["error"]
    assert {"tomo0_ribosome_filaments.star", "tomo0_ribosome_tubes.mrc"} <= set(row["outputs"])
    tubes, info = open_volume(tmp_path / "out" / "tomo0_ribosome_tubes.mrc")
    assert tubes.shape == open_volume(tomograms[0])[0].shape and info.voxel_size[0] == 20.0
    assert int(tubes.max()) == row["filaments"]["ribosome"]  # numbered as the filaments
    assert settings.digest() != BatchSettings(models=(model,), output="x").digest()
    assert settings.segment_digest() == BatchSettings(models=(model,), output="x").segment_digest()
    out = str(tmp_path / "cli")
    assert main(["batch", tomograms[0], "-m", model, "-o", out, "--trace", "microtubule"]) == 2
    assert "--trace microtubule: no model" in capsys.readouterr().err
    assert main(["batch", tomograms[0], "-m", model, "-o", out, "--trace", "ribosome"]) == 2
    assert "give its diameter" in capsys.readouterr().err
    for bad in ("ribosome=-3", "ribosome=inf", "ribosome=", "=250", "ribosome=1e-300"):
        assert main(["batch", tomograms[0], "-m", model, "-o", out, "--trace", bad]) == 2
        assert "--trace" in capsys.readouterr().err
    assert main(["batch", tomograms[0], "-m", model, "-o", out, "--trace", "ribosome=200",
                 "--trace", "ribosome=300"]) == 2
    assert "given twice" in capsys.readouterr().err
    assert main(["batch", tomograms[0], "-m", model, "-o", out, "--trace", "ribosome=200",
                 "--threshold", "ribosome=0"]) == 2
    assert "above 0" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()  # refused before any work


def test_adding_trace_to_a_finished_batch_reuses_its_maps(project, client, tmp_path):
    folder, model, tomograms, _ = project
    first = BatchSettings(models=(model,), output=str(tmp_path / "out"))
    assert [r["status"] for r in run_batch(tomograms[:1], first, client=client)] == ["done"]
    traced = BatchSettings(models=(model,), output=str(tmp_path / "out"),
                           trace={"ribosome": 200.0})
    (row,) = run_batch(tomograms[:1], traced, client=client)
    assert row["status"] == "done" and row.get("reused_maps")
    assert (tmp_path / "out" / "tomo0_ribosome_tubes.mrc").exists()


def test_a_users_tomogram_named_like_a_label_volume_is_an_input_never_written_over(
        project, tmp_path, capsys):
    """``batch 'dir/*.mrc' -o dir --overwrite`` beside a.mrc took the user's own tomogram
    a_labels.mrc for a's label volume by its name alone, skipped it, then replaced it."""
    import shutil

    from napari_tomoseg.batch_inputs import split_own_outputs
    from napari_tomoseg.cli import main

    _, model, tomograms, _ = project
    folder = tmp_path / "dir"
    folder.mkdir()
    first, theirs = folder / "a.mrc", folder / "a_labels.mrc"
    shutil.copy(tomograms[0], first)
    shutil.copy(tomograms[1], theirs)  # a real tomogram: no tomoseg mark in its header
    before = theirs.read_bytes()
    settings = BatchSettings(models=(model,), output=str(folder))
    assert split_own_outputs([str(first), str(theirs)], settings) == ([str(first), str(theirs)],
                                                                       {})
    assert main(["batch", str(folder / "*.mrc"), "-m", model, "-o", str(folder),
                 "--overwrite", "--device", "cpu"]) == 2
    assert "a_labels.mrc over one of its inputs" in capsys.readouterr().err
    assert theirs.read_bytes() == before and not (folder / "manifest.json").exists()


def test_a_marked_label_volume_given_as_input_is_skipped_yet_never_written_over(project,
                                                                                tmp_path):
    """A label volume no batch of this folder wrote (e.g. painted in napari and saved) is no
    tomogram, but it was given: --overwrite does not replace it either."""
    from napari_tomoseg.batch_inputs import split_own_outputs
    from napari_tomoseg.io.probability_header import LABELS_MARK

    _, model, tomograms, _ = project
    first, painted = tmp_path / "a.mrc", tmp_path / "a_labels.mrc"
    volume, _ = open_volume(tomograms[0])
    write_volume(first, volume, 20.0)
    write_volume(painted, (volume > volume.mean()).astype(np.uint8), 20.0, labels=(LABELS_MARK,))
    before = painted.read_bytes()
    settings = BatchSettings(models=(model,), output=str(tmp_path))
    kept, skipped = split_own_outputs([str(first), str(painted)], settings)
    assert kept == [str(first)] and skipped == {str(painted): "a label volume (MRC header)"}
    with pytest.raises(TomosegError, match="a_labels.mrc over one of its inputs"):
        run_batch([str(first), str(painted)], settings, overwrite=True)
    assert painted.read_bytes() == before


def test_batch_rescores_picks_against_a_reference_as_rescore_does(project, tmp_path):
    """--rescore ribosome=REF: each tomogram's STAR carries the scores `tomoseg rescore` gives
    the same picks (read with RELION's starfile), a cut drops those below it, and a changed
    reference (its content, not its name) changes the run's digest, so a rerun redoes the picks."""
    import starfile

    from napari_tomoseg.averaging.template_scores import template_scores
    from napari_tomoseg.synthetic.ribosome import reference_density

    folder, model, tomograms, _ = project
    reference = write_volume(tmp_path / "ref.mrc", reference_density(20, 20.0), 20.0)
    out = tmp_path / "out"
    plain = process_tomogram(tomograms[0], BatchSettings(models=(model,), output=str(tmp_path / "p"),
                                                         pick=("ribosome",)))
    picks = read_star(tmp_path / "p" / "tomo0_ribosome.star")
    assert plain["status"] == "done" and len(picks) >= 3
    settings = BatchSettings(models=(model,), output=str(out), pick=("ribosome",),
                             rescore={"ribosome": str(reference)})
    assert settings.digest() != BatchSettings(models=(model,), output=str(out),
                                              pick=("ribosome",)).digest()
    before = settings.digest()
    row = process_tomogram(tomograms[0], settings)
    assert row["status"] == "done", row["error"]
    table = starfile.read(out / "tomo0_ribosome.star")
    table = table["particles"] if isinstance(table, dict) else table
    assert len(table) == len(picks)
    volume, _ = open_volume(tomograms[0])
    expected = template_scores(volume, picks[["z", "y", "x"]].to_numpy(float),
                               reference_density(20, 20.0), 20.0)
    np.testing.assert_allclose(np.sort(table["rlnTomosegReferenceScore"]), np.sort(expected),
                               atol=1e-5)
    cut = float(np.median(expected))
    kept = process_tomogram(tomograms[0], BatchSettings(
        models=(model,), output=str(tmp_path / "cut"), pick=("ribosome",),
        rescore={"ribosome": str(reference)}, rescore_cut=cut))
    assert kept["picks"]["ribosome"] == int(np.sum(expected >= cut)) < len(picks)
    write_volume(reference, reference_density(20, 20.0)[::-1].copy(), 20.0, overwrite=True)
    assert BatchSettings(models=(model,), output=str(out), pick=("ribosome",),
                         rescore={"ribosome": str(reference)}).digest() != before


@pytest.mark.parametrize("extra, fragment", [
    (["--rescore", "ribosome=REF"], "add --pick ribosome"),
    (["--pick", "ribosome", "--rescore", "ribosome"], "give FEATURE=REFERENCE"),
    (["--pick", "ribosome", "--rescore-cut", "auto"], "add --rescore"),
    (["--pick", "ribosome", "--rescore", "ribosome=FLAT"], "empty"),
    (["--pick", "ribosome", "--rescore", "ribosome=ODD"], "even size"),
    (["--pick", "ribosome", "--rescore", "ribosome=FINE"], "resample the reference"),
    (["--pick", "ribosome", "--rescore", "ribosome=REF", "--rescore-cut", "high"],
     "expected auto, none or a score"),
    (["--pick", "ribosome", "--tilt-range", "-50", "50"], "add --rescore"),
    (["--pick", "ribosome", "--rescore", "ribosome=REF", "--tilt-range", "60", "-60"],
     "the tilt range needs"),
])
def test_batch_refuses_a_bad_rescore_before_any_work(project, tmp_path, capsys, extra,
                                                     fragment):
    from napari_tomoseg import cli

    _, model, tomograms, _ = project
    files = {"REF": write_volume(tmp_path / "ref.mrc", np.random.default_rng(0).normal(
                 size=(20, 20, 20)).astype(np.float32), 20.0),
             "FLAT": write_volume(tmp_path / "flat.mrc", np.zeros((20, 20, 20), np.float32), 20.0),
             "ODD": write_volume(tmp_path / "odd.mrc", np.ones((21, 21, 21), np.float32), 20.0),
             "FINE": write_volume(tmp_path / "fine.mrc", np.random.default_rng(1).normal(
                 size=(20, 20, 20)).astype(np.float32), 10.0)}  # the tomograms are 20 A
    extra = [str(files[a.split("=")[1]]).join([a.split("=")[0] + "=", ""])
             if "=" in a and a.split("=")[1] in files else a for a in extra]
    out = tmp_path / "out"
    with pytest.raises(SystemExit) if "expected" in fragment else _nothing():
        code = cli.main(["batch", tomograms[0], "-m", model, "-o", str(out), *extra])
        assert code == 2
    assert fragment in capsys.readouterr().err
    assert not out.exists()


def _nothing():
    import contextlib

    return contextlib.nullcontext()


def test_batch_rescoring_follows_the_models_contrast(project, tmp_path):
    """A model trained on protein-white tomograms (invert) gets its picks scored on that
    contrast: white data scores as its dark negative does, not reversed."""
    from napari_tomoseg.batch_particles import rescore_picks
    from napari_tomoseg.io.particles import TomogramFrame
    from napari_tomoseg.synthetic.ribosome import reference_density

    _, _, tomograms, _ = project
    volume, _ = open_volume(tomograms[0])
    volume = volume.astype(np.float32)
    reference = write_volume(tmp_path / "ref.mrc", reference_density(20, 20.0), 20.0)
    frame = TomogramFrame("tomo0", volume.shape, 20.0)
    process_tomogram(tomograms[0], BatchSettings(models=(project[1],), output=str(tmp_path / "p"),
                                                 pick=("ribosome",)))
    table = read_star(tmp_path / "p" / "tomo0_ribosome.star")
    assert len(table) >= 3
    dark, _ = rescore_picks(volume, frame, table, str(reference), None, tmp_path / "d.star")
    white, _ = rescore_picks(-volume, frame, table, str(reference), None, tmp_path / "w.star",
                             white=True)
    reversed_, _ = rescore_picks(-volume, frame, table, str(reference), None,
                                 tmp_path / "r.star")
    np.testing.assert_allclose(white["reference_score"], dark["reference_score"], atol=1e-5)
    assert not np.allclose(reversed_["reference_score"], dark["reference_score"], atol=1e-3)


def test_batch_rescoring_gives_the_reference_the_tilt_series_wedge(project, tmp_path):
    """--tilt-range: a tilt series of +-40 degrees misses a wider wedge than the default +-60;
    the picks are scored as `tomoseg rescore --tilt-range -40 40` scores them, and a rerun with
    another range redoes them (the digest), where a run without rescoring keeps its digest."""
    from napari_tomoseg.averaging.template_scores import TemplateSettings, template_scores
    from napari_tomoseg.batch_particles import rescore_picks
    from napari_tomoseg.io.particles import TomogramFrame
    from napari_tomoseg.synthetic.ribosome import reference_density

    _, model, tomograms, _ = project
    volume = open_volume(tomograms[0])[0].astype(np.float32)
    density = reference_density(20, 20.0)
    reference = write_volume(tmp_path / "ref.mrc", density, 20.0)
    process_tomogram(tomograms[0], BatchSettings(models=(model,), output=str(tmp_path / "p"),
                                                 pick=("ribosome",)))
    table = read_star(tmp_path / "p" / "tomo0_ribosome.star")
    frame = TomogramFrame("tomo0", volume.shape, 20.0)
    default, _ = rescore_picks(volume, frame, table, str(reference), None, tmp_path / "a.star")
    narrow, _ = rescore_picks(volume, frame, table, str(reference), None, tmp_path / "b.star",
                              tilt_range=(-40.0, 40.0))
    expected = template_scores(volume, table[["z", "y", "x"]].to_numpy(float), density, 20.0,
                               TemplateSettings(tilt_min=-40.0, tilt_max=40.0))
    np.testing.assert_allclose(narrow["reference_score"], expected, atol=1e-5)
    assert not np.allclose(narrow["reference_score"], default["reference_score"], atol=1e-3)
    rescoring = dict(models=(model,), output="o", pick=("ribosome",),
                     rescore={"ribosome": str(reference)})
    assert BatchSettings(**rescoring, tilt_range=(-40.0, 40.0)).digest() \
        != BatchSettings(**rescoring).digest()
    plain = dict(models=(model,), output="o", pick=("ribosome",))
    assert BatchSettings(**plain, tilt_range=(-40.0, 40.0)).digest() == BatchSettings(**plain).digest()
