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


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_result):
    folder = tmp_path_factory.mktemp("batch")
    boxes = boxes_from_truth(tiny_result.cell.labels["ribosome"], "ribosome", 5, 10, 32, seed=0)
    model = train(tiny_result.tomogram, boxes, 20.0, TrainingSettings(
        steps=20, batch_size=8, parameters={"base": 8, "levels": 2, "context": 1}))
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
    assert len({r["worker_pid"] for r in rows if r["status"] == "done"}) >= 1
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
