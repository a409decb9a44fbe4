"""A batch rerun into its input folder: its own outputs are no tomograms; others' files stay."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from napari_tomoseg.annotations import boxes_from_truth  # noqa: E402
from napari_tomoseg.batch import BatchSettings  # noqa: E402
from napari_tomoseg.io.atomic import clean_stale_partials, partial_path  # noqa: E402
from napari_tomoseg.io.mrc import write_volume  # noqa: E402
from napari_tomoseg.io.particles import read_star  # noqa: E402
from napari_tomoseg.nn.model_file import save_model  # noqa: E402
from napari_tomoseg.nn.training import TrainingSettings, train  # noqa: E402


@pytest.fixture(scope="module")
def model(tmp_path_factory, tiny_result):
    boxes = boxes_from_truth(tiny_result.cell.labels["ribosome"], "ribosome", 5, 10, 32, seed=0)
    trained = train(tiny_result.tomogram, boxes, 20.0, TrainingSettings(
        steps=20, batch_size=8, parameters={"base": 8, "levels": 2, "context": 1},
        hold_out=False))
    return str(save_model(trained, tmp_path_factory.mktemp("model") / "ribosome.pt"))


def _dead_pid() -> int:
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout)


def _stale_partial(folder, name: str):
    """A partial our atomic writer left when its process was killed."""
    mine = partial_path(folder / name)
    stale = folder / mine.name.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-")
    stale.write_bytes(b"half")
    return stale


def test_only_our_own_stale_partials_are_removed(tmp_path):
    stale = _stale_partial(tmp_path, "t.mrc")
    others = [tmp_path / ".download.partial", tmp_path / ".t.mrc.partial",
              tmp_path / ".t.mrc.1a2b3c.partial",  # fixed names other programs write
              tmp_path / (stale.name + "x"), tmp_path / stale.name.replace("-partial-", "-part-")]
    for path in others:
        path.write_bytes(b"someone else's")
    assert clean_stale_partials(tmp_path) == [stale]
    assert all(p.read_bytes() == b"someone else's" for p in others)


def test_rerun_into_the_input_folder_skips_its_own_outputs(model, tiny_result, tmp_path,
                                                         monkeypatch, capsys):
    from distributed import Client

    from napari_tomoseg import cli

    monkeypatch.setattr("napari_tomoseg.batch.make_client", lambda *a, **k: Client(
        processes=False, n_workers=1, threads_per_worker=1, dashboard_address=":0"))
    folder = tmp_path / "dir"
    for i, name in enumerate("ab"):
        write_volume(folder / f"{name}.mrc", np.roll(tiny_result.tomogram, 9 * i, axis=2), 20.0)
    theirs = folder / ".notes.txt.partial"  # another program's file, not ours to delete
    theirs.write_text("keep me")
    stale = _stale_partial(folder, "a_labels.mrc")
    command = ["batch", str(folder / "*.mrc"), "-m", model, "-o", str(folder),
               "--pick", "ribosome", "--device", "cpu"]
    assert cli.main(command) == 0
    assert theirs.read_text() == "keep me" and not stale.exists()
    first = read_star(folder / "all_ribosome.star")
    assert set(first["tomo_name"]) == {"a", "b"} and len(first) > 0
    capsys.readouterr()
    assert cli.main(command) == 0
    err = capsys.readouterr().err
    assert "skipped 4 inputs that are outputs of tomoseg" in err
    again = read_star(folder / "all_ribosome.star")
    assert set(again["tomo_name"]) == {"a", "b"} and len(again) == len(first)
    assert not list(folder.glob("a_labels_*")) and not list(folder.glob("a_ribosome_*"))
    # without the manifest, the header and the layout still tell them apart
    from napari_tomoseg.batch_inputs import split_own_outputs

    (folder / "manifest.json").unlink()
    tomograms = sorted(str(p) for p in folder.glob("*.mrc"))
    kept, skipped = split_own_outputs(tomograms, BatchSettings(models=(model,),
                                                               output=str(folder)))
    assert kept == [str(folder / "a.mrc"), str(folder / "b.mrc")]
    assert skipped[str(folder / "a_ribosome.mrc")] == "a probability map of ribosome (MRC header)"
    assert skipped[str(folder / "b_labels.mrc")] == "a label volume (MRC header)"
    # another output folder's label volumes, globbed as inputs, are not tomograms either
    elsewhere = BatchSettings(models=(model,), output=str(tmp_path / "elsewhere"))
    kept, skipped = split_own_outputs(tomograms, elsewhere)
    assert kept == [str(folder / "a.mrc"), str(folder / "b.mrc")]
