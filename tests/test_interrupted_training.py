"""A training that is stopped or cannot write its file must not lose the network.

Run as a user meets it: ``tomoseg train`` in its own process, stopped by
SIGTERM (what a cluster sends at the time limit) or Ctrl-C in the middle of a
step; a model file that no disk will take.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_tomoseg.annotations import boxes_from_truth, save_boxes
from napari_tomoseg.errors import OutputNotWritableError
from napari_tomoseg.io.mrc import write_volume
from napari_tomoseg.nn import model_file
from napari_tomoseg.nn.model_file import TrainedModel, load_model, save_model_or_rescue
from napari_tomoseg.nn.models import build_model
from napari_tomoseg.preprocess import PreprocessSettings

SHAPE = (16, 48, 48)


def _inputs(root: Path) -> tuple[str, str]:
    rng = np.random.default_rng(0)
    tomogram = rng.normal(size=SHAPE).astype(np.float32)
    truth = np.zeros(SHAPE, np.uint8)
    truth[:, 20:28, :] = 1
    tomogram[truth > 0] += 2.0
    path = write_volume(root / "t.mrc", tomogram, 10.0)
    save_boxes(root / "boxes", boxes_from_truth(truth, "membrane", 2, 4, size=16, seed=1))
    return str(path), str(root / "boxes")


def _stderr_until(process: subprocess.Popen, fragment: str, timeout: float = 120.0,
                  seen: list[str] | None = None) -> str:
    """Read the process's stderr in the background (into ``seen``, on after the return)
    until ``fragment`` shows (or it ends)."""
    seen = [] if seen is None else seen

    def read() -> None:
        for chunk in iter(lambda: process.stderr.read(1), ""):
            seen.append(chunk)

    threading.Thread(target=read, daemon=True).start()
    start = time.monotonic()
    while fragment not in "".join(seen) and process.poll() is None:
        if time.monotonic() - start > timeout:
            break
        time.sleep(0.05)
    return "".join(seen)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_training_keeps_its_model(tmp_path, stop):
    tomogram, boxes = _inputs(tmp_path)
    output = tmp_path / "m.pt"
    process = subprocess.Popen(
        [sys.executable, "-c", "import signal, sys; from napari_tomoseg.cli import main; "
         # a shell that starts jobs in the background hands them SIGINT ignored
         "signal.signal(signal.SIGINT, signal.default_int_handler); "
         "sys.exit(main(sys.argv[1:]))", "train", tomogram, "--boxes", boxes, "--feature",
         "membrane", "--steps", "100000", "--batch-size", "2", "--arch", "unet", "-o",
         str(output)], stderr=subprocess.PIPE, text=True)
    try:
        said: list[str] = []
        _stderr_until(process, "step 3/", seen=said)  # a few steps done; the next is running
        process.send_signal(stop)
        code = process.wait(timeout=120)
        time.sleep(0.5)  # the reader drains what the process wrote last
    finally:
        process.kill()
    assert code == (143 if stop == signal.SIGTERM else 130)
    assert f"{output}: the best model so far was saved" in "".join(said)
    model = load_model(output)  # the weights so far, in a complete model file
    assert model.feature == "membrane" and len(model.history) >= 3
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_a_model_no_disk_takes_is_one_clear_error(tmp_path, monkeypatch):
    """torch.save reports a full disk as RuntimeError, not OSError: it must still end as the
    one-line error naming both places tried (here every file is limited to 4 kB)."""
    monkeypatch.setattr(model_file.tempfile, "tempdir", str(tmp_path / "tmp"))
    torch.manual_seed(0)
    parameters = {"context": 1, "base": 4, "levels": 2}
    model = TrainedModel(network=build_model("unet", parameters).eval(), architecture="unet",
                         parameters=parameters, preprocess=PreprocessSettings(), voxel_size=10.0,
                         box_size=16, feature="membrane")
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it fails, no signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
    try:
        with pytest.raises(OutputNotWritableError, match="nor the fallback") as info:
            save_model_or_rescue(model, tmp_path / "m.pt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert str(tmp_path / "m.pt") in str(info.value)
    assert not (tmp_path / "m.pt").exists()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_a_training_that_fails_keeps_its_best_weights_beside_the_model(tmp_path):
    """An out-of-memory preview (or a divergence) steps in: the error is reported as it
    is, and the weights so far are in NAME.stopped.pt, not over the model file."""
    from napari_tomoseg.annotations import load_boxes
    from napari_tomoseg.errors import user_message
    from napari_tomoseg.io.mrc_read import open_volume
    from napari_tomoseg.jobs.progress import run_job
    from napari_tomoseg.jobs.train import train_feature
    from napari_tomoseg.nn.training import TrainingSettings

    tomogram, boxes = _inputs(tmp_path)
    asked = []

    def slice_in_view() -> int:
        asked.append(1)
        if len(asked) == 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return 8

    output = tmp_path / "m.pt"
    settings = TrainingSettings(steps=50, batch_size=2, architecture="unet", preview_every_s=0)
    with pytest.raises(torch.OutOfMemoryError) as info:
        run_job(train_feature(np.asarray(open_volume(tomogram)[0]), 10.0, load_boxes(boxes), "membrane",
                              settings, output=output, preview_z=slice_in_view))
    kept = tmp_path / "m.stopped.pt"
    assert info.value.kept_model == kept and not output.exists()
    assert len(load_model(kept).history) >= 3
    assert user_message(info.value) == ("out of memory: bin the tomogram or use a smaller "
                                        f"region. The best weights so far are kept in {kept}.")


def test_a_killed_training_keeps_its_best_weights_so_far(tmp_path):
    """kill -9 (a cluster's hard limit, a power cut) runs no handler: the checkpoint written
    while training holds the best weights so far, as a complete model file."""
    from napari_tomoseg.io.mrc_read import open_volume
    from napari_tomoseg.metrics import dice
    from napari_tomoseg.nn.inference import segment

    tomogram, boxes = _inputs(tmp_path)
    output = tmp_path / "m.pt"
    kept = tmp_path / "m.checkpoint.pt"
    script = (
        "import sys, numpy as np\n"
        "from napari_tomoseg.annotations import load_boxes\n"
        "from napari_tomoseg.io.mrc_read import open_volume\n"
        "from napari_tomoseg.jobs import checkpoints\n"
        "from napari_tomoseg.jobs.progress import run_job\n"
        "from napari_tomoseg.jobs.train import train_feature\n"
        "from napari_tomoseg.nn.training import TrainingSettings\n"
        "checkpoints.CHECKPOINT_EVERY_S = 0.0\n"
        "settings = TrainingSettings(steps=100000, batch_size=2, architecture='unet',\n"
        "                            min_steps=20, check_every=10, preview_every_s=1e9)\n"
        "volume = np.asarray(open_volume(sys.argv[1])[0])\n"
        "run_job(train_feature(volume, 10.0, load_boxes(sys.argv[2]), 'membrane', settings,\n"
        "                      output=sys.argv[3]))\n")
    process = subprocess.Popen([sys.executable, "-c", script, tomogram, boxes, str(output)],
                               stderr=subprocess.DEVNULL)
    try:
        start = time.monotonic()
        while not kept.exists() and process.poll() is None and time.monotonic() - start < 240:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    model = load_model(kept)
    assert model.info["checkpoint"] and model.info["held_out"]["step"] >= 20
    assert 0 < model.threshold < 1 and not output.exists()
    volume = np.asarray(open_volume(tomogram)[0])
    truth = np.zeros(SHAPE, bool)
    truth[:, 20:28, :] = True
    assert dice(segment(volume, model, 10.0) >= model.threshold, truth) > 0.5


def test_a_training_that_ends_removes_its_checkpoint(tmp_path, monkeypatch):
    """Only a training that did not end leaves NAME.stopped.pt; the model holds the rest."""
    from napari_tomoseg.annotations import load_boxes
    from napari_tomoseg.io.mrc_read import open_volume
    from napari_tomoseg.jobs import checkpoints
    from napari_tomoseg.jobs.progress import run_job
    from napari_tomoseg.jobs.train import train_feature
    from napari_tomoseg.nn.training import TrainingSettings

    monkeypatch.setattr(checkpoints, "CHECKPOINT_EVERY_S", 0.0)
    tomogram, boxes = _inputs(tmp_path)
    output = tmp_path / "m.pt"
    earlier = tmp_path / "m.stopped.pt"  # a failed run's weights, which the user was told of
    earlier.write_bytes(b"an earlier run's weights")
    settings = TrainingSettings(steps=60, batch_size=2, architecture="unet", min_steps=10,
                                check_every=10, patience=3, preview_every_s=1e9)
    seen = []
    job = train_feature(np.asarray(open_volume(tomogram)[0]), 10.0, load_boxes(boxes),
                        "membrane", settings, output=output)
    run_job(job, on_progress=lambda p: seen.append((tmp_path / "m.checkpoint.pt").exists()))
    assert any(seen), "no checkpoint was written while training"
    assert output.exists() and not (tmp_path / "m.checkpoint.pt").exists()
    assert earlier.read_bytes() == b"an earlier run's weights"


def test_a_training_without_held_out_checks_checkpoints_the_weights_it_would_keep(
        tmp_path, monkeypatch):
    """--no-early-stop has no held-out check to choose weights: the checkpoint holds the
    weights such a training keeps (the last), so a kill does not lose the run either."""
    import torch

    from napari_tomoseg.annotations import load_boxes
    from napari_tomoseg.io.mrc_read import open_volume
    from napari_tomoseg.jobs import checkpoints
    from napari_tomoseg.jobs.train import train_feature
    from napari_tomoseg.nn.training import TrainingSettings

    monkeypatch.setattr(checkpoints, "CHECKPOINT_EVERY_S", 0.0)
    tomogram, boxes = _inputs(tmp_path)
    output, kept = tmp_path / "m.pt", tmp_path / "m.checkpoint.pt"
    settings = TrainingSettings(steps=12, batch_size=2, architecture="unet", hold_out=False,
                                preview_every_s=1e9)
    job = train_feature(np.asarray(open_volume(tomogram)[0]), 10.0, load_boxes(boxes),
                        "membrane", settings, output=output)
    compared = 0
    try:
        while True:
            progress = next(job)
            live = progress.payload.model.network.state_dict()
            saved = load_model(kept).network.state_dict()  # written at this step
            assert all(torch.equal(live[k], saved[k]) for k in live)
            compared += 1
    except StopIteration:
        pass
    assert compared == 12
    assert output.exists() and not kept.exists()


def test_a_checkpoint_another_process_wrote_since_is_not_removed(tmp_path):
    from napari_tomoseg.jobs.checkpoints import Checkpoints

    parameters = {"context": 0, "base": 4, "levels": 2}
    model = TrainedModel(network=build_model("unet", parameters), architecture="unet",
                         parameters=parameters, preprocess=PreprocessSettings(), voxel_size=10.0,
                         box_size=16, feature="membrane")
    ours = Checkpoints(tmp_path / "m.pt", every_s=0.0)
    ours.offer(model)
    assert load_model(tmp_path / "m.checkpoint.pt").feature == "membrane"
    theirs = Checkpoints(tmp_path / "m.pt", every_s=0.0)  # a second window on the feature
    theirs.offer(model)
    ours.discard()
    assert (tmp_path / "m.checkpoint.pt").exists()
    theirs.discard()
    assert not (tmp_path / "m.checkpoint.pt").exists()


def test_a_snapshot_that_fails_does_not_end_the_training_and_is_made_afresh(tmp_path):
    """No memory for the copy must not stop a training; the next minute copies anew."""
    from napari_tomoseg.jobs.checkpoints import Checkpoints

    parameters = {"context": 0, "base": 4, "levels": 2}
    model = TrainedModel(network=build_model("unet", parameters), architecture="unet",
                         parameters=parameters, preprocess=PreprocessSettings(), voxel_size=10.0,
                         box_size=16, feature="membrane")

    def no_memory():
        raise MemoryError("no memory for a copy of the weights")

    checkpoints = Checkpoints(tmp_path / "m.pt", every_s=0.0)
    checkpoints.offer(None, no_memory)
    assert "no memory" in checkpoints.failed and not (tmp_path / "m.checkpoint.pt").exists()
    checkpoints.offer(None, lambda: model)
    assert checkpoints.failed is None and checkpoints.pending is None
    assert load_model(tmp_path / "m.checkpoint.pt").feature == "membrane"
