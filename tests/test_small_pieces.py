"""merge --min-size drops a feature's pieces smaller than a volume in nm^3 (membrane speckle)."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from napari_tomoseg.cli import main
from napari_tomoseg.errors import InvalidSettingsError
from napari_tomoseg.io.mrc import write_volume
from napari_tomoseg.jobs import run_job
from napari_tomoseg.jobs.merge import merge_maps
from napari_tomoseg.merge import MergeSettings
from napari_tomoseg.small_pieces import drop_small_pieces, voxels_of

SHAPE = (24, 40, 40)


def _scene() -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Labels 1 with a 4-voxel-thick sheet, a one-voxel staircase that touches itself only
    across edges (a thin oblique sheet), and a 3x3x3 speck; the parts as masks."""
    parts = {name: np.zeros(SHAPE, bool) for name in ("sheet", "stairs", "speck")}
    parts["sheet"][2:6, 2:38, 2:38] = True
    for k in range(14):  # each step meets the next at an edge only
        parts["stairs"][8 + k, 10:30, 2 + k] = True
    parts["speck"][18:21, 30:33, 30:33] = True
    labels = np.zeros(SHAPE, np.uint8)
    for mask in parts.values():
        labels[mask] = 1
    return labels, parts


def test_small_pieces_go_and_edge_connected_sheets_stay():
    labels, parts = _scene()
    dropped = drop_small_pieces(labels, 1, min_voxels=100)
    assert dropped == 27
    assert not labels[parts["speck"]].any()
    # the stairs: 280 voxels, one piece only when edges connect
    assert labels[parts["sheet"]].all() and labels[parts["stairs"]].all()
    assert drop_small_pieces(labels, 1, min_voxels=300) == 14 * 20  # the stairs now
    assert labels[parts["sheet"]].all()


def test_other_labels_are_left_alone():
    labels, parts = _scene()
    labels[parts["speck"]] = 2
    ones = int((labels == 1).sum())
    assert drop_small_pieces(labels, 1, min_voxels=10 ** 6) == ones
    assert (labels[parts["speck"]] == 2).all() and labels.max() == 2
    assert drop_small_pieces(labels, 3, min_voxels=100) == 0  # no such label


@pytest.mark.parametrize("voxel, expected", [(10.0, 2000), (20.0, 250), ((20.0, 10.0, 10.0), 1000),
                                             (7.0, 5831)])
def test_volume_in_nm3_becomes_voxels(voxel, expected):
    assert voxels_of(2000.0, voxel) == expected


def test_bad_sizes_are_refused():
    with pytest.raises(InvalidSettingsError, match="voxel size must be positive"):
        voxels_of(2000.0, 0.0)
    for bad in (-1.0, float("nan"), "big", True):
        with pytest.raises(InvalidSettingsError, match="smallest piece of membrane"):
            MergeSettings(["membrane"], min_sizes={"membrane": bad})
    with pytest.raises(InvalidSettingsError, match="membrnae, which is not among"):
        MergeSettings(["membrane"], min_sizes={"membrnae": 100.0})


def _maps(tmp_path, voxel: float) -> dict[str, str]:
    """Real MRC probability maps: a membrane sheet and speck, a ribosome-sized speck."""
    _, parts = _scene()
    membrane = np.where(parts["sheet"] | parts["speck"], 0.9, 0.1).astype(np.float32)
    ribosome = np.zeros(SHAPE, np.float32)
    ribosome[10:13, 32:35, 5:8] = 0.8
    return {"membrane": str(write_volume(tmp_path / "membrane.mrc", membrane, voxel)),
            "ribosome": str(write_volume(tmp_path / "ribosome.mrc", ribosome, voxel))}


def _labels(path) -> np.ndarray:
    with mrcfile.open(path, permissive=True) as mrc:
        return np.asarray(mrc.data)


SMALL = MergeSettings(["membrane", "ribosome"], min_sizes={"membrane": 2000.0})


def test_merge_writes_labels_without_the_membrane_speck(tmp_path):
    maps = _maps(tmp_path, 10.0)  # 27 voxels of 1 nm^3: under 2000
    out = tmp_path / "labels.mrc"
    run_job(merge_maps(maps, SMALL, out, 10.0, (0, 0, 0)))
    labels = _labels(out)
    _, parts = _scene()
    assert (labels[parts["sheet"]] == 1).all() and not labels[parts["speck"]].any()
    assert (labels == 2).sum() == 27  # a ribosome's speck of the same size stays
    for kept_all in (MergeSettings(["membrane", "ribosome"]),  # by default every piece stays
                     MergeSettings(["membrane", "ribosome"], min_sizes={"membrane": 0})):
        kept = run_job(merge_maps(maps, kept_all, None, 10.0, (0, 0, 0)))
        assert (kept[parts["speck"]] == 1).all()


def test_the_size_is_a_volume_not_a_voxel_count(tmp_path):
    """The same 27 voxels at 50 A hold 3375 nm^3: a membrane piece that stays."""
    maps = _maps(tmp_path, 50.0)
    labels = run_job(merge_maps(maps, SMALL, None, 50.0, (0, 0, 0)))
    _, parts = _scene()
    assert (labels[parts["speck"]] == 1).all()


def test_cli_min_size(tmp_path, capsys):
    maps = _maps(tmp_path, 10.0)
    probs = [x for f, p in maps.items() for x in ("--prob", f"{f}={p}")]
    out = tmp_path / "l.mrc"
    assert main(["merge", *probs, "-o", str(out)]) == 0
    _, parts = _scene()
    assert (_labels(out)[parts["speck"]] == 1).all()
    assert main(["merge", *probs, "-o", str(out), "--overwrite", "--min-size", "membrane=2000",
                 "--min-size", "ribosome=100"]) == 0
    labels = _labels(out)
    assert not labels[parts["speck"]].any() and not (labels == 2).any()  # both specks gone
    capsys.readouterr()
    for bad, said in (("membrane=-5", "0 or more"), ("membrane=lots", "volume in nm^3"),
                      ("vesicle=10", "'vesicle' is not a feature")):
        assert main(["merge", *probs, "-o", str(out), "--overwrite", "--min-size", bad]) == 2
        assert said in capsys.readouterr().err
