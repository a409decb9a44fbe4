"""A box folder (``tomoseg boxes``, ``train --boxes``) is saved whole: old or new, never a mix."""

from __future__ import annotations

import json
import os
import shutil
import signal

import numpy as np
import pytest

from napari_tomoseg.annotations import (BOXES_BACKUP_FILE, BOXES_FILE, MASKS_FILE, Box,
                                        load_boxes, save_boxes)
from napari_tomoseg.errors import InvalidBoxesError


def _old_boxes() -> list[Box]:
    boxes = []
    for i in range(4):
        mask = np.zeros((16, 16), np.uint8) if i % 2 == 0 else None
        if mask is not None:
            mask[2:9, 3:4 + i] = 1
        boxes.append(Box("ribosome", i, 20.0, 20.0 + i, 16, i % 2 == 0, mask, id=f"b{i}"))
    return boxes


def _new_boxes(old: list[Box]) -> list[Box]:
    """A box deleted with its mask, a mask repainted, a box added."""
    new = [Box(b.feature, b.z, b.y, b.x, b.size, b.positive,
               None if b.mask is None else b.mask.copy(), b.id) for b in old if b.z != 0]
    next(b for b in new if b.positive).mask[:] = 1
    new.append(Box("membrane", 7, 30.0, 30.0, 16, True, np.eye(16, dtype=np.uint8), id="added"))
    return new


def _state(boxes: list[Box]) -> dict:
    return {b.id: (b.feature, b.z, b.y, b.x, b.size, b.positive,
                   None if b.mask is None else np.asarray(b.mask, np.uint8).tobytes())
            for b in boxes}


@pytest.mark.parametrize("layout", ["generation", "version-1", "first-save-after-a-save"])
def test_a_box_save_killed_between_any_two_file_operations_loads_old_or_new(
        tmp_path, layout, version1_box_folder, run_killed_at):
    """SIGKILL before the k-th file operation of save_boxes, for every k: load_boxes gives
    the old boxes with their masks or the new ones, never new boxes with old masks."""
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    folder = tmp_path / "boxes"
    old = _old_boxes()
    if layout == "version-1":  # boxes.json + masks.npz of versions before 2
        version1_box_folder(folder, old)
    elif layout == "generation":
        save_boxes(folder, old)
    else:  # a version-1 folder saved once: its backup is version 1, masks.npz still there
        version1_box_folder(folder, [b for b in old if b.z != 3])
        save_boxes(folder, old)
    assert _state(load_boxes(folder)) == _state(old)
    new = _new_boxes(old)
    seen, k = [], 1
    while True:
        work = tmp_path / f"k{k}"
        shutil.copytree(folder, work)
        status = run_killed_at(k, lambda: save_boxes(work, new))
        restored = _state(load_boxes(work))
        assert restored in (_state(old), _state(new)), f"a mix after a kill at file operation {k}"
        seen.append("old" if restored == _state(old) else "new")
        if status == 0:  # the save ran to its end: no operation left to kill before
            break
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        k += 1
    assert seen[0] == "old" and seen[-1] == "new" and k >= 4, seen
    assert seen == sorted(seen, key=["old", "new"].index)  # once new, never old again
    # a finished save is one file; masks.npz goes once no backup needs it
    assert json.loads((work / BOXES_FILE).read_text())["version"] == 2
    assert (work / MASKS_FILE).exists() == (layout == "version-1")
    save_boxes(work, new)
    assert not (work / MASKS_FILE).exists() and _state(load_boxes(work)) == _state(new)


def test_a_damaged_box_file_falls_back_to_the_previous_save(tmp_path):
    folder = tmp_path / "boxes"
    old = _old_boxes()
    save_boxes(folder, old)
    save_boxes(folder, _new_boxes(old))
    current = folder / BOXES_FILE
    text = current.read_text()
    for damage in (text[: len(text) // 2], text.replace('"z": 1', '"z": 5', 1)):
        current.write_text(damage)  # cut short / one value changed: the checksum fails
        with pytest.warns(UserWarning, match="previous save"):
            assert _state(load_boxes(folder)) == _state(old)
    (folder / BOXES_BACKUP_FILE).write_text("{}")
    with pytest.raises(InvalidBoxesError, match="checksum does not match"):
        load_boxes(folder)
