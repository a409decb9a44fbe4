"""A feature's files follow its name: a new feature never takes a removed or renamed one's."""

from __future__ import annotations

import numpy as np
import pytest
import pandas as pd

from napari_tomoseg.io.mrc import write_volume
from napari_tomoseg.picks_store import SavedPicks, load_picks, picks_path, save_picks
from napari_tomoseg.session import Session

SHAPE = (8, 32, 32)


def _session_with_files(folder, feature="ribosome") -> Session:
    """A session whose feature has a model (and the one it replaced), a map and picks."""
    session = Session.create(folder, None, 10.0, SHAPE)
    if feature not in session.feature_names():
        session.add_feature(feature)
    session.model_path(feature).parent.mkdir(parents=True, exist_ok=True)
    session.model_path(feature).write_bytes(b"old model")
    session.model_path(feature).with_name(
        session.model_path(feature).stem + ".previous.pt").write_bytes(b"older model")
    session.register_model(feature)
    session.segmentation_path(feature).parent.mkdir(parents=True, exist_ok=True)
    write_volume(session.segmentation_path(feature), np.full(SHAPE, 0.9, np.float32), 10.0)
    values = pd.DataFrame({"score": [0.8, 0.7], "status": np.array([1, -1], np.int64)})
    save_picks(folder, SavedPicks(feature, np.array([[1.0, 2, 3], [4, 5, 6]]), values))
    return session


def test_a_removed_features_files_are_kept_aside_not_taken_by_a_new_one(tmp_path):
    session = _session_with_files(tmp_path)
    session.remove_feature("ribosome")
    aside = list((tmp_path / "removed").iterdir())
    assert len(aside) == 1  # nothing deleted: model, previous model, map and picks kept
    kept = sorted(p.relative_to(aside[0]).as_posix() for p in aside[0].rglob("*") if p.is_file())
    assert kept == sorted(["models/ribosome.pt", "models/ribosome.previous.pt",
                           "picks/ribosome.json", "segmentations/ribosome.mrc"])  # no boxes
    # a new feature of the same name starts clean: no map, no picks, no model adopted
    session.add_feature("ribosome")
    session.begin_training("ribosome")  # ... and the viewer closed before it saved a model
    assert not session.segmentation_path("ribosome").exists()
    assert load_picks(tmp_path) == ([], [])
    assert Session.load(tmp_path).adopt_saved_models() == []


def test_a_renamed_feature_takes_its_model_map_and_picks_along(tmp_path):
    session = _session_with_files(tmp_path)
    session.rename_feature("ribosome", "70S ribosome")
    new = "70S ribosome"
    assert session.model_path(new).read_bytes() == b"old model"
    assert (tmp_path / session.models[new]) == session.model_path(new)
    assert session.segmentation_path(new).exists()
    (picks,), problems = load_picks(tmp_path)
    assert problems == [] and picks.feature == new and picks.values["status"].tolist() == [1, -1]
    assert picks_path(tmp_path, new).exists() and not picks_path(tmp_path, "ribosome").exists()
    # nothing is left under the old name for a new feature called so
    assert not session.model_path("ribosome").exists()
    assert not session.segmentation_path("ribosome").exists()
    reloaded = Session.load(tmp_path)
    assert reloaded.models == {new: "models/70S_ribosome.pt"}


def test_a_rename_onto_files_left_under_the_new_name_sets_those_aside(tmp_path):
    session = _session_with_files(tmp_path)
    stale = session.model_path("proteasome")
    stale.write_bytes(b"someone else's model")
    session.rename_feature("ribosome", "proteasome")
    assert session.model_path("proteasome").read_bytes() == b"old model"
    kept = list((tmp_path / "removed").rglob("proteasome.pt"))
    assert len(kept) == 1 and kept[0].read_bytes() == b"someone else's model"


def test_a_rename_that_keeps_the_file_name_still_renames_the_picks(tmp_path):
    """'ribosome 70S' and 'ribosome_70S' name the same files; the picks must say the new name."""
    session = _session_with_files(tmp_path, "ribosome 70S")
    session.rename_feature("ribosome 70S", "ribosome_70S")
    (picks,), problems = load_picks(tmp_path)
    assert problems == [] and picks.feature == "ribosome_70S"
    assert session.model_path("ribosome_70S").read_bytes() == b"old model"


def test_files_left_under_a_new_name_are_set_aside_even_if_the_renamed_feature_has_none(
        tmp_path):
    session = Session.create(tmp_path, None, 10.0, SHAPE)
    left = session.segmentation_path("proteasome")
    left.parent.mkdir(parents=True)
    left.write_bytes(b"a map of a feature removed long ago")
    session.rename_feature("membrane", "proteasome")
    assert not left.exists()
    assert [p.read_bytes() for p in (tmp_path / "removed").rglob("proteasome.mrc")] == \
        [b"a map of a feature removed long ago"]


def test_a_rename_whose_files_cannot_move_changes_nothing(tmp_path):
    session = _session_with_files(tmp_path)
    blocked = session.segmentation_path("proteasome")
    (blocked / "in the way").mkdir(parents=True)  # a folder where the map would go
    with pytest.raises(OSError):
        session.rename_feature("ribosome", "proteasome")
    assert session.model_path("ribosome").read_bytes() == b"old model"  # moved back
    assert not session.model_path("proteasome").exists()
    reloaded = Session.load(tmp_path)
    assert "ribosome" in reloaded.feature_names() and "proteasome" not in reloaded.feature_names()
    assert reloaded.models == {"ribosome": "models/ribosome.pt"}


def test_a_removal_whose_files_cannot_move_keeps_the_feature(tmp_path):
    session = _session_with_files(tmp_path)
    (tmp_path / "removed").write_text("a file where the folder would go")
    with pytest.raises(OSError):
        session.remove_feature("ribosome")
    assert "ribosome" in Session.load(tmp_path).feature_names()


def test_a_removal_that_fails_halfway_puts_back_what_it_moved(tmp_path, monkeypatch):
    import os

    from napari_tomoseg import feature_files

    session = _session_with_files(tmp_path)
    calls = []

    def replace(source, target):
        calls.append(source)
        if len(calls) == 2:  # the second file is locked (a map open on Windows)
            raise PermissionError("in use")
        return os.rename(source, target)

    monkeypatch.setattr(feature_files.os, "replace", replace)
    with pytest.raises(OSError):
        session.remove_feature("ribosome")
    monkeypatch.undo()
    assert session.model_path("ribosome").read_bytes() == b"old model"  # put back
    assert "ribosome" in Session.load(tmp_path).feature_names()


def test_a_removed_features_boxes_and_masks_are_kept_aside_as_a_session(tmp_path):
    """Removing a feature dropped its boxes with no copy: two saves later even the session's
    backup held none of them. They are now kept beside its files, as a session of it alone."""
    session = _session_with_files(tmp_path)
    mask = np.zeros((16, 16), np.uint8)
    mask[4:9, 2:14] = 1
    session.add_box("ribosome", 3, 10.0, 12.0, True, size=16, mask=mask)
    session.add_box("ribosome", 5, 20.0, 20.0, False, size=16)
    session.add_box("membrane", 4, 16.0, 16.0, False, size=16)
    removed, aside = session.remove_feature("ribosome")
    assert removed == 2 and aside.parent == tmp_path / "removed"
    session.add_box("membrane", 2, 16.0, 16.0, False, size=16)  # two more saves
    session.add_box("membrane", 6, 16.0, 16.0, False, size=16)
    kept = Session.load(aside)
    assert kept.feature_names() == ["ribosome"] and kept.models == {}
    assert [(b.z, b.positive) for b in kept.boxes] == [(3, True), (5, False)]
    np.testing.assert_array_equal(kept.boxes[0].mask, mask)
    assert (aside / "models" / "ribosome.pt").read_bytes() == b"old model"  # the files too
    assert [b.feature for b in Session.load(tmp_path).boxes] == ["membrane"] * 3
    # a feature with boxes and no files: its boxes alone are kept
    session.add_feature("proteasome")
    session.add_box("proteasome", 1, 8.0, 8.0, False, size=16)
    removed, aside = session.remove_feature("proteasome")
    assert removed == 1 and [p.name for p in aside.iterdir()] == ["session.json"]
    assert session.remove_feature("membrane")[1] is not None
    session.add_feature("empty")
    assert session.remove_feature("empty") == (0, None)  # nothing to keep: no folder


@pytest.mark.parametrize("action", ["remove", "rename"])
def test_a_failed_save_after_a_feature_s_files_moved_puts_everything_back(tmp_path, monkeypatch,
                                                                         action):
    """The files moved, the save failed (a full disk): the restore then looked for them under
    names that no longer existed. Now the files and the session go back as they were."""
    import errno

    from napari_tomoseg import session as session_module

    session = _session_with_files(tmp_path)
    session.add_box("ribosome", 3, 10.0, 12.0, False, size=16)
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                    if p.is_file() and "removed" not in p.parts)

    original = session_module.write_generation

    def full(folder, *args, **kwargs):  # the session's own save fails; the copy aside works
        if folder == tmp_path:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(folder, *args, **kwargs)

    monkeypatch.setattr(session_module, "write_generation", full)
    with pytest.raises(OSError, match="No space"):
        if action == "remove":
            session.remove_feature("ribosome")
        else:
            session.rename_feature("ribosome", "80S")
    monkeypatch.undo()
    after = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")
                   if p.is_file() and "removed" not in p.parts)
    assert after == before  # every file back under its name
    assert "ribosome" in session.feature_names() and "80S" not in session.feature_names()
    assert [b.feature for b in session.boxes] == ["ribosome"]
    assert (tmp_path / session.models["ribosome"]).read_bytes() == b"old model"
    restored = Session.load(tmp_path)
    assert (tmp_path / restored.models["ribosome"]).is_file()
    session.rename_feature("ribosome", "80S")  # and the next try works
    assert Session.load(tmp_path).feature_names()[-1] == "80S"


def test_earlier_models_move_down_and_follow_a_rename(tmp_path):
    """Each training kept only the model it replaced: the third deleted the first."""
    from napari_tomoseg.feature_files import (MODEL_GENERATIONS, older_model_files,
                                              shift_previous_models)

    session = _session_with_files(tmp_path)
    model = session.model_path("ribosome")
    for n in range(MODEL_GENERATIONS + 1):
        shift_previous_models(model)
        older_model_files(model)[0].write_bytes(f"generation {n}".encode())
    kept = [p.read_bytes().decode() for p in older_model_files(model)]
    assert kept == [f"generation {n}" for n in range(MODEL_GENERATIONS, 0, -1)]  # 0 went
    conflict = picks_path(tmp_path, "ribosome").with_name("ribosome.json.conflict-2")
    conflict.write_text("another window's picks")
    session.rename_feature("ribosome", "ribo")
    assert [p.read_bytes().decode() for p in older_model_files(session.model_path("ribo"))] \
        == kept
    assert picks_path(tmp_path, "ribo").with_name("ribo.json.conflict-2").read_text() \
        == "another window's picks"  # a conflict copy follows too
