"""The faces agree: the CLI, batch and a direct job call give the same files.

Each face is a thin layer over the jobs of ``napari_tomoseg.jobs``; these
tests hold them to it on a small synthetic tomogram with two tiny models
(segment: equal probability voxels; merge: equal labels; pick: equal
coordinates), and check that cancelling a job (closing its generator)
leaves nothing in the output folder, not even a partial file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_tomoseg.annotations import boxes_from_truth
from napari_tomoseg.batch import BatchSettings, process_tomogram
from napari_tomoseg.cli import main
from napari_tomoseg.errors import InvalidSettingsError, TomosegError
from napari_tomoseg.io.atomic import is_partial
from napari_tomoseg.io.mrc import open_volume, write_volume
from napari_tomoseg.io.particles import read_star
from napari_tomoseg.jobs import run_job
from napari_tomoseg.jobs.merge import merge_maps
from napari_tomoseg.jobs.pick import pick_job
from napari_tomoseg.jobs.segment import SegmentOptions, segment_tomogram
from napari_tomoseg.merge import MergeSettings, artifact_rules
from napari_tomoseg.nn.inference import iter_segment, segment
from napari_tomoseg.nn.model_file import load_model, save_model
from napari_tomoseg.nn.training import TrainingSettings, train
from napari_tomoseg.picking import PickSettings
from napari_tomoseg.preprocess import PreprocessSettings, Preprocessor, SharedSlices
from napari_tomoseg.small_pieces import CONNECTIVITY
from napari_tomoseg.tomogram import volume_frame

FEATURES = ("ribosome", "membrane")
VOXEL = 20.0
ORIGIN = (-40.0, 20.0, 60.0)
DIAMETER = 250.0


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_result):
    """A tomogram on disk and one tiny model per feature (threshold 0.5: no held-out pixels)."""
    folder = tmp_path_factory.mktemp("faces")
    tomogram = write_volume(folder / "tomo.mrc", tiny_result.tomogram, VOXEL, ORIGIN)
    settings = TrainingSettings(steps=15, batch_size=8, hold_out=False,
                                parameters={"base": 8, "levels": 2, "context": 1})
    models = []
    for feature in FEATURES:
        boxes = boxes_from_truth(tiny_result.cell.labels[feature], feature, 4, 8, 32, seed=0)
        model = train(tiny_result.tomogram, boxes, VOXEL, settings, feature=feature)
        models.append(str(save_model(model, folder / f"{feature}.pt")))
    return tomogram, models


def _direct(tomogram: Path, models: list[str], out: Path, artifacts: list[str],
            precision: str = "auto"):
    """The jobs called as a script would: maps, then thresholds from them, merge and pick."""
    volume, info = open_volume(tomogram)
    loaded = [load_model(m) for m in models]
    targets = [out / f"tomo_{m.feature}.mrc" for m in loaded]
    maps = run_job(segment_tomogram(volume, info.isotropic_voxel_size, info.origin, loaded,
                                    targets, SegmentOptions(device="cpu", precision=precision)))
    # thresholds from the maps themselves, so labels and picks are never trivially empty
    thresholds = {f: round(float(np.quantile(np.asarray(open_volume(p)[0], np.float32), 0.85)), 4)
                  for f, p in maps.items()}
    settings = MergeSettings(features=list(maps), thresholds=thresholds,
                             artifacts=artifact_rules(artifacts, list(maps)))
    labels = run_job(merge_maps(maps, settings, out / "tomo_labels.mrc", info.voxel_size,
                                info.origin))
    frame = volume_frame(info, "tomo")
    pick = PickSettings(diameter=DIAMETER, threshold=thresholds["ribosome"])
    run_job(pick_job(open_volume(maps["ribosome"])[0], frame, pick, "ribosome",
                     out / "tomo_ribosome.star"))
    return thresholds, labels, frame


def _cli(tomogram: Path, models: list[str], out: Path, thresholds: dict, artifacts: list[str],
         precision: str = "auto"):
    segment = ["segment", str(tomogram), "-o", str(out), "--device", "cpu",
               "--precision", precision]
    assert main(segment + [arg for m in models for arg in ("-m", m)]) == 0
    merge = ["merge", "-o", str(out / "tomo_labels.mrc")]
    for feature in FEATURES:
        merge += ["--prob", f"{feature}={out / f'tomo_{feature}.mrc'}",
                  "--threshold", f"{feature}={thresholds[feature]!r}"]
    assert main(merge + [arg for a in artifacts for arg in ("--artifact", a)]) == 0
    assert main(["pick", str(out / "tomo_ribosome.mrc"), str(out / "tomo_ribosome.star"),
                 "--feature", "ribosome", "--diameter", str(DIAMETER), "--tomo-name", "tomo",
                 "--threshold", repr(thresholds["ribosome"])]) == 0


@pytest.mark.parametrize("artifacts, precision", [([], "bfloat16"), (["membrane"], "float32")],
                         ids=["plain", "bare-artifact"])
def test_cli_batch_and_jobs_write_the_same_files(project, tmp_path, artifacts, precision, capsys):
    """Also: the chosen arithmetic (bfloat16 changes maps slightly) reaches every face.
    bfloat16 runs 10-20x slower than float32 on a CPU without bf16 units: its faces
    segment the tomogram's middle 12 slices."""
    tomogram, models = project
    if precision == "bfloat16":
        volume, info = open_volume(tomogram)
        (tmp_path / "thin").mkdir()
        tomogram = write_volume(tmp_path / "thin" / "tomo.mrc", np.asarray(volume)[10:22],
                                VOXEL, info.origin)
    faces = {face: tmp_path / face for face in ("direct", "cli", "batch")}
    for folder in faces.values():
        folder.mkdir()
    thresholds, labels, frame = _direct(tomogram, models, faces["direct"], artifacts, precision)
    _cli(tomogram, models, faces["cli"], thresholds, artifacts, precision)
    settings = BatchSettings(models=tuple(models), output=str(faces["batch"]),
                             thresholds=thresholds, pick=("ribosome",), diameter=DIAMETER,
                             device="cpu", artifacts={a: () for a in artifacts},
                             precision=precision)
    row = process_tomogram(str(tomogram), settings)
    assert row["status"] == "done", row["error"]

    # the merge means something: both features above threshold somewhere; a bare artifact
    # takes no label and removes its voxels from every other feature
    present = set(np.unique(labels).tolist())
    assert present == ({0, 1} if artifacts else {0, 1, 2})
    for name in [f"tomo_{f}.mrc" for f in FEATURES] + ["tomo_labels.mrc"]:
        expected, info = open_volume(faces["direct"] / name)
        for face in ("cli", "batch"):
            got, got_info = open_volume(faces[face] / name)
            assert got.dtype == expected.dtype, (face, name)
            np.testing.assert_array_equal(np.asarray(got), np.asarray(expected), err_msg=face)
            assert (got_info.voxel_size, got_info.origin) == (info.voxel_size, info.origin)
    picks = read_star(faces["direct"] / "tomo_ribosome.star", frame)
    assert len(picks) > 0
    for face in ("cli", "batch"):
        got = read_star(faces[face] / "tomo_ribosome.star", frame)
        np.testing.assert_allclose(got[["z", "y", "x"]].to_numpy(float),
                                   picks[["z", "y", "x"]].to_numpy(float), atol=1e-3,
                                   err_msg=face)
    # the napari widgets' side: test_the_widgets_write_the_same_files


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_closing_segment_midway_leaves_no_file(project, tmp_path):
    tomogram, models = project
    volume, info = open_volume(tomogram)
    loaded = [load_model(m) for m in models]
    targets = [tmp_path / f"{m.feature}.mrc" for m in loaded]
    job = segment_tomogram(volume, VOXEL, info.origin, loaded, targets,
                           SegmentOptions(device="cpu", batch_slices=4))
    first = next(job)
    assert 0 < first.step < volume.shape[0]
    assert any(is_partial(p) for p in tmp_path.iterdir())  # it is being written
    job.close()
    assert _files(tmp_path) == []
    # one pass: the maps fill together, so a cancel late in the run still keeps nothing
    job = segment_tomogram(volume, VOXEL, info.origin, loaded, targets,
                           SegmentOptions(device="cpu", batch_slices=4))
    for progress in job:
        if progress.step > volume.shape[0]:
            break
    assert sum(is_partial(p) for p in tmp_path.iterdir()) == 2  # both maps under way
    job.close()
    assert _files(tmp_path) == []


def test_one_pass_equals_each_model_alone_and_preprocesses_each_slice_once(project, tmp_path,
                                                                          monkeypatch):
    """Every feature in one pass gives the maps each model gives by itself, bit for bit."""
    tomogram, models = project
    volume, info = open_volume(tomogram)
    loaded = [load_model(m) for m in models]
    targets = [tmp_path / f"{m.feature}.mrc" for m in loaded]
    updates, read = [], []
    real_slab = Preprocessor.slab

    def counted_slab(self, z0, z1):  # the real method, counting the slices it preprocesses
        read.append(min(z1, self.shape[0]) - max(z0, 0))
        return real_slab(self, z0, z1)

    monkeypatch.setattr(Preprocessor, "slab", counted_slab)
    maps = run_job(segment_tomogram(volume, VOXEL, info.origin, loaded, targets,
                                    SegmentOptions(device="cpu", batch_slices=3,
                                                   precision="float32", dtype="float32")),
                   on_progress=updates.append)
    # each slice once for both models (the first and last slabs read their context too)
    assert sum(read) <= volume.shape[0] + 2 * loaded[0].network.context
    monkeypatch.undo()
    features = [u.payload[0] for u in updates]
    assert features[:4] == ["ribosome", "membrane"] * 2  # in step, not one after the other
    assert updates[-1].step == updates[-1].total == 2 * volume.shape[0]
    for model in loaded:
        alone = segment(volume, model, VOXEL, device="cpu", precision="float32", batch_slices=3)
        np.testing.assert_array_equal(np.asarray(open_volume(maps[model.feature])[0]), alone)
    with pytest.raises(InvalidSettingsError, match="own output"):
        next(segment_tomogram(volume, VOXEL, info.origin, loaded, [targets[0]] * 2))
    with pytest.raises(InvalidSettingsError, match="one model per feature"):
        next(segment_tomogram(volume, VOXEL, info.origin, [loaded[0]] * 2, targets))
    assert run_job(segment_tomogram(volume, VOXEL, info.origin, [], [])) == {}
    other = SharedSlices(Preprocessor(volume, PreprocessSettings(binning=2)))
    with pytest.raises(TomosegError, match="own preprocessing"):
        next(iter_segment(volume, loaded[0], VOXEL, preprocessor=other))


def test_shared_slices_equal_the_preprocessor_and_compute_each_slice_once(tiny_result):
    pre = Preprocessor(tiny_result.tomogram, PreprocessSettings(binning=2))
    shared = SharedSlices(Preprocessor(tiny_result.tomogram, PreprocessSettings(binning=2)),
                          keep=2 * (4 + 2 * 2))
    nzb = pre.shape[0]
    for zb0 in range(0, nzb, 4):  # two networks in step: context 2 and context 0
        zb1 = min(zb0 + 4, nzb)
        for context in (2, 0):
            np.testing.assert_array_equal(shared.slab(zb0 - context, zb1 + context),
                                          pre.slab(zb0 - context, zb1 + context))
    assert shared.computed == nzb + 4  # each slice once, plus the 2 + 2 padding slices
    assert len(shared._slices) <= shared.keep


def test_closing_merge_midway_leaves_no_file(project, tmp_path):
    tomogram, models = project
    volume, info = open_volume(tomogram)
    maps = {f: np.random.default_rng(i).random(volume.shape, np.float32)
            for i, f in enumerate(FEATURES)}
    output = tmp_path / "labels.mrc"
    job = merge_maps(maps, MergeSettings(features=FEATURES), output, VOXEL, info.origin)
    progress = next(job)
    assert progress.step < progress.total
    job.close()
    assert _files(tmp_path) == []
    # run to the end, the same job writes its labels
    labels = run_job(merge_maps(maps, MergeSettings(features=FEATURES), output, VOXEL,
                                info.origin))
    assert _files(tmp_path) == ["labels.mrc"] and labels.max() == 2


def test_the_widgets_write_the_same_files(project, tmp_path, make_napari_viewer, qtbot):
    """The dock's Segment and Merge and the Pick widget write what the jobs write."""
    pytest.importorskip("napari")
    from napari_tomoseg._napari.picking_widget import PickingWidget
    from napari_tomoseg._napari.workflow_widget import TomosegWidget

    tomogram, models = project
    direct = tmp_path / "direct"
    direct.mkdir()
    volume, info = open_volume(tomogram)
    loaded = [load_model(m) for m in models]
    maps = run_job(segment_tomogram(volume, VOXEL, info.origin, loaded,
                                    [direct / f"tomo_{m.feature}.mrc" for m in loaded],
                                    SegmentOptions(overwrite=True)))
    # thresholds on the sliders' 0.05 grid, high enough that labels and picks are not trivial
    thresholds = {f: np.floor(float(np.quantile(np.asarray(open_volume(p)[0], np.float32), 0.85))
                              * 20) / 20 for f, p in maps.items()}
    order = ["membrane", "ribosome"]  # the session's feature order numbers the labels
    settings = MergeSettings(features=order, thresholds=thresholds,
                             artifacts=artifact_rules(["membrane"], order))
    labels = run_job(merge_maps(maps, settings, direct / "labels.mrc", VOXEL, info.origin))
    assert set(np.unique(labels).tolist()) == {0, 2}  # the artifact takes no label
    frame = volume_frame(info, "tomo")
    expected = run_job(pick_job(open_volume(maps["ribosome"])[0], frame, PickSettings(
        diameter=DIAMETER, threshold=thresholds["ribosome"]), "ribosome"))

    viewer = make_napari_viewer()
    (image,) = viewer.open(str(tomogram), plugin="napari-tomoseg")
    dock = TomosegWidget(viewer)
    dock.tomogram.value = image
    session = dock.start_session(tmp_path / "session").folder
    dock.models.update({m.feature: m for m in loaded})
    handle = dock.start_segmentation(list(FEATURES))
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    for feature in FEATURES:
        got = open_volume(session / "segmentations" / f"{feature}.mrc")[0]
        np.testing.assert_array_equal(np.asarray(got), np.asarray(open_volume(maps[feature])[0]))
    dock.thresholds.update(thresholds)
    dock.segmenting.artifacts.value = "membrane"
    handle = dock.merge()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    np.testing.assert_array_equal(open_volume(session / "segmentations" / "merged.mrc")[0],
                                  labels)
    # "Drop pieces" merges as merge --min-size does: a volume between the smallest and the
    # largest ribosome piece drops some, not all
    pieces, _ = ndimage.label(labels == 2, CONNECTIVITY)
    sizes = np.sort(np.bincount(pieces.ravel())[1:])
    smallest = float((sizes[0] + sizes[-1]) / 2 * VOXEL ** 3 / 1000)
    dock.segmenting.min_sizes.value = f"ribosome={smallest}"
    handle = dock.merge()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    fewer = run_job(merge_maps(maps, MergeSettings(
        features=order, thresholds=thresholds, artifacts=artifact_rules(["membrane"], order),
        min_sizes={"ribosome": smallest}), None, VOXEL, info.origin))
    assert 0 < (fewer == 2).sum() < (labels == 2).sum()
    np.testing.assert_array_equal(open_volume(session / "segmentations" / "merged.mrc")[0],
                                  fewer)
    picker = PickingWidget(viewer)
    picker.source.value = dock.controller.overlay("ribosome")
    picker.diameter.value = DIAMETER
    picker.threshold.value = thresholds["ribosome"]
    handle = picker.pick()
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    picker.output.value = tmp_path / "widget.star"
    picker.export()
    got = read_star(tmp_path / "widget.star", frame)
    assert len(expected) > 0
    np.testing.assert_allclose(np.sort(got[["z", "y", "x"]].to_numpy(float), axis=0),
                               np.sort(expected[["z", "y", "x"]].to_numpy(float), axis=0),
                               atol=1e-3)


def test_cancelling_from_the_dock_leaves_no_partial_file(project, tmp_path, make_napari_viewer,
                                                         qtbot, tiny_result):
    """Stop during segmentation and merge: no partial file, no half-written output."""
    pytest.importorskip("napari")
    from napari_tomoseg._napari.workflow_widget import TomosegWidget

    tomogram, models = project
    viewer = make_napari_viewer()
    (image,) = viewer.open(str(tomogram), plugin="napari-tomoseg")
    dock = TomosegWidget(viewer)
    dock.tomogram.value = image
    folder = dock.start_session(tmp_path / "session").folder / "segmentations"
    dock.models.update({m.feature: m for m in (load_model(p) for p in models)})
    seen = []
    handle = dock.start_segmentation(list(FEATURES))
    handle._relay.progressed.connect(lambda p: (seen.append(p), handle.cancel()))
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    assert handle.outcome == "cancelled" and seen
    assert not folder.exists() or _files(folder) == []
    session = dock.controller.session
    for feature in FEATURES:  # finished maps, as a completed segmentation leaves them
        write_volume(session.segmentation_path(feature),
                     np.full(image.data.shape, 0.7, np.float16), VOXEL, image.translate)
    handle = dock.merge()
    handle.cancel()  # before its first slab is merged
    qtbot.waitUntil(lambda: not handle.is_running, timeout=60_000)
    assert handle.outcome == "cancelled"
    assert _files(folder) == sorted(f"{f}.mrc" for f in FEATURES)  # no merged.mrc
    assert not [p for p in tmp_path.rglob("*") if is_partial(p)]
