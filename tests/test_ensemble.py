"""Ensembles: networks trained apart on the same boxes, their probabilities averaged."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_tomoseg.annotations import boxes_from_truth
from napari_tomoseg.errors import TomosegError
from napari_tomoseg.io.mrc_read import open_volume
from napari_tomoseg.jobs.progress import run_job
from napari_tomoseg.jobs.train import train_feature
from napari_tomoseg.metrics import dice
from napari_tomoseg.nn.ensemble import Ensemble
from napari_tomoseg.nn.inference import segment
from napari_tomoseg.nn.model_file import TrainedModel, load_model, save_model
from napari_tomoseg.nn.models import build_model
from napari_tomoseg.nn.training import TrainingSettings
from napari_tomoseg.preprocess import PreprocessSettings

SHAPE = (12, 48, 48)
SMALL = {"context": 1, "base": 4, "levels": 2, "rotations": 1}  # stored whole, as trained


def _stripe():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=SHAPE).astype(np.float32)
    truth = np.zeros(SHAPE, np.uint8)
    truth[:, 20:28, :] = 1
    volume[truth > 0] += 2.0
    return volume, truth, boxes_from_truth(truth, "membrane", 2, 4, size=16, seed=1)


def _model(network, parameters) -> TrainedModel:
    return TrainedModel(network=network.eval(), architecture="unet", parameters=parameters,
                        preprocess=PreprocessSettings(binning=1), voxel_size=10.0, box_size=16,
                        feature="membrane", threshold=0.4)


def test_an_ensemble_segments_as_the_mean_of_its_members_and_survives_its_file(tmp_path):
    torch.manual_seed(0)
    parameters = {**SMALL, "members": 2}
    ensemble = _model(build_model("unet", parameters), parameters)
    assert isinstance(ensemble.network, Ensemble) and len(ensemble.network.members) == 2
    volume = _stripe()[0]
    maps = [segment(volume, _model(m, SMALL), 10.0) for m in ensemble.network.members]
    together = segment(volume, ensemble, 10.0)  # the fast inference copy of each member
    np.testing.assert_allclose(together, np.mean(maps, axis=0), atol=2e-3)
    assert np.abs(maps[0] - maps[1]).max() > 0.01  # the members differ: the mean is no copy
    save_model(ensemble, tmp_path / "e.pt")
    loaded = load_model(tmp_path / "e.pt")
    assert loaded.parameters["members"] == 2 and loaded.threshold == 0.4
    np.testing.assert_allclose(segment(volume, loaded, 10.0), together, atol=1e-6)
    meta = torch.load(tmp_path / "e.pt", weights_only=True)["metadata"]
    assert '"format_version": 6' in meta  # older versions refuse it with a clear message
    assert '"members": 2' in meta and '"edge": "mirror"' in meta
    member = build_model("unet", {**SMALL, "edge": "zeros"})
    save_model(_model(member, SMALL), tmp_path / "one.pt")
    assert '"format_version": 3' in torch.load(tmp_path / "one.pt", weights_only=True)["metadata"]
    with pytest.raises(TomosegError, match="1 to 8"):
        build_model("unet", {**SMALL, "members": 9})


def test_each_member_is_the_network_its_seed_trains_alone_and_the_thresholds_are_averaged(
        tmp_path, monkeypatch):
    from napari_tomoseg.jobs import checkpoints

    monkeypatch.setattr(checkpoints, "CHECKPOINT_EVERY_S", 0.0)
    volume, truth, boxes = _stripe()
    settings = TrainingSettings(steps=30, batch_size=2, min_steps=10, check_every=5,
                                patience=2, members=2, seed=5, parameters=SMALL,
                                preview_every_s=1e9)
    seen, kept = [], tmp_path / "m.checkpoint.pt"

    def watch(progress):
        seen.append(progress.message)
        if kept.exists():  # a kill keeps what is written: the first network's best weights,
            networks = load_model(kept).parameters.get("members", 1)  # then both networks'
            seen.append(f"checkpoint of {networks} during network {progress.payload.member[0]}")

    model = run_job(train_feature(volume, 10.0, boxes, "membrane", settings,
                                  preprocess=PreprocessSettings(binning=1),
                                  output=tmp_path / "m.pt"), on_progress=watch)
    assert "checkpoint of 1 during network 1" in seen and "checkpoint of 2 during network 2" in seen
    assert not kept.exists()
    first, second = model.network.members
    assert any(not torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                      second.state_dict().values()))
    infos = model.info["members"]
    assert [i["training"]["seed"] for i in infos] == [5, 6]
    assert model.threshold == pytest.approx(np.mean([i["held_out"]["threshold"] for i in infos]))
    assert model.info["held_out"]["dice"] > 0.5 and model.info["held_out"]["mean_of_members"]
    alone = run_job(train_feature(volume, 10.0, boxes, "membrane",  # member 2 is seed 6 alone
                                  replace(settings, seed=6, members=1),
                                  preprocess=PreprocessSettings(binning=1)))
    assert all(torch.equal(v, alone.network.state_dict()[k])
               for k, v in second.state_dict().items())
    assert any(m.startswith("network 1 of 2:") for m in seen)
    assert any(m.startswith("network 2 of 2:") for m in seen)
    saved = load_model(tmp_path / "m.pt")
    assert saved.parameters["members"] == 2
    assert dice(segment(volume, saved, 10.0) >= saved.threshold, truth > 0) > 0.7


def test_a_cancel_in_the_second_member_keeps_the_first(tmp_path):
    """Stopped before the second network's first check: the first, finished, is kept
    alone (the unscored second is left out); stopped after it, both."""
    volume, _, boxes = _stripe()
    settings = TrainingSettings(steps=30, batch_size=2, min_steps=10, check_every=5,
                                members=3, parameters=SMALL, preview_every_s=1e9)
    job = train_feature(volume, 10.0, boxes, "membrane", settings,
                        preprocess=PreprocessSettings(binning=1), output=tmp_path / "m.pt")
    for progress in job:
        if progress.payload.member == (2, 3) and progress.payload.step >= 32:
            break
    job.close()
    kept = load_model(tmp_path / "m.pt")
    assert "members" not in kept.parameters and kept.info.get("held_out")
    assert not kept.info.get("unchecked")
    job = train_feature(volume, 10.0, boxes, "membrane", settings, overwrite=True,
                        preprocess=PreprocessSettings(binning=1), output=tmp_path / "m.pt")
    for progress in job:  # past the second network's checks: both kept
        if progress.payload.member == (2, 3) and progress.payload.step >= 47:
            break
    job.close()
    kept = load_model(tmp_path / "m.pt")
    assert kept.parameters["members"] == 2
    assert kept.threshold == pytest.approx(np.mean([m["held_out"]["threshold"]
                                                    for m in kept.info["members"]]))
    assert [len(m["history"]) for m in kept.info["members"]] == [30, 17]


def test_the_cli_trains_an_ensemble(tmp_path, tiny_files):
    from napari_tomoseg.cli import main

    boxes = tmp_path / "boxes"
    assert main(["boxes", str(tiny_files["ribosome"]), str(boxes), "--feature", "ribosome",
                 "--positives", "4", "--negatives", "8", "--size", "32"]) == 0
    model = tmp_path / "ribosome.pt"
    assert main(["train", str(tiny_files["tomogram"]), "--boxes", str(boxes), "--feature",
                 "ribosome", "--steps", "3", "--members", "2", "--rotations", "1",
                 "--output", str(model)]) == 0
    assert load_model(model).parameters["members"] == 2
    assert main(["train", str(tiny_files["tomogram"]), "--boxes", str(boxes), "--feature",
                 "ribosome", "--steps", "1", "--rotations", "1", "--output",
                 str(tmp_path / "one.pt")]) == 0
    assert main(["train", str(tiny_files["tomogram"]), "--boxes", str(boxes), "--feature",
                 "ribosome", "--steps", "2", "--members", "3", "--resume",
                 str(tmp_path / "one.pt"), "--output", str(tmp_path / "more.pt")]) == 2
    assert main(["segment", str(tiny_files["tomogram"]), "-m", str(model), "-o",
                 str(tmp_path / "seg")]) == 0
    prob, _ = open_volume(tmp_path / "seg" / "tiny_ribosome.mrc")
    assert 0 <= float(np.min(prob)) <= float(np.max(prob)) <= 1


def test_a_continued_ensemble_continues_every_member():
    volume, _, boxes = _stripe()
    settings = TrainingSettings(steps=6, batch_size=2, hold_out=False, members=2,
                                parameters=SMALL, preview_every_s=1e9)
    first = run_job(train_feature(volume, 10.0, boxes, "membrane", settings,
                                  preprocess=PreprocessSettings(binning=1)))
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in first.network.members]
    again = run_job(train_feature(volume, 10.0, boxes, "membrane",
                                  TrainingSettings(steps=4, batch_size=2, hold_out=False,
                                                   preview_every_s=1e9),
                                  start_from=first))
    assert again.parameters["members"] == 2
    for old, member in zip(before, again.network.members):
        assert any(not torch.equal(old[k], v) for k, v in member.state_dict().items())
    for old, member in zip(before, first.network.members):  # the model given is untouched
        assert all(torch.equal(old[k], v) for k, v in member.state_dict().items())
    for asked in (3, 1):  # 1 used to continue both networks without a word
        with pytest.raises(TomosegError, match="continues with them"):
            run_job(train_feature(volume, 10.0, boxes, "membrane",
                                  TrainingSettings(steps=2, members=asked, hold_out=False),
                                  start_from=first))


@pytest.mark.feature_members
def test_ribosomes_train_three_networks_by_default_the_rest_one():
    """The product default (nn.models.FEATURE_ENSEMBLES): what the user leaves open only."""
    open_ = TrainingSettings()
    for name in ("ribosome", "70S ribosomes", "microtubules"):
        assert (open_.for_feature(name).members, open_.for_feature(name).patience) == (3, 5)
    for name in ("membrane", "ribosome-free zone", None):
        assert (open_.for_feature(name).members, open_.for_feature(name).patience) == (1, 10)
    assert TrainingSettings(members=1).for_feature("ribosome").patience == 10
    for asked in (2, 4):  # other numbers of networks: patience 5 was measured for 3 only
        assert TrainingSettings(members=asked).for_feature("ribosome").patience == 10
    assert TrainingSettings(members=3).for_feature("membrane").patience == 10
    assert TrainingSettings(patience=7).for_feature("ribosome").patience == 7
    assert TrainingSettings(architecture="eman2").for_feature("ribosome").members == 1
    volume, _, boxes = _stripe()
    boxes = [replace(b, feature="ribosome") for b in boxes]
    settings = TrainingSettings(steps=12, batch_size=2, min_steps=4, check_every=4,
                                parameters=SMALL, preview_every_s=1e9)
    model = run_job(train_feature(volume, 10.0, boxes, "ribosome", settings,
                                  preprocess=PreprocessSettings(binning=1)))
    assert model.parameters["members"] == 3 and len(model.network.members) == 3
    assert [m["training"]["patience"] for m in model.info["members"]] == [5, 5, 5]
    single = run_job(train_feature(volume, 10.0, boxes, "ribosome", replace(settings, members=1),
                                   preprocess=PreprocessSettings(binning=1)))
    assert "members" not in single.parameters and single.info["training"]["patience"] == 10
