"""The ``tomoseg`` command: real runs, clear one-line errors."""

from __future__ import annotations

import numpy as np
import pytest

from napari_tomoseg.cli import main
from napari_tomoseg.io.mrc import open_volume, write_volume
from napari_tomoseg.io.particles import read_csv, read_star


def test_synth_writes_a_small_cell(tmp_path, capsys):
    code = main(["synth", str(tmp_path), "--shape", "24", "64", "64", "--voxel-size", "20",
                 "--seed", "4", "--tilt-range", "-60", "60", "10", "--origin", "10", "20", "30"])
    assert code == 0
    data, info = open_volume(tmp_path / "synthetic.mrc")
    assert info.shape == (24, 64, 64) and info.origin == (10.0, 20.0, 30.0)
    assert (tmp_path / "synthetic_membrane.mrc").exists()
    assert "synthetic cell (24, 64, 64)" in capsys.readouterr().out
    # the same seed gives the same tomogram
    main(["synth", str(tmp_path / "again"), "--shape", "24", "64", "64", "--voxel-size", "20",
          "--seed", "4", "--tilt-range", "-60", "60", "10"])
    np.testing.assert_array_equal(open_volume(tmp_path / "again" / "synthetic.mrc")[0], data)


def test_synth_refuses_to_overwrite(tmp_path, capsys):
    args = ["synth", str(tmp_path), "--shape", "16", "32", "32", "--voxel-size", "20",
            "--tilt-range", "-60", "60", "20"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("tomoseg: error:") and "exists" in err and "Traceback" not in err
    assert "building the cell" not in err  # refused before any simulation
    reference = (tmp_path / "ribosome_reference.mrc").read_bytes()
    # another cell of the same voxel size shares the reference; of another it would replace
    # it under the first cell's manifest
    assert main([*args, "--name", "other", "--seed", "2"]) == 0
    assert main([*args[:7], "30", *args[8:], "--name", "third"]) == 2
    assert "ribosome_reference.mrc exists" in capsys.readouterr().err
    assert (tmp_path / "ribosome_reference.mrc").read_bytes() == reference
    assert not list(tmp_path.glob("third*"))
    # all or nothing: a new tomogram was written beside the older cell's labels, then refused
    (tmp_path / "synthetic.mrc").unlink()
    assert main([*args, "--seed", "7"]) == 2
    assert "synthetic_membrane.mrc exists" in capsys.readouterr().err
    assert not (tmp_path / "synthetic.mrc").exists()


def test_info_reports_geometry_and_bad_files_cleanly(tmp_path, capsys):
    write_volume(tmp_path / "a.mrc", np.zeros((3, 4, 5), np.float32), 13.0, (1.0, 2.0, 3.0))
    assert main(["info", str(tmp_path / "a.mrc")]) == 0
    out = capsys.readouterr().out
    assert "5 x 4 x 3 voxels" in out and "voxel 13 x 13 x 13 A" in out and "origin 3 2 1 A" in out
    write_volume(tmp_path / "huge.mrc", np.zeros((3, 4, 5), np.float32), 1e6)
    assert main(["info", str(tmp_path / "huge.mrc")]) == 0  # not "voxel 1 A (assumed)"
    assert "no usable voxel size (header: 1e+06 A" in capsys.readouterr().out
    (tmp_path / "b.mrc").write_text("not a tomogram" * 200)
    assert main(["info", str(tmp_path / "b.mrc")]) == 2
    err = capsys.readouterr().err
    assert "b.mrc is not a valid MRC file" in err and "Traceback" not in err
    # a bad file among good ones: every file reported, and the status says one failed
    assert main(["info", str(tmp_path / "b.mrc"), str(tmp_path / "a.mrc")]) == 2
    captured = capsys.readouterr()
    assert "b.mrc" in captured.err and "5 x 4 x 3 voxels" in captured.out


def test_clean_replaces_nan(tmp_path, capsys):
    data = np.ones((4, 4, 4), np.float32)
    data[2, 2, 2] = np.nan
    write_volume(tmp_path / "n.mrc", data)
    assert main(["info", str(tmp_path / "n.mrc")]) == 0  # info does not need finite voxels
    assert main(["clean", str(tmp_path / "n.mrc"), str(tmp_path / "c.mrc")]) == 0
    assert "replaced 1 NaN/Inf" in capsys.readouterr().out
    assert np.all(np.isfinite(open_volume(tmp_path / "c.mrc")[0]))
    # an uncompressed MRC named .gz (or .csv), and the input replaced in place, are refused
    assert main(["clean", str(tmp_path / "n.mrc"), str(tmp_path / "c.mrc.gz")]) == 2
    assert "written as a plain MRC" in capsys.readouterr().err
    assert main(["clean", str(tmp_path / "n.mrc"), str(tmp_path / "n.mrc"), "--overwrite"]) == 2
    assert "is an input" in capsys.readouterr().err
    assert not (tmp_path / "c.mrc.gz").exists()
    assert np.isnan(open_volume(tmp_path / "n.mrc", check_finite=False)[0]).any()


def test_points_converts_star_to_csv_and_back(tiny_files, tmp_path):
    star = tiny_files["particles"]
    tomogram = tiny_files["tomogram"]
    assert main(["points", str(star), str(tmp_path / "p.csv"), "--tomogram", str(tomogram),
                 "--tomo-name", "tiny"]) == 0
    assert main(["points", str(tmp_path / "p.csv"), str(tmp_path / "p.star"), "--tomogram",
                 str(tomogram), "--tomo-name", "tiny"]) == 0
    original = read_star(star)
    np.testing.assert_allclose(read_csv(tmp_path / "p.csv")[["z", "y", "x"]],
                               original[["z", "y", "x"]], atol=1e-3)
    np.testing.assert_allclose(read_star(tmp_path / "p.star")[["z", "y", "x"]],
                               original[["z", "y", "x"]], atol=1e-3)


def test_launch_without_display_runs_the_headless_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["launch", "--demo-output", str(tmp_path / "demo")]) == 0
    captured = capsys.readouterr()
    assert "no display found" in captured.err
    assert "ribosomes in demo_cell_ribosomes.star" in captured.out
    assert (tmp_path / "demo" / "demo_cell.mrc").exists()


@pytest.mark.parametrize("argv", [["synth"], ["nonsense"]])
def test_usage_errors_exit_nonzero(argv):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2


def test_the_documented_loop_trains_on_the_shipped_int8_sample(tmp_path):
    """boxes -> train on sample_data as the tutorial does (the sample is int8)."""
    from pathlib import Path

    sample = Path(__file__).parents[1] / "sample_data" / "synthetic"
    boxes = tmp_path / "boxes"
    assert main(["boxes", str(sample / "synthetic_cell_ribosome.mrc.gz"), str(boxes),
                 "--feature", "ribosome", "--positives", "3", "--negatives", "6"]) == 0
    assert main(["train", str(sample / "synthetic_cell.mrc"), "--boxes", str(boxes),
                 "--feature", "ribosome", "--steps", "2", "--batch-size", "2", "--device", "cpu",
                 "-o", str(tmp_path / "r.pt")]) == 0
    # a membrane network works near 10 A (this 10 A sample unbinned), a ribosome's near 20 A
    from napari_tomoseg.nn.model_file import load_model

    assert main(["boxes", str(sample / "synthetic_cell_membrane.mrc.gz"), str(boxes),
                 "--feature", "membrane", "--positives", "2", "--negatives", "4"]) == 0
    assert main(["train", str(sample / "synthetic_cell.mrc"), "--boxes", str(boxes),
                 "--feature", "membrane", "--steps", "2", "--batch-size", "2", "--device", "cpu",
                 "-o", str(tmp_path / "m.pt")]) == 0
    assert load_model(tmp_path / "m.pt").preprocess.binning == 1
    assert load_model(tmp_path / "r.pt").preprocess.binning == 2


def test_boxes_refuses_a_tomogram_as_the_mask(tmp_path, capsys):
    """Every voxel > 0 of a tomogram became 'mask': 10 positives, 0 negatives, exit 0."""
    from napari_tomoseg.io.mrc import write_volume

    tomogram = np.random.default_rng(0).normal(size=(8, 48, 48)).astype(np.float32)
    path = write_volume(tmp_path / "t.mrc", tomogram, 10.0)
    assert main(["boxes", str(path), str(tmp_path / "b"), "--feature", "r", "--size", "16"]) == 2
    assert "is not a mask" in capsys.readouterr().err and not (tmp_path / "b").exists()
    mask = np.zeros((8, 48, 48), np.uint8)
    mask[4, 20:28, 20:28] = 255  # 0/255, as other programs write masks
    path = write_volume(tmp_path / "m.mrc", mask, 10.0)
    assert main(["boxes", str(path), str(tmp_path / "b"), "--feature", "r", "--size", "16",
                 "--positives", "1", "--negatives", "60"]) == 0
    said = capsys.readouterr()
    assert "negative boxes found" in said.err and "1 positive" in said.out
    from napari_tomoseg.session import Session  # a session folder: boxes.json read by nothing

    Session.create(tmp_path / "s", None, 10.0, (8, 48, 48))
    assert main(["boxes", str(path), str(tmp_path / "s"), "--feature", "r", "--size", "16"]) == 2
    assert "is an annotation session" in capsys.readouterr().err
    assert not (tmp_path / "s" / "boxes.json").exists()


def test_blank_feature_names_are_refused(tmp_path, capsys):
    """merge --prob =p.mrc made a label named ''; boxes --feature '' was accepted."""
    with pytest.raises(SystemExit):
        main(["boxes", str(tmp_path / "t.mrc"), str(tmp_path / "b"), "--feature", " "])
    assert "a feature needs a name" in capsys.readouterr().err
    assert main(["merge", "--prob", f"={tmp_path / 'p.mrc'}", "-o", str(tmp_path / "l.mrc")]) == 2
    assert "needs both a NAME and a VALUE" in capsys.readouterr().err
    from napari_tomoseg.cli import arguments

    assert arguments.artifacts(["carbon", "ice=membrane"]) == {"carbon": (), "ice": ("membrane",)}
    with pytest.raises(Exception, match="needs both a NAME"):
        arguments.artifacts(["=membrane"])


def test_an_output_folder_that_is_a_file_says_so(tmp_path, capsys):
    from napari_tomoseg.errors import OutputNotWritableError
    from napari_tomoseg.io.paths import check_writable

    (tmp_path / "ok.mrc").write_text("x")
    with pytest.raises(OutputNotWritableError, match="it is a file; give a folder"):
        check_writable(tmp_path / "ok.mrc")


def test_cli_warnings_are_one_line_for_the_user(tmp_path, blobs):
    """Warnings printed Python's file, line and source line ('return write_star(path, table,
    frame)') between the progress bars (a trial)."""
    import subprocess
    import sys

    from napari_tomoseg.io.mrc import write_volume

    prob = blobs((24, 48, 48), np.array([[12.0, 24.0, 24.0]]), radius=4)
    path = write_volume(tmp_path / "t_ribosome.mrc", prob.astype(np.float16), 10.0)
    done = subprocess.run([sys.executable, "-m", "napari_tomoseg.cli", "pick", str(path),
                           str(tmp_path / "picks.star"), "--diameter", "80", "--feature",
                           "ribosome", "--threshold", "0.5"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "warning" in line]
    assert warned and all(line.startswith("tomoseg: warning: ") for line in warned), done.stderr
    assert ".py:" not in done.stderr and "write_star(" not in done.stderr
