"""The session's picks files: round trips, empty tables, damaged files, earlier picks kept."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import pandas as pd

from napari_tomoseg.picks_store import (SavedPicks, keep_previous, load_picks, picks_path,
                                        save_picks)


def _picks(feature="ribosome", n=3) -> SavedPicks:
    values = pd.DataFrame({"score": np.linspace(0.5, 0.9, n), "size": np.arange(n) + 40,
                           "roundness": np.full(n, 0.4), "score_norm": np.linspace(0.5, 1, n),
                           "status": np.zeros(n, np.int64)})
    if n:
        values.loc[n - 1, "score"] = np.nan  # a point added by hand
    return SavedPicks(feature, np.arange(3 * n, dtype=float).reshape(n, 3), values,
                      {"tomoseg": {"tomo_name": "t", "shape": [20, 64, 64]}}, 0.25, 250.0)


def test_picks_round_trip_with_their_types_and_no_scores(tmp_path):
    save_picks(tmp_path, _picks())
    (back,), problems = load_picks(tmp_path)
    assert problems == []
    np.testing.assert_array_equal(back.points, _picks().points)
    assert back.values["status"].dtype.kind == "i" and back.values["size"].dtype.kind == "i"
    assert np.isnan(back.values["score"].iloc[-1]) and back.values["score"].dtype.kind == "f"
    assert back.min_score == 0.25 and back.diameter == 250.0


def test_an_empty_table_keeps_its_column_types(tmp_path):
    """0 picks came back with every column int64: a point then added by hand got score 1."""
    save_picks(tmp_path, _picks(n=0))
    (back,), _ = load_picks(tmp_path)
    assert len(back.points) == 0
    assert {c: back.values[c].dtype.kind for c in back.values} == \
        {"score": "f", "size": "i", "roundness": "f", "score_norm": "f", "status": "i"}


def test_a_damaged_file_is_said_and_the_others_load(tmp_path):
    save_picks(tmp_path, _picks("ribosome"))
    save_picks(tmp_path, _picks("proteasome"))
    picks_path(tmp_path, "proteasome").write_text('{"version": 1, "points": [[1, 2')
    found, problems = load_picks(tmp_path)
    assert [p.feature for p in found] == ["ribosome"]
    assert len(problems) == 1 and "proteasome.json" in problems[0]


def test_earlier_picks_are_kept_before_new_ones_replace_them(tmp_path):
    assert keep_previous(tmp_path, "ribosome") is None
    save_picks(tmp_path, _picks())
    kept = keep_previous(tmp_path, "ribosome")
    assert kept.name == "ribosome.json.previous" and kept.exists()
    assert load_picks(tmp_path) == ([], [])  # not taken for a feature's current picks


def test_a_deleted_session_folder_is_not_made_again(tmp_path):
    import pytest

    with pytest.raises(OSError):
        save_picks(tmp_path / "gone", _picks())
    assert not (tmp_path / "gone").exists()


def test_every_earlier_set_of_picks_is_kept(tmp_path):
    """A third pick of a feature wrote over the first one's judgements (a trial)."""
    for n in range(3):
        save_picks(tmp_path, _picks(n=n + 1))
        keep_previous(tmp_path, "ribosome")
    kept = sorted(p.name for p in (tmp_path / "picks").iterdir())
    assert kept == ["ribosome.json.previous", "ribosome.json.previous-2",
                    "ribosome.json.previous-3"]


def test_a_copy_of_a_picks_file_never_wins_and_statuses_must_be_judgements(tmp_path):
    save_picks(tmp_path, _picks())
    copy = tmp_path / "picks" / "0_backup.json"  # sorts first; was restored instead
    copy.write_text(picks_path(tmp_path, "ribosome").read_text())
    found, problems = load_picks(tmp_path)
    assert [p.feature for p in found] == ["ribosome"] and len(problems) == 1
    assert "0_backup.json" in problems[0] and "not shown" in problems[0]
    copy.unlink()
    record = json.loads(picks_path(tmp_path, "ribosome").read_text())
    record["rows"][0][-1] = "yes"  # edited by hand: it became NaN, neither kept nor judged
    picks_path(tmp_path, "ribosome").write_text(json.dumps(record))
    found, problems = load_picks(tmp_path)
    assert found == [] and "status must be -1 (rejected), 0 (not judged) or 1" in problems[0]


def test_a_killed_writers_partial_files_are_removed_from_session_subfolders(tmp_path):
    from napari_tomoseg.io.atomic import partial_path
    from napari_tomoseg.session import Session

    session = Session.create(tmp_path / "s", None, 10.0, (4, 32, 32))
    (session.folder / "segmentations").mkdir()
    partial = partial_path(session.segmentation_path("ribosome"))
    dead = partial.with_name(partial.name.replace(f"-{os.getpid()}-", "-999999-"))
    dead.write_bytes(b"half a map")
    Session.load(session.folder)
    assert not dead.exists()


def test_a_second_conflict_never_replaces_the_first_windows_copy(tmp_path):
    """Window A's picks kept in FEATURE.json.conflict were replaced by window B's at B's
    conflict: A's judgements were gone."""
    import pandas as pd

    from napari_tomoseg.picks_store import (PicksConflictError, SavedPicks, file_stamp,
                                            picks_path, save_picks, save_picks_checked)

    def picks(status):
        return SavedPicks("ribosome", np.array([[1.0, 2.0, 3.0]]),
                          pd.DataFrame({"score": [0.9], "status": [status]}))

    save_picks(tmp_path, picks(0))
    stale = file_stamp(picks_path(tmp_path, "ribosome"))
    save_picks(tmp_path, picks(1))  # another window, since
    kept = []
    for status in (-1, 1):
        with pytest.raises(PicksConflictError) as raised:
            save_picks_checked(tmp_path, picks(status), stale)
        kept.append(raised.value.kept)
    assert kept[0] != kept[1] and all(p.is_file() for p in kept)
    assert [json.loads(p.read_text())["rows"][0][-1] for p in kept] == [-1, 1]
