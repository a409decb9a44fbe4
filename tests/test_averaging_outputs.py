"""Averaging outputs on disk: no silent overwrite, never an input; duplicate picks dropped."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from napari_tomoseg.averaging import AverageSettings
from napari_tomoseg.cli import main
from napari_tomoseg.errors import InvalidSettingsError
from napari_tomoseg.io.particles import CoordinateWarning, TomogramFrame, particle_table, read_star
from napari_tomoseg.jobs import run_job
from napari_tomoseg.jobs.average import average_job
from napari_tomoseg.synthetic.particle_field import simulate_particle_field, write_particle_field

CLASSIFY_FAST = ["--box", "24", "--iterations", "1", "--angular-step", "30", "--final-step",
                 "30", "--device", "cpu"]
FAST = [*CLASSIFY_FAST, "--start-step", "45"]  # average: a coarse reference-free start too


@pytest.fixture(scope="module")
def field():
    return simulate_particle_field(8, voxel_size=15.0, snr=5.0, seed=4)


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    """Every test here: tiny averages on one thread."""


def _snapshot(folder) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_average_never_replaces_its_inputs_nor_earlier_results(field, tmp_path):
    files = write_particle_field(field, tmp_path / "av2", name="t", box=24)
    folder, tomogram, particles = tmp_path / "av2", str(files["tomogram"]), str(files["particles"])
    before = _snapshot(folder)
    # --name t would write av2/t.mrc over the tomogram: refused, with or without --overwrite
    for extra in ([], ["--overwrite"]):
        assert main(["average", tomogram, particles, "-o", str(folder), "--name", "t",
                     *FAST, *extra]) == 2
        assert _snapshot(folder) == before  # nothing replaced, nothing added
    assert main(["average", tomogram, particles, "-o", str(folder), "--name", "avg", *FAST]) == 0
    first = _snapshot(folder)
    assert {"avg.mrc", "avg_half1.mrc", "avg_particles.star", "avg.json"} <= set(first)
    # a second run refuses the earlier results (all checked before the first write) ...
    (folder / "avg_half2.mrc").unlink()  # even when only some of them are there
    partial = _snapshot(folder)
    assert main(["average", tomogram, particles, "-o", str(folder), "--name", "avg", *FAST]) == 2
    assert _snapshot(folder) == partial
    # ... and replaces them with --overwrite
    assert main(["average", tomogram, particles, "-o", str(folder), "--name", "avg", *FAST,
                 "--overwrite"]) == 0
    assert (folder / "avg_half2.mrc").exists()
    # a full disk at the STAR file left the new maps beside the earlier STAR and settings
    from napari_tomoseg.averaging import files as result_files

    whole = _snapshot(folder)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(result_files, "write_star", full_disk)
        assert main(["average", tomogram, particles, "-o", str(folder), "--name", "avg",
                     *FAST, "--overwrite"]) != 0
    assert _snapshot(folder) == whole  # not one map replaced, no partial left


def test_classify_never_replaces_the_particles_it_reads(field, tmp_path):
    files = write_particle_field(field, tmp_path, name="t", box=24)
    aligned = tmp_path / "avg_particles.star"
    assert main(["average", str(files["tomogram"]), str(files["particles"]), "-o", str(tmp_path),
                 "--name", "avg", *FAST]) == 0
    before = aligned.read_bytes()
    # class outputs avg_1.mrc, avg_2.mrc, avg_particles.star: the last is the input
    assert main(["classify", str(files["tomogram"]), str(aligned), "-o", str(tmp_path),
                 "--name", "avg", "--overwrite", *CLASSIFY_FAST]) == 2
    assert aligned.read_bytes() == before
    assert not (tmp_path / "avg_1.mrc").exists()


def test_a_job_refuses_an_output_that_is_its_reference(field, tmp_path):
    files = write_particle_field(field, tmp_path, name="t", box=24)
    frame = TomogramFrame("t", field.tomogram.shape, field.voxel_size)
    settings = AverageSettings(box=24, iterations=1, angular_step=30, final_step=30, initial_step=45,
                               device="cpu")
    job = average_job(field.tomogram, frame, particle_table(field.zyx), settings, tmp_path,
                      name="t_reference", inputs=[files["reference"]])  # overwrite=True
    with pytest.raises(InvalidSettingsError, match="is an input"):
        run_job(job)


def test_repeated_picks_are_dropped_before_the_half_sets(field, tmp_path):
    """A copy in each half set agrees on noise; the tester's four copies of one pick gave
    FSC 1 in every shell. Repeats (exact, or within 2 voxels) are dropped with a warning;
    points 3 voxels apart (as along a filament) are kept."""
    frame = TomogramFrame("t", field.tomogram.shape, field.voxel_size)
    settings = AverageSettings(box=24, iterations=1, angular_step=30, final_step=30, initial_step=45,
                               device="cpu")
    repeats = field.zyx[:4] + np.array([0.0, 0.0, 1.5])  # near copies of four particles
    picks = particle_table(np.concatenate([field.zyx, field.zyx[:2], repeats]))
    with pytest.warns(CoordinateWarning, match="6 of 14 particles lie within 2 voxels"):
        result, sub, written = run_job(average_job(field.tomogram, frame, picks, settings,
                                                   tmp_path))
    assert sub.duplicates == 6 and len(result.halves) == len(field.zyx)
    assert sorted(sub.indices.tolist()) == list(range(len(field.zyx)))  # the first of each stays
    assert len(read_star(written["particles"], frame)) == len(field.zyx)
    from napari_tomoseg.averaging.extract import DUPLICATE_VOXELS, repeated_picks

    along = np.array([[10.0, 10.0, 10.0 + 3 * i] for i in range(5)])  # --spacing 3 voxels
    assert len(repeated_picks(along, DUPLICATE_VOXELS)) == 0
    # one particle four times is one particle: too few to average, said before any work
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(48, 48, 48)).astype(np.float32)
    noise_frame = TomogramFrame("noise", noise.shape, 15.0)
    four = particle_table(np.repeat([[24.0, 24.0, 24.0]], 4, axis=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoordinateWarning)
        with pytest.raises(InvalidSettingsError, match="only 1 particles.*3 duplicates"):
            run_job(average_job(noise, noise_frame, four, settings, tmp_path / "noise"))
        # asked to keep them (--min-distance 0), the copies agree perfectly: the inflation
        keep = AverageSettings(box=24, iterations=1, angular_step=30, final_step=30, initial_step=45,
                               device="cpu", min_distance=0)
        inflated, _, _ = run_job(average_job(noise, noise_frame, four, keep, tmp_path / "keep"))
    assert np.all(inflated.fsc[1:] > 0.99)


@pytest.mark.parametrize("what", ["average", "classify"])
def test_a_stop_request_ends_averaging_inside_an_iteration(field, tmp_path, what):
    """An iteration searches every particle before it yields (minutes on a CPU): a face's
    stop event ends it from inside the search, and nothing is written."""
    import threading

    from napari_tomoseg.averaging import ClassifySettings
    from napari_tomoseg.errors import Cancelled
    from napari_tomoseg.jobs.average import classify_job
    from napari_tomoseg.jobs.progress import stop_event

    frame = TomogramFrame("t", field.tomogram.shape, field.voxel_size)
    settings = AverageSettings(box=24, iterations=1, angular_step=30, final_step=30,
                               initial_step=45, device="cpu")
    table = particle_table(field.zyx)
    volume = _CountedReads(field.tomogram)
    if what == "average":  # with a reference: straight into the orientation search
        job = average_job(volume, frame, table, settings, tmp_path / "out",
                          reference=field.reference(24))
    else:
        table[["rot", "tilt", "psi"]] = 0.0
        job = classify_job(volume, frame, table, settings, ClassifySettings(classes=2),
                           tmp_path / "out")
    stop = threading.Event()
    with stop_event(stop):
        assert next(job).message == "extracting particles"
        stop.set()  # while the job is between yields
        with pytest.raises(Cancelled):
            next(job)  # before: the whole first iteration ran, and it yielded
    assert volume.reads == 1 < len(field.zyx)  # before: every box was read first
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


class _CountedReads:
    """A tomogram that counts the boxes read from it (a lazily read file stands behind)."""

    def __init__(self, data: np.ndarray):
        self.data, self.shape, self.reads = data, data.shape, 0

    def __getitem__(self, key):
        self.reads += 1
        return self.data[key]



def test_fewer_classes_than_before_leave_no_earlier_class_behind(field, tmp_path):
    """Two classes written over three left the earlier class_3.mrc beside the new STAR."""
    from napari_tomoseg.io.particles import write_star

    files = write_particle_field(field, tmp_path / "in", name="t", box=24)
    frame = TomogramFrame("t", field.tomogram.shape, field.voxel_size)
    aligned = write_star(tmp_path / "aligned.star",
                         particle_table(field.zyx, rot=0.0, tilt=0.0, psi=0.0), frame)
    classify = ["classify", str(files["tomogram"]), str(aligned), "--tomo-name", "t",
                "-o", str(tmp_path / "classes"), *CLASSIFY_FAST]
    assert main([*classify, "--classes", "3"]) == 0
    assert (tmp_path / "classes" / "class_3.mrc").exists()
    (tmp_path / "classes" / "class_5.mrc").write_bytes(  # an older run's, beyond a gap
        (tmp_path / "classes" / "class_3.mrc").read_bytes())
    assert main([*classify, "--classes", "2"]) == 2  # class_3.mrc would go: asked first
    assert main([*classify, "--classes", "2", "--overwrite"]) == 0
    assert sorted(p.name for p in (tmp_path / "classes").iterdir()) == [
        "class_1.mrc", "class_2.mrc", "class_particles.star"]


@pytest.mark.parametrize("name", ["../evil", "sub/dir", ".hidden"])
def test_a_result_name_that_leaves_the_output_folder_is_refused(name):
    from napari_tomoseg.averaging.files import average_outputs, class_outputs
    from napari_tomoseg.errors import InvalidSettingsError

    with pytest.raises(InvalidSettingsError, match="--name"):
        average_outputs("out", name)  # ../evil.mrc and its halves were written beside -o
    with pytest.raises(InvalidSettingsError, match="--name"):
        class_outputs("out", 2, name)
    assert average_outputs("out", "run-2_a.b")["average"] == Path("out/run-2_a.b.mrc")

