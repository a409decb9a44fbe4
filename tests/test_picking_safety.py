"""pick, points and merge refuse what would lose data or give silently wrong results."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest

from napari_tomoseg.cli import main
from napari_tomoseg.errors import InvalidSettingsError
from napari_tomoseg.io.mrc import MrcStream, open_volume, write_volume
from napari_tomoseg.io.particle_files import write_particles
from napari_tomoseg.io.particles import TomogramFrame, read_csv, read_star
from napari_tomoseg.io.probability_header import threshold_label
from napari_tomoseg.merge import MergeSettings
from napari_tomoseg.picking import PickSettings, pick_particles

SHAPE = (24, 48, 48)
CENTRES = np.array([[12.0, 14.0, 14.0], [12.0, 32.0, 34.0]])


@pytest.fixture
def files(tmp_path, blobs):
    """A probability map as segment names and labels it, and the tomogram it came from."""
    prob = blobs(SHAPE, CENTRES, 4).astype(np.float16)
    path = tmp_path / "cell_ribosome.mrc"
    with MrcStream(path, SHAPE, np.float16, 20.0, labels=(threshold_label("ribosome", 0.4),)) as s:
        s.write(0, prob)
    tomogram = np.random.default_rng(0).normal(0, 1, SHAPE).astype(np.float32)
    return path, write_volume(tmp_path / "cell.mrc", tomogram, 20.0)


def _untouched(path, before: bytes) -> bool:
    return path.read_bytes() == before


@pytest.mark.parametrize("target", ["map", "tomogram", "other.rec", "other.mrc.gz"])
def test_pick_never_writes_particles_over_a_volume(files, tmp_path, capsys, target):
    prob, tomogram = files
    output = {"map": prob, "tomogram": tomogram}.get(target, tmp_path / target)
    saved = {p: p.read_bytes() for p in (prob, tomogram)}
    assert main(["pick", str(prob), str(output), "--diameter", "150", "--overwrite"]) == 2
    assert "write particles" in capsys.readouterr().err
    assert all(_untouched(p, b) for p, b in saved.items())
    assert not (tmp_path / "other.rec").exists() and not (tmp_path / "other.mrc.gz").exists()


def test_pick_and_points_refuse_an_existing_output_without_overwrite(files, tmp_path, capsys):
    prob, tomogram = files
    out = tmp_path / "picks.csv"
    out.write_text("keep me\n")
    assert main(["pick", str(prob), str(out), "--diameter", "150"]) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "keep me\n"
    assert main(["pick", str(prob), str(out), "--diameter", "150", "--overwrite"]) == 0
    assert len(read_csv(out)) == 2
    star = tmp_path / "picks.star"
    star.write_text("keep me\n")
    assert main(["points", str(out), str(star), "--tomogram", str(tomogram)]) == 2
    assert star.read_text() == "keep me\n"
    assert main(["points", str(out), str(out), "--tomogram", str(tomogram), "--overwrite"]) == 2
    assert "also an input" in capsys.readouterr().err
    assert main(["points", str(out), str(tmp_path / "t.mrc"), "--tomogram", str(tomogram)]) == 2
    assert not (tmp_path / "t.mrc").exists()
    assert main(["points", str(out), str(star), "--tomogram", str(tomogram), "--overwrite"]) == 0
    assert len(read_star(star, TomogramFrame("cell", SHAPE, 20.0))) == 2


def test_write_particles_refuses_volumes_but_overwrites_by_default(tmp_path):
    """The core check every writer gets; the widget and batch replace files they chose."""
    table = pd.DataFrame({"z": [1.0], "y": [2.0], "x": [3.0]})
    frame = TomogramFrame("t", (8, 8, 8), 10.0)
    with pytest.raises(InvalidSettingsError):
        write_particles(tmp_path / "t.MRC", table, frame)
    write_particles(tmp_path / "p.csv", table, frame)
    write_particles(tmp_path / "p.csv", table, frame)  # a deliberate overwrite
    with pytest.raises(FileExistsError):
        write_particles(tmp_path / "p.csv", table, frame, overwrite=False)


def test_pick_names_the_tomogram_not_the_map(files, tmp_path, capsys):
    prob, _ = files
    import starfile

    assert main(["pick", str(prob), str(tmp_path / "p.star"), "--diameter", "150"]) == 0
    particles = starfile.read(tmp_path / "p.star", always_dict=True)["particles"]
    assert list(particles["rlnTomoName"]) == ["cell", "cell"]  # what average looks for
    assert "'cell'" in capsys.readouterr().out
    assert main(["pick", str(prob), str(tmp_path / "q.star"), "--diameter", "150",
                 "--tomo-name", "TS_01"]) == 0
    assert "TS_01" in (tmp_path / "q.star").read_text()
    assert "cell_ribosome" not in (tmp_path / "q.star").read_text()
    # the map opened in napari carries the same name for the picking widget's STAR files
    from napari_tomoseg.layer_data import volume_layer

    _, kwargs, _ = volume_layer(prob)
    assert kwargs["name"] == "cell_ribosome" and kwargs["metadata"]["tomoseg"]["tomo_name"] == "cell"


def test_maps_that_are_not_probabilities_are_refused(files, tmp_path, capsys):
    prob, tomogram = files
    assert main(["pick", str(tomogram), str(tmp_path / "a.csv"), "--diameter", "150"]) == 2
    assert "not probabilities" in capsys.readouterr().err
    assert main(["pick", str(prob), str(tmp_path / "b.csv"), "--diameter", "150",
                 "--exclude", str(tomogram)]) == 2
    assert "not probabilities" in capsys.readouterr().err
    assert main(["merge", "--prob", f"ribosome={tomogram}", "-o", str(tmp_path / "l.mrc")]) == 2
    assert "not probabilities" in capsys.readouterr().err
    assert not (tmp_path / "l.mrc").exists()
    # third-party maps in [0, 1] and 0-255 integer maps still pass
    scaled = np.rint(open_volume(prob)[0].astype(np.float32) * 255).astype(np.uint8)
    bytes255 = write_volume(tmp_path / "third_party.mrc", scaled, 20.0)
    assert main(["pick", str(bytes255), str(tmp_path / "c.csv"), "--diameter", "150"]) == 0
    assert len(read_csv(tmp_path / "c.csv")) == 2


def test_a_misspelled_threshold_feature_is_an_error(files, tmp_path, capsys):
    prob, _ = files
    assert main(["merge", "--prob", f"ribosome={prob}", "--threshold", "ribsome=0.9",
                 "-o", str(tmp_path / "l.mrc")]) == 2
    err = capsys.readouterr().err
    assert "ribsome" in err and "ribosome" in err and not (tmp_path / "l.mrc").exists()
    with pytest.raises(InvalidSettingsError, match="ribsome"):  # batch builds MergeSettings
        MergeSettings(features=["ribosome", "membrane"], thresholds={"ribsome": 0.9})


def test_split_components_with_nothing_above_threshold_give_no_picks(files, tmp_path, capsys,
                                                                     blobs):
    faint = blobs(SHAPE, CENTRES, 4) * 0.8
    settings = PickSettings(diameter=150, threshold=0.9, method="components", split_touching=True)
    assert len(pick_particles(faint, 20.0, settings)) == 0
    path = write_volume(tmp_path / "faint.mrc", faint.astype(np.float32), 20.0)
    assert main(["pick", str(path), str(tmp_path / "p.csv"), "--method", "components",
                 "--split", "--threshold", "0.9"]) == 0
    assert "0 ribosome picks" in capsys.readouterr().out


def test_a_diameter_larger_than_the_volume_is_refused_and_thicker_than_it_warned(
        files, tmp_path, capsys):
    """One wider than the thinnest side only is cut by it: said, as under IMOD's placeholder
    header of 1 A it gave 0 picks without a word (a thin slab cut from a tomogram is still
    picked)."""
    from napari_tomoseg.pick_checks import MapWarning

    prob, _ = files
    assert main(["pick", str(prob), str(tmp_path / "p.csv"), "--diameter", "1e6"]) == 2
    assert "larger than the volume" in capsys.readouterr().err
    with pytest.raises(InvalidSettingsError, match="larger than the volume"):
        pick_particles(np.zeros(SHAPE, np.float32), 20.0, PickSettings(diameter=48 * 20 + 1))
    assert not (tmp_path / "p.csv").exists()
    with pytest.warns(MapWarning, match="thinnest side"):
        pick_particles(np.zeros(SHAPE, np.float32), 20.0,
                       PickSettings(diameter=min(SHAPE) * 20 + 1))
    with pytest.warns(MapWarning, match="wider than the volume's thinnest side"):
        assert main(["pick", str(prob), str(tmp_path / "p.csv"), "--diameter",
                     str(min(SHAPE) * 20 + 10)]) == 0


def test_interpolation_overshoot_is_clipped_not_refused():
    """A map resampled with cubic interpolation overshoots [0, 1] a little: clipped."""
    from napari_tomoseg.probability_maps import as_probability

    resampled = np.array([[[-0.02, 0.5, 1.03]]], np.float32)
    np.testing.assert_array_equal(as_probability(resampled), [[[0.0, 0.5, 1.0]]])


def test_picks_from_a_map_name_its_tomogram_whatever_the_map_file_is_called(tmp_path):
    """The dock writes segmentations/ribosome.mrc: rlnTomoName must not become 'ribosome'."""
    from napari_tomoseg.jobs import run_job
    from napari_tomoseg.jobs.segment import SegmentOptions, segment_tomogram
    from napari_tomoseg.layer_data import volume_layer
    from napari_tomoseg.nn.model_file import TrainedModel
    from napari_tomoseg.nn.models import build_model
    from napari_tomoseg.preprocess import default_preprocessing
    from napari_tomoseg.io.probability_header import map_tomogram_name

    params = {"base": 4, "levels": 1, "context": 0}
    model = TrainedModel(build_model("unet", params), "unet", params,
                         default_preprocessing(20.0, 32), 20.0, 32, feature="ribosome")
    volume = np.random.default_rng(0).normal(size=(8, 32, 32)).astype(np.float32)
    names = {"cell_7": "cell_7", "TS_" + "x" * 150: "TS_" + "x" * 150,  # over two labels
             "y" * 300: "ribosome"}  # longer than the labels hold: the file name
    for name, expected in names.items():
        target = tmp_path / name[:8] / "ribosome.mrc"
        target.parent.mkdir()
        run_job(segment_tomogram(volume, 20.0, (0, 0, 0), [model], [target],
                                 SegmentOptions(overwrite=True), tomogram=name))
        assert map_tomogram_name(target) == expected
        assert volume_layer(target)[1]["metadata"]["tomoseg"]["tomo_name"] == expected
    # the CLI's own naming still gives the tomogram for maps without the label
    old = tmp_path / "cell_9_ribosome.mrc"
    with MrcStream(old, SHAPE, np.float16, 20.0, labels=(threshold_label("ribosome", 0.4),)) as s:
        s.write(0, np.zeros(SHAPE, np.float16))
    assert map_tomogram_name(old) == "cell_9"


def test_segment_and_merge_never_write_over_an_input_of_the_run(files, tmp_path, capsys):
    """segment c.mrc c_ribosome.mrc --overwrite turned the second tomogram into c's map;
    merge -o onto its --prob input turned the map into labels."""
    from napari_tomoseg.nn.model_file import TrainedModel, save_model
    from napari_tomoseg.nn.models import build_model
    from napari_tomoseg.preprocess import default_preprocessing

    prob, tomogram = files
    params = {"base": 4, "levels": 1, "context": 0}
    model = save_model(TrainedModel(build_model("unet", params), "unet", params,
                                    default_preprocessing(20.0, 32), 20.0, 32,
                                    feature="ribosome"), tmp_path / "m.pt")
    second = write_volume(tmp_path / "cell_ribosome_x.mrc", np.ones(SHAPE, np.float32), 20.0)
    named_like_a_map = tmp_path / "c_ribosome.mrc"
    named_like_a_map.write_bytes(tomogram.read_bytes())
    c = tmp_path / "c.mrc"
    c.write_bytes(tomogram.read_bytes())
    saved = {p: p.read_bytes() for p in (prob, named_like_a_map, c)}
    assert main(["segment", str(named_like_a_map), str(c), "-m", str(model), "-o",
                 str(tmp_path), "--overwrite"]) == 2
    assert "is an input of this run" in capsys.readouterr().err
    assert main(["merge", "--prob", f"ribosome={prob}", "-o", str(prob), "--overwrite"]) == 2
    assert "is an input of this run" in capsys.readouterr().err
    assert all(_untouched(p, b) for p, b in saved.items())
    # without --overwrite every map is checked before the first is written
    out = tmp_path / "out"
    out.mkdir()
    (out / "cell_ribosome_x_ribosome.mrc").write_bytes(b"keep")
    assert main(["segment", str(tomogram), str(second), "-m", str(model), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["cell_ribosome_x_ribosome.mrc"]


def test_pick_never_names_a_map_anothers_feature(files, tmp_path, capsys):
    """pick ribosome's map --feature membrane made 'membrane' picks at ribosome's threshold."""
    prob, _ = files
    assert main(["pick", str(prob), str(tmp_path / "m.star"), "--diameter", "150",
                 "--feature", "membrane"]) == 2
    assert "probability map of 'ribosome'" in capsys.readouterr().err
    assert not (tmp_path / "m.star").exists()
    assert main(["pick", str(prob), str(tmp_path / "r.csv"), "--diameter", "150"]) == 0
    assert "2 ribosome picks" in capsys.readouterr().out


def test_outputs_whose_suffix_names_another_format_are_refused(files, tmp_path, capsys):
    """pick out.txt wrote a CSV; train -o m.mrc wrote a torch file named .mrc."""
    prob, tomogram = files
    assert main(["pick", str(prob), str(tmp_path / "out.txt"), "--diameter", "150"]) == 2
    assert "write particles to .star" in capsys.readouterr().err
    assert main(["train", str(tomogram), "--boxes", str(tmp_path), "--feature", "ribosome",
                 "-o", str(tmp_path / "m.mrc")]) == 2
    assert "name it .pt" in capsys.readouterr().err
    assert not (tmp_path / "out.txt").exists() and not (tmp_path / "m.mrc").exists()
