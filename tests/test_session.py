"""The session never loses annotations: one atomic generation, a backup, identity by voxels."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_tomoseg.annotations import Box
from napari_tomoseg.cli import main
from napari_tomoseg.errors import TomosegError
from napari_tomoseg.io.atomic import atomic_path, clean_stale_partials, is_partial, partial_path
from napari_tomoseg.io.mrc import write_volume
from napari_tomoseg.session import Session, data_checksum
from napari_tomoseg.session_open import open_session
from napari_tomoseg.session_store import BACKUP_FILE, SESSION_FILE, write_generation

SHAPE = (12, 40, 48)


@pytest.fixture
def volume():
    return np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)


def _state(session: Session) -> dict:
    """Everything restore must bring back: box fields and mask bytes, by id."""
    return {b.id: (b.feature, b.z, b.y, b.x, b.size, b.positive,
                   None if b.mask is None else np.asarray(b.mask).tobytes()) for b in session.boxes}


def _session_with_boxes(folder: Path, n: int = 4) -> Session:
    session = Session.create(folder, None, 10.0, SHAPE)
    for i in range(n):
        box = session.add_box("ribosome", i, 20.0, 20.0 + i, positive=i % 2 == 0, size=16)
        if box.mask is not None:
            box.mask[2:9, 3:4 + i] = 1
    session.save()
    return session


# one atomic generation -------------------------------------------------------------------

def _new_state_saver(folder: Path):
    """The save the kill test interrupts: a box deleted with its mask, a mask repainted, a box
    added (loaded in the child, so the parent's state is untouched)."""
    def save() -> None:
        session = Session.load(folder)
        session.boxes = [b for b in session.boxes if b.z != 0]
        next(b for b in session.boxes if b.positive).mask[:] = 1
        session.boxes.append(Box("membrane", 7, 30.0, 30.0, 16, True,
                                 np.eye(16, dtype=np.uint8), id="added"))
        session.save()
    return save


def _new_state(old: dict) -> dict:
    new = {k: v for k, v in old.items() if v[1] != 0}
    first = next(k for k, v in new.items() if v[5])
    feature, z, y, x, size, positive, _ = new[first]
    new[first] = (feature, z, y, x, size, positive, np.ones((size, size), np.uint8).tobytes())
    new["added"] = ("membrane", 7, 30.0, 30.0, 16, True, np.eye(16, dtype=np.uint8).tobytes())
    return new


@pytest.mark.parametrize("legacy", [False, True], ids=["generation", "version-1-session"])
def test_a_save_killed_between_any_two_file_operations_restores_old_or_new(tmp_path, legacy,
                                                                        run_killed_at):
    """SIGKILL before the k-th os.open/fsync/replace/rename/unlink of a save, for every k."""
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    folder = tmp_path / "s.tomoseg"
    session = _session_with_boxes(folder)
    if legacy:  # the layout of version 1: session.json + boxes.json + masks.npz
        from tests.conftest import _write_version1_box_folder

        _write_version1_box_folder(folder, session.boxes)
        record = session.record()
        (folder / SESSION_FILE).write_text(json.dumps(dict(record, version=1)))
    old = _state(Session.load(folder))
    new = _new_state(old)
    seen, k = [], 1
    while True:
        work = tmp_path / f"k{k}"
        shutil.copytree(folder, work)
        status = run_killed_at(k, _new_state_saver(work))
        restored = _state(Session.load(work))
        assert restored in (old, new), f"a mix after a kill at file operation {k}"
        seen.append("old" if restored == old else "new")
        if status == 0:  # the save ran to its end: no operation left to kill before
            break
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        k += 1
    assert seen[-1] == "new" and seen[0] == "old" and k >= 4, seen
    assert seen == sorted(seen, key=["old", "new"].index)  # once new, never old again


def test_a_damaged_current_file_falls_back_to_the_previous_generation(tmp_path):
    folder = tmp_path / "s.tomoseg"
    session = _session_with_boxes(folder, n=4)
    previous = _state(session)
    session.remove_boxes([session.boxes[0].id])  # generation n+1; generation n is the backup
    current = folder / SESSION_FILE
    text = current.read_text()
    for damage in (text[: len(text) // 2], text.replace('"z": 1', '"z": 5', 1)):
        current.write_text(damage)  # cut short / one value changed (its checksum no longer matches)
        restored = Session.load(folder)
        assert _state(restored) == previous
        assert "restored the previous save" in restored.note
    # the next save sets the damaged file aside and keeps the good backup
    restored.add_box("membrane", 3, 10.0, 10.0, positive=False, size=16)
    assert (folder / "session.damaged.json").exists()
    assert json.loads((folder / BACKUP_FILE).read_text())["sha1"]
    assert len(Session.load(folder).boxes) == len(previous) + 1
    first_damage = (folder / "session.damaged.json").read_text()
    current.write_text(text[:10])  # damaged again: set aside beside the first, not over it
    again = Session.load(folder)
    again.add_box("membrane", 4, 10.0, 10.0, positive=False, size=16)
    assert (folder / "session.damaged.json").read_text() == first_damage
    assert (folder / "session.damaged-2.json").read_text() == text[:10]
    current.write_text("{}")
    (folder / BACKUP_FILE).write_text("not json")
    with pytest.raises(TomosegError, match="cannot restore the session"):
        Session.load(folder)


def test_saving_is_cheap_and_restores_every_mask_exactly(tmp_path):
    folder = tmp_path / "s.tomoseg"
    session = Session.create(folder, None, 10.0, (40, 512, 512))
    rng = np.random.default_rng(1)
    session.boxes = [Box("ribosome", i % 40, 100.0, 100.0, 64, True,
                         (rng.random((64, 64)) > 0.5).astype(np.uint8)) for i in range(300)]
    session.save()
    assert _state(Session.load(folder)) == _state(session)
    assert (folder / SESSION_FILE).stat().st_size < 1_000_000  # random masks: the worst case


# identity by voxels, never a deleted session ---------------------------------------------

def test_the_data_checksum_ignores_the_header_and_sees_the_voxels(tmp_path, volume):
    a = data_checksum(volume)
    assert data_checksum(volume.astype(np.float64)) == a  # the storage mode is header too
    changed = volume.copy()
    changed[0, 0, 5] += 1.0  # a sampled slice and row
    assert data_checksum(changed) != a
    assert data_checksum(volume[:, :, :-1]) != data_checksum(volume[:, :, 1:])


def test_a_session_without_a_voxel_checksum_gets_one_and_survives_a_header_change(tmp_path,
                                                                                   volume):
    """Sessions of version 1 knew only the file's bytes: restored, they stayed so, and a
    later header edit started a new, empty session beside them."""
    tomogram = write_volume(tmp_path / "t.mrc", volume, 10.0, (0.0, 0.0, 0.0))
    folder = tmp_path / "t.mrc.tomoseg"
    session, _ = open_session(folder, str(tomogram), 10.0, SHAPE)
    session.add_box("ribosome", 3, 20.0, 20.0, positive=True, size=16)
    session.data_checksum = None  # as version 1 wrote it
    session.save()
    assert Session.load(folder).data_checksum is None
    restored, message = open_session(folder, str(tomogram), 10.0, SHAPE)
    assert message.startswith("Restored session: 1 boxes")
    assert Session.load(folder).data_checksum == data_checksum(volume)
    write_volume(tomogram, volume, 12.0, (5.0, 0.0, 0.0), overwrite=True)  # header only
    rebound, message = open_session(folder, str(tomogram), 12.0, SHAPE)
    assert rebound.folder == folder and len(rebound.boxes) == 1 and "rebound" in message


def test_a_session_follows_a_tomogram_whose_header_now_reads_at_its_start_indices(tmp_path,
                                                                                  volume):
    """Older versions read origin 0 where the start indices place a tomogram (as ChimeraX
    does now): its saved picks must move with the layer, not stay at origin 0."""
    import mrcfile

    from napari_tomoseg.io.particles import TomogramFrame
    from napari_tomoseg.layer_data import frame_from_metadata, frame_metadata
    from napari_tomoseg.picks_store import SavedPicks, load_picks, save_picks

    tomogram = write_volume(tmp_path / "t.mrc", volume, 10.0)
    with mrcfile.open(tomogram, "r+") as mrc:
        mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = 5, 6, 7
    folder = tmp_path / "t.mrc.tomoseg"
    session, _ = open_session(folder, str(tomogram), 10.0, SHAPE)
    session.origin = (0.0, 0.0, 0.0)  # as an older version saved it
    session.save()
    save_picks(folder, SavedPicks("ribosome", np.array([[1.0, 2.0, 3.0]]),
                                  pd.DataFrame({"score": [0.9]}),
                                  frame_metadata(TomogramFrame("t", SHAPE, 10.0))))
    _, message = open_session(folder, str(tomogram), 10.0, SHAPE)
    assert "origin as the header now reads" in message
    assert Session.load(folder).origin == (70.0, 60.0, 50.0)
    (picks,), _ = load_picks(folder)
    assert frame_from_metadata(picks.metadata).origin == (70.0, 60.0, 50.0)
    assert "origin" not in open_session(folder, str(tomogram), 10.0, SHAPE)[1]  # said once


def test_a_renamed_tomogram_is_told_where_its_session_is(tmp_path, volume, monkeypatch):
    """TS_01.mrc renamed TS_01_rec.mrc (or its folder made read-only, so sessions go to the
    data folder): an empty session started and the one with the boxes went unmentioned."""
    import napari_tomoseg.session_open as session_open

    data = tmp_path / "data"
    monkeypatch.setattr(session_open, "user_sessions_folder", lambda: data)
    tomogram = write_volume(tmp_path / "TS_01.mrc", volume, 10.0)
    session, _ = open_session(tmp_path / "TS_01.mrc.tomoseg", str(tomogram), 10.0, SHAPE)
    session.add_box("ribosome", 3, 20.0, 20.0, positive=True, size=16)
    renamed = tomogram.rename(tmp_path / "TS_01_rec.mrc")
    new, message = open_session(tmp_path / "TS_01_rec.mrc.tomoseg", str(renamed), 10.0, SHAPE)
    assert not new.boxes
    assert (f"Sessions of the same voxels: {tmp_path / 'TS_01.mrc.tomoseg'} (1 boxes, made for "
            "TS_01.mrc): to go on with one, choose it as the session folder.") in message
    _, elsewhere = open_session(data / "TS_01_rec.mrc.tomoseg", str(renamed), 10.0, SHAPE)
    assert "TS_01.mrc.tomoseg (1 boxes" in elsewhere  # from the data folder, the one beside
    other = write_volume(tmp_path / "other.mrc", volume + 1.0, 10.0)
    _, message = open_session(tmp_path / "other.mrc.tomoseg", str(other), 10.0, SHAPE)
    assert "same voxels" not in message  # other voxels: nothing to say


def test_models_trained_on_the_voxels_follow_a_changed_voxel_size(tmp_path, volume):
    """A header corrected after training (or a size typed): the models kept the old stamp,
    and Segment resampled the same voxels by 12 / 10 before the network saw them. A model
    of another voxel size, loaded from elsewhere, keeps its own."""
    from dataclasses import replace

    from napari_tomoseg.nn.model_file import load_model, save_model

    from .test_bad_inputs import _model

    tomogram = write_volume(tmp_path / "t.mrc", volume, 10.0)
    folder = tmp_path / "t.mrc.tomoseg"
    session, _ = open_session(folder, str(tomogram), 10.0, SHAPE)
    for feature, voxel in (("ribosome", 10.0), ("membrane", 7.0)):
        save_model(_model(feature, voxel), session.model_path(feature))
        session.register_model(feature)
    session.add_feature("carbon")  # loaded from another tomogram of the same header size
    loaded = _model("carbon", 10.0)
    save_model(replace(loaded, info={"loaded_from": "/elsewhere/carbon.pt"}),
               session.model_path("carbon"))
    session.register_model("carbon")
    write_volume(tomogram, volume, 12.0, overwrite=True)  # the header corrected
    _, message = open_session(folder, str(tomogram), 12.0, SHAPE)
    assert "model of 'ribosome', trained on these voxels, now reads 12 A" in message
    assert load_model(session.model_path("ribosome")).voxel_size == 12.0
    assert load_model(session.model_path("membrane")).voxel_size == 7.0
    assert load_model(session.model_path("carbon")).voxel_size == 10.0
    _, message = open_session(folder, str(tomogram), 13.5, SHAPE)  # a size typed
    assert "now reads 13.5 A" in message
    assert load_model(session.model_path("ribosome")).voxel_size == 13.5


def test_a_changed_header_rebinds_and_other_voxels_start_a_session_beside(tmp_path, volume):
    tomogram = write_volume(tmp_path / "t.mrc", volume, 10.0, (0.0, 0.0, 0.0))
    folder = tmp_path / "t.mrc.tomoseg"
    session, message = open_session(folder, str(tomogram), 10.0, SHAPE)
    assert message.startswith("New session")
    for i in range(6):
        session.add_box("ribosome", i, 20.0, 20.0, positive=True, size=16).mask[:4] = 1
    session.save()  # painting saves, as the widget does
    boxes = _state(session)
    from napari_tomoseg.io.particles import TomogramFrame
    from napari_tomoseg.layer_data import frame_from_metadata, frame_metadata
    from napari_tomoseg.picks_store import SavedPicks, load_picks, save_picks

    old_frame = TomogramFrame("t", SHAPE, 10.0, (0.0, 0.0, 0.0))
    save_picks(folder, SavedPicks("ribosome", np.array([[3.0, 20.0, 30.0]]),
                                  pd.DataFrame({"score": [0.9]}), frame_metadata(old_frame)))
    write_volume(tomogram, volume, 12.0, (100.0, -50.0, 7.0), overwrite=True)  # header only
    rebound, message = open_session(folder, str(tomogram), 12.0, SHAPE)
    assert rebound.folder == folder and _state(rebound) == boxes and len(boxes) == 6
    assert "rebound" in message and "origin 0 0 0 -> 7 -50 100" in message and "10 -> 12" in message
    # the saved picks (same voxels) now sit in the new header's Angstrom, as the boxes do
    assert "picks of 1 feature(s) moved" in message
    (picks,), _ = load_picks(folder)
    frame = frame_from_metadata(picks.metadata)
    assert frame.voxel_size == 12.0 and frame.origin == (100.0, -50.0, 7.0)
    np.testing.assert_allclose(frame.pixel_to_world(picks.points),
                               [[100.0 + 36.0, -50.0 + 240.0, 7.0 + 360.0]])
    assert Session.load(folder).voxel_size == 12.0 and Session.load(folder).origin == (100.0, -50.0, 7.0)
    assert open_session(folder, str(tomogram), 12.0, SHAPE)[1].startswith("Restored session: 6 boxes")
    # a voxel size typed before the restore: the session and its saved picks take it
    _, message = open_session(folder, str(tomogram), 6.0, SHAPE)
    assert "voxel size 12 -> 6 A" in message and Session.load(folder).voxel_size == 6.0
    (picks,), _ = load_picks(folder)
    assert frame_from_metadata(picks.metadata).voxel_size == 6.0
    open_session(folder, str(tomogram), 12.0, SHAPE)
    write_volume(tomogram, volume + 1.0, 12.0, (100.0, -50.0, 7.0), overwrite=True)  # other voxels
    other, message = open_session(folder, str(tomogram), 12.0, SHAPE)
    assert other.folder == tmp_path / "t.mrc-2.tomoseg" and not other.boxes
    assert "is kept" in message and _state(Session.load(folder)) == boxes
    # the new session is found again next time; the first is still untouched
    other.add_box("membrane", 1, 20.0, 20.0, positive=False, size=16)
    again, _ = open_session(folder, str(tomogram), 12.0, SHAPE)
    assert again.folder == other.folder and len(again.boxes) == 1
    assert _state(Session.load(folder)) == boxes
    with pytest.raises(TomosegError, match="already holds a session"):
        Session.create(folder, None, 10.0, SHAPE)


# the atomic-write helper -----------------------------------------------------------------

def test_a_failed_write_leaves_the_target_and_no_partial(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["out.txt"]
    with atomic_path(target, backup=tmp_path / "out.previous") as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and (tmp_path / "out.previous").read_text() == "old"


def test_a_kill_while_a_file_with_a_backup_is_replaced_leaves_the_file(tmp_path, monkeypatch):
    """The file replaced keeps its name until the new one takes it: a model, session or box
    file renamed aside first was missing after a kill between the two renames."""
    import napari_tomoseg.io.atomic as atomic

    target, backup = tmp_path / "m.pt", tmp_path / "m.previous.pt"
    target.write_text("good")
    replace = os.replace

    def killed_on_the_last_rename(source, destination):
        if Path(destination) == target:
            raise KeyboardInterrupt  # the process ends here
        replace(source, destination)

    monkeypatch.setattr(atomic.os, "replace", killed_on_the_last_rename)
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target, backup=backup) as tmp:
            tmp.write_text("new")
    assert target.read_text() == "good" and backup.read_text() == "good"
    assert sorted(os.listdir(tmp_path)) == ["m.previous.pt", "m.pt"]


def test_stale_partials_of_dead_processes_are_cleaned_and_refused(tmp_path, volume, capsys):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    mine = partial_path(tmp_path / "t.mrc")
    stale = tmp_path / mine.name.replace(f"-{os.getpid()}-", f"-{dead}-")
    alive = tmp_path / mine.name.replace(f"-{os.getpid()}-", f"-{os.getppid()}-")
    elsewhere = tmp_path / ".t.mrc.tomoseg-partial-otherhost-1-abcdef12"
    legacy = tmp_path / ".t.mrc.1a2b3c.partial"
    write_volume(tmp_path / "t.mrc", volume, 10.0)
    for path in (stale, alive, elsewhere, legacy):
        os.link(tmp_path / "t.mrc", path)
        assert is_partial(path)
    assert not is_partial(tmp_path / "t.mrc")
    assert main(["info", str(stale)]) == 2  # a full-size partial with a valid header is refused
    assert "unfinished output" in capsys.readouterr().err
    # a fixed-name ".*.partial" may be another program's: refused by readers, never deleted
    assert clean_stale_partials(tmp_path) == [stale]
    assert alive.exists() and elsewhere.exists() and legacy.exists()
    assert (tmp_path / "t.mrc").exists()


def test_train_reads_the_boxes_of_a_session_folder(tmp_path, tiny_files, tiny_result):
    """``train --boxes`` takes a session folder: its boxes now live in session.json."""
    from napari_tomoseg.annotations import boxes_from_truth
    from napari_tomoseg.nn.model_file import load_model

    folder = tmp_path / "s.tomoseg"
    session = Session.create(folder, None, 20.0, tiny_result.tomogram.shape, ("ribosome",))
    session.boxes = boxes_from_truth(tiny_result.cell.labels["ribosome"], "ribosome", 3, 6, 32)
    session.save()
    assert not (folder / "boxes.json").exists()
    model = tmp_path / "r.pt"
    assert main(["train", str(tiny_files["tomogram"]), "--boxes", str(folder), "--feature",
                 "ribosome", "--steps", "2", "--batch-size", "2", "--device", "cpu",
                 "-o", str(model)]) == 0
    assert load_model(model).info["positives"] == 3 and load_model(model).info["negatives"] == 6


def test_features_whose_files_would_coincide_are_refused(tmp_path):
    """'ribosome 80S', 'ribosome/80S' and 'ribosome_80S' all save as ribosome_80S.pt: the
    second once overwrote the first's model and map (and 'Ribosome' on a Mac's disk)."""
    session = Session.create(tmp_path / "s", None, 10.0, SHAPE)
    session.add_feature("ribosome 80S")
    for clash in ("ribosome/80S", "ribosome_80S", "Ribosome 80s"):
        with pytest.raises(TomosegError, match="share its model and map files"):
            session.add_feature(clash)
    session.add_feature("vesicle")
    with pytest.raises(TomosegError, match="share"):
        session.rename_feature("vesicle", "ribosome_80S")
    session.rename_feature("ribosome 80S", "ribosome_80S")  # its own files: allowed
    assert session.model_path("ribosome_80S") != session.model_path("vesicle")


def test_a_model_saved_by_a_training_the_session_never_recorded_is_restored(tmp_path, tiny_files,
                                                                            tiny_result):
    """The dock records a model when its training reports back; a viewer closed mid-training
    never heard back, and the model on disk was lost to the restored session."""
    from napari_tomoseg.annotations import boxes_from_truth
    from napari_tomoseg.jobs import run_job
    from napari_tomoseg.jobs.train import train_feature
    from napari_tomoseg.nn.model_file import load_model
    from napari_tomoseg.nn.training import TrainingSettings

    tomogram = str(tiny_files["tomogram"])
    session, _ = open_session(tmp_path / "s.tomoseg", tomogram, 20.0, tiny_result.tomogram.shape)
    session.boxes = boxes_from_truth(tiny_result.cell.labels["ribosome"], "ribosome", 3, 6, 32)
    session.begin_training("ribosome")  # as the dock does; it never heard back
    run_job(train_feature(tiny_result.tomogram, 20.0, session.boxes, "ribosome",
                          TrainingSettings(steps=2, batch_size=2, hold_out=False),
                          output=session.model_path("ribosome")))
    assert Session.load(session.folder).models == {}  # what the closed viewer left
    restored, message = open_session(session.folder, tomogram, 20.0, tiny_result.tomogram.shape)
    assert list(restored.models) == ["ribosome"] and "'ribosome'" in message
    assert load_model(restored.folder / restored.models["ribosome"]).feature == "ribosome"
    assert Session.load(session.folder).models == restored.models  # recorded for good
    again, message = open_session(session.folder, tomogram, 20.0, tiny_result.tomogram.shape)
    assert "saved by a training" not in message
    # the model file of a removed feature is not taken for a new feature of that name
    again.remove_feature("ribosome")
    again.add_feature("ribosome")
    last, message = open_session(session.folder, tomogram, 20.0, tiny_result.tomogram.shape)
    assert last.models == {} and "saved by a training" not in message


def test_a_killed_training_of_a_trained_feature_is_not_called_saved(tmp_path, tiny_files,
                                                                   tiny_result):
    """A kill mid-training of a feature with a model: the restore said the model was 'saved
    by a training that ended with the viewer' while it was the one from before (a trial)."""
    tomogram = str(tiny_files["tomogram"])
    session, _ = open_session(tmp_path / "s.tomoseg", tomogram, 20.0, tiny_result.tomogram.shape)
    session.model_path("ribosome").parent.mkdir(parents=True)
    session.model_path("ribosome").write_bytes(b"the model before")
    session.register_model("ribosome")
    session.begin_training("ribosome")  # then the process was killed
    restored, message = open_session(session.folder, tomogram, 20.0, tiny_result.tomogram.shape)
    assert "saved by a training" not in message
    assert "The training of 'ribosome' ended with the viewer" in message
    assert "perhaps from before it" in message
    assert list(restored.models) == ["ribosome"]
    session, _ = open_session(tmp_path / "t.tomoseg", tomogram, 20.0, tiny_result.tomogram.shape)
    session.begin_training("membrane")  # killed before it saved anything
    _, message = open_session(session.folder, tomogram, 20.0, tiny_result.tomogram.shape)
    assert "The training of 'membrane' ended with the viewer: no model was saved." in message
    assert "best weights so far" not in message
    session, _ = open_session(tmp_path / "u.tomoseg", tomogram, 20.0, tiny_result.tomogram.shape)
    session.begin_training("membrane")
    checkpoint = session.model_path("membrane").with_name("membrane.checkpoint.pt")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_bytes(b"a checkpoint")  # killed after its first checkpoint
    _, message = open_session(session.folder, tomogram, 20.0, tiny_result.tomogram.shape)
    assert f"no model was saved. Its best weights so far are in {checkpoint} (load" in message


def test_hand_set_thresholds_follow_renames_and_survive_an_unfinished_retrain(tmp_path):
    """A review: renaming a trained feature dropped its hand-set threshold from the file, and
    a restore after an unfinished retrain dropped it too (the model was the same file)."""
    session = Session.create(tmp_path / "s", None, 10.0, (4, 32, 32))
    session.model_path("ribosome").parent.mkdir(parents=True)
    session.model_path("ribosome").write_bytes(b"a model")
    session.register_model("ribosome")
    session.thresholds["ribosome"] = 0.7
    session.begin_training("ribosome")  # a retrain that never reported back
    restored, _ = open_session(session.folder, None, 10.0, (4, 32, 32))
    assert restored.thresholds == {"ribosome": 0.7}
    restored.rename_feature("ribosome", "80S")
    restored.model_path("80S").write_bytes(b"a model")
    restored.register_model("80S", fresh=False)  # what the dock's rename does
    assert Session.load(restored.folder).thresholds == {"80S": 0.7}
    restored.register_model("80S")  # a newly trained model brings its own threshold
    assert Session.load(restored.folder).thresholds == {}


def test_two_copies_of_a_session_never_save_over_each_other(tmp_path):
    """Two viewers on one session folder: the last save wrote its own copy whole, and the
    other's boxes were gone, from the backup too."""
    from napari_tomoseg.session import CONFLICT_FILE

    Session.create(tmp_path, None, 10.0, (8, 64, 64))
    a, b = Session.load(tmp_path), Session.load(tmp_path)
    a.add_box("membrane", 2, 20.0, 20.0, False, size=16)
    a.add_box("membrane", 3, 20.0, 20.0, False, size=16)
    mask = np.ones((16, 16), np.uint8)
    with pytest.raises(TomosegError, match="saved by another viewer or process"):
        b.add_box("ribosome", 4, 30.0, 30.0, True, size=16, mask=mask)
    assert [x.feature for x in Session.load(tmp_path).boxes] == ["membrane", "membrane"]
    kept = tmp_path / "kept"  # b's work is kept, as a session of its own
    kept.mkdir()
    shutil.copy(tmp_path / CONFLICT_FILE, kept / SESSION_FILE)
    assert [(x.feature, x.positive) for x in Session.load(kept).boxes] == [("ribosome", True)]
    with pytest.raises(TomosegError, match="another viewer"):
        b.remove_feature("membrane")  # refused before any file moves
    assert "membrane" in Session.load(tmp_path).feature_names()
    c = Session.load(tmp_path)  # opened again: goes on
    c.add_box("ribosome", 4, 30.0, 30.0, True, size=16, mask=mask)
    assert len(Session.load(tmp_path).boxes) == 3
    with pytest.raises(TomosegError, match="another viewer"):
        a.add_box("membrane", 5, 20.0, 20.0, False, size=16)  # a is behind c now


def test_a_session_of_another_shape_is_never_restored_onto_a_layer_without_a_file(tmp_path):
    """A layer with no file has no fingerprint, so any session of its name was restored onto
    it: an 8 x 64 x 64 session's boxes on a 100 x 512 x 512 volume."""
    folder = tmp_path / "layer.tomoseg"
    first, _ = open_session(folder, None, 10.0, (8, 64, 64))
    first.add_box("membrane", 2, 20.0, 20.0, False, size=16)
    other, message = open_session(folder, None, 10.0, (100, 512, 512))
    assert other.folder != folder and not other.boxes and "is kept" in message
    again, message = open_session(folder, None, 10.0, (8, 64, 64))
    assert again.folder == folder and len(again.boxes) == 1


def test_the_active_feature_is_saved_and_follows_a_rename_and_a_removal(tmp_path):
    """Written with the next change; a session file from before it loads with none."""
    folder = tmp_path / "s"
    session = Session.create(folder, None, 10.0, SHAPE)
    session.active = "ribosome"
    session.add_box("ribosome", 2, 20.0, 20.0, False)
    assert Session.load(folder).active == "ribosome"
    session.rename_feature("ribosome", "70S")
    assert Session.load(folder).active == "70S"
    session.remove_feature("70S")
    assert Session.load(folder).active == "membrane"
    old = Session.load(folder)
    record = old.record()
    record.pop("active")  # as written before it existed
    write_generation(folder, record, old.boxes)
    assert Session.load(folder).active is None
