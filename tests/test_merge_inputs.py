"""merge refuses maps whose voxel size it cannot trust, and says why in the user's terms."""

from __future__ import annotations

import mrcfile
import numpy as np
import pytest

from napari_tomoseg.cli import main
from napari_tomoseg.errors import InvalidSettingsError, InvalidVolumeError
from napari_tomoseg.io.mrc import write_volume
from napari_tomoseg.jobs import run_job
from napari_tomoseg.jobs.merge import merge_maps
from napari_tomoseg.merge import MergeSettings, check_same_grid

SHAPE = (8, 16, 16)


def _map(path, voxel, nan: bool = False):
    """A real 0-1 float map on disk; ``voxel`` one size or (z, y, x)."""
    prob = np.random.default_rng(0).random(SHAPE, dtype=np.float32)
    if nan:
        prob[3, 4, 4] = np.nan
    return write_volume(path, prob, voxel)


def _merge(capsys, *args) -> tuple[int, str]:
    code = main(["merge", *args])
    return code, capsys.readouterr().err


def test_a_map_without_voxel_size_is_refused_unless_given(tmp_path, capsys):
    """Stamped 1 A without a word before; now refused as segment and pick refuse it, and
    --voxel-size gives the output its size."""
    bare, out = _map(tmp_path / "bare.mrc", 0.0), tmp_path / "labels.mrc"
    code, err = _merge(capsys, "--prob", f"ribosome={bare}", "-o", str(out))
    assert code == 2 and "bare.mrc has no usable voxel size" in err and "--voxel-size" in err
    assert not out.exists()
    code, _ = _merge(capsys, "--prob", f"ribosome={bare}", "-o", str(out), "--voxel-size", "12")
    assert code == 0
    with mrcfile.open(out, header_only=True) as mrc:
        assert float(mrc.voxel_size.x) == pytest.approx(12.0)


def test_a_map_without_voxel_size_beside_one_with_is_named_by_its_header(tmp_path, capsys):
    sized, bare = _map(tmp_path / "a.mrc", 10.0), _map(tmp_path / "b.mrc", 0.0)
    code, err = _merge(capsys, "--prob", f"a={sized}", "--prob", f"b={bare}",
                       "-o", str(tmp_path / "l.mrc"))
    assert code == 2 and "b.mrc has no usable voxel size in its header (0" in err
    assert "1 A" not in err
    code, _ = _merge(capsys, "--prob", f"a={sized}", "--prob", f"b={bare}",
                     "-o", str(tmp_path / "l.mrc"), "--voxel-size", "10")
    assert code == 0


def test_non_cubic_voxels_are_refused_alone_and_beside_cubes(tmp_path, capsys):
    cube, tall = _map(tmp_path / "cube.mrc", 10.0), _map(tmp_path / "tall.mrc", (20.0, 10, 10))
    for given in ([f"a={tall}"], [f"a={cube}", f"b={tall}"]):
        prob = [x for p in given for x in ("--prob", p)]
        code, err = _merge(capsys, *prob, "-o", str(tmp_path / "l.mrc"))
        assert code == 2 and "tall.mrc has voxels of 10 x 10 x 20 A" in err and "cubes" in err
    assert not (tmp_path / "l.mrc").exists()
    # the batch's and the widget's path: the job refuses them too
    with pytest.raises(InvalidVolumeError, match="not cubes"):
        run_job(merge_maps({"a": cube, "b": tall}, MergeSettings(features=["a", "b"]), None,
                           10.0, (0.0, 0.0, 0.0)))


def test_every_axis_of_the_voxel_size_is_compared():
    with pytest.raises(InvalidSettingsError, match="has 10 x 10 x 20 A voxels but the a map 10"):
        check_same_grid({"a": ((10.0, 10.0, 10.0), (0, 0, 0)),
                         "b": ((20.0, 10.0, 10.0), (0, 0, 0))})
    check_same_grid({"a": (10.0, (0, 0, 0)), "b": ((10.0, 10.0, 10.0), (0, 0, 0))})


def test_a_map_holding_nan_is_sent_to_clean_not_called_a_tomogram(tmp_path, capsys):
    bad = _map(tmp_path / "nan.mrc", 10.0, nan=True)
    code, err = _merge(capsys, "--prob", f"ribosome={bad}", "-o", str(tmp_path / "l.mrc"))
    assert code == 2 and "NaN" in err and "tomoseg clean nan.mrc" in err
    assert "is it a tomogram" not in err and not (tmp_path / "l.mrc").exists()
