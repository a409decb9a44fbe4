"""Bad inputs and faults: each ends in one clear line and exit status 2, and writes nothing.

Every case runs the real CLI in-process (``napari_tomoseg.cli.main``) on
tiny files made here, and checks three things: the exit status, that the
message is one line naming the problem (no traceback), and that the
output folder holds no result afterwards. docs/reliability.md lists the
cases with the symptom a user sees.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch

from napari_tomoseg.annotations import Box, boxes_from_truth, load_boxes, save_boxes
from napari_tomoseg.batch_manifest import Manifest
from napari_tomoseg.cli import main
from napari_tomoseg.errors import (InvalidBoxesError, NonFiniteError, OutputNotWritableError,
                                   TomosegError, user_message)
from napari_tomoseg.io.mrc import open_volume, write_volume
from napari_tomoseg.io.paths import safe_name
from napari_tomoseg.nn import model_file
from napari_tomoseg.nn.model_file import (InvalidModelError, TrainedModel, load_model, save_model,
                                          save_model_or_rescue, weights_digest)
from napari_tomoseg.nn.models import build_model
from napari_tomoseg.preprocess import PreprocessSettings

SHAPE = (16, 48, 48)
VOXEL = 10.0
TINY_UNET = {"context": 1, "base": 4, "levels": 2}


# ---------------------------------------------------------------- files for the cases

def _tomogram() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=SHAPE).astype(np.float32)


def _truth() -> np.ndarray:
    truth = np.zeros(SHAPE, np.uint8)
    truth[:, 20:28, :] = 1  # a slab-like "membrane" across every slice
    return truth


def _model(feature: str = "membrane", voxel: float = VOXEL) -> TrainedModel:
    torch.manual_seed(0)
    return TrainedModel(network=build_model("unet", TINY_UNET).eval(), architecture="unet",
                        parameters=TINY_UNET, preprocess=PreprocessSettings(), voxel_size=voxel,
                        box_size=16, feature=feature)


def _raw_model_file(path: Path, meta_changes: dict | None = None, checksum: bool = True,
                    state_change=None) -> Path:
    """A model file written by hand, to hold what save_model would never write."""
    model = _model()
    state = {k: v.detach().clone() for k, v in model.network.state_dict().items()}
    if state_change:
        state_change(state)
    meta = model.metadata()
    for key, value in (meta_changes or {}).items():
        if value is _DELETE:
            meta.pop(key)
        else:
            meta[key] = value
    payload = {"format": model_file.FORMAT, "metadata": json.dumps(meta), "state_dict": state}
    if checksum:
        payload["weights_sha256"] = weights_digest(state)
    torch.save(payload, path)
    return path


_DELETE = object()


class Files:
    """The inputs of one test, made on demand in its own folder."""

    def __init__(self, root: Path):
        self.root = root
        self.out = root / "out"  # must stay free of results after a refused run

    def mrc(self, name: str, data: np.ndarray | None = None, voxel: float = VOXEL,
            origin=(0.0, 0.0, 0.0)) -> str:
        path = self.root / name
        write_volume(path, _tomogram() if data is None else data, voxel, origin)
        return str(path)

    def nan_tomogram(self, every_slice: bool = False) -> str:
        data = _tomogram()
        slices = [z for z in range(1, SHAPE[0] - 1) if z != SHAPE[0] // 2] if every_slice else [5]
        for z in slices:  # not the first, middle or last slice: the open-time sample misses it
            data[z, 10, 10] = np.nan
        return self.mrc("nan.mrc", data)

    def probability(self, name: str = "prob.mrc", voxel: float = VOXEL, nan: bool = False) -> str:
        prob = np.zeros(SHAPE, np.float32)
        prob[6:10, 20:28, 20:28] = 0.9
        if nan:
            prob[5, 3, 3] = np.nan
        return self.mrc(name, prob, voxel)

    def model(self, feature: str = "membrane", voxel: float = VOXEL) -> str:
        return str(save_model(_model(feature, voxel), self.root / f"{safe_name(feature)}.pt"))

    def boxes(self, size: int = 16, change=None) -> str:
        boxes = boxes_from_truth(_truth(), "membrane", 2, 4, size=size, seed=1)
        if change:
            change(boxes)
        folder = self.root / "boxes"
        save_boxes(folder, boxes)
        return str(folder)

    def box_json(self, records) -> str:
        folder = self.root / "boxes"
        folder.mkdir(exist_ok=True)
        (folder / "boxes.json").write_text(json.dumps(records))
        return str(folder)

    def train(self, tomogram: str, boxes: str, *extra: str) -> list[str]:
        return ["train", tomogram, "--boxes", boxes, "--feature", "membrane", "--steps", "2",
                "--batch-size", "2", "--arch", "unet", "-o", str(self.out / "m.pt"), *extra]


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    return code, capsys.readouterr().err


def _results(folder: Path) -> list[str]:
    """Every file under ``folder`` (hidden partials included): a refused run leaves none."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _error_lines(err: str) -> list[str]:
    """stderr without progress bars (tqdm redraws with carriage returns)."""
    lines = [line.split("\r")[-1] for line in err.splitlines()]
    return [line for line in lines if line.strip() and "it/s]" not in line
            and not line.rstrip().endswith("/s]")]


def _one_line_error(code: int, err: str, fragment: str) -> None:
    lines = _error_lines(err)
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert "error:" in lines[0]
    assert fragment.lower() in lines[0].lower(), lines[0]


# ---------------------------------------------------------------- the cases

def _bad_boxes_record(**change):
    record = {"id": "a1", "feature": "membrane", "z": 3, "y": 24.0, "x": 24.0, "size": 16,
              "positive": False}
    record.update(change)
    return {"version": 1, "boxes": [{k: v for k, v in record.items() if v is not _DELETE}]}


def _grow_mask(boxes):
    first = next(b for b in boxes if b.positive)
    first.mask = np.ones((first.size + 4, first.size + 4), np.uint8)


def _shrink_mask(boxes):
    first = next(b for b in boxes if b.positive)
    first.mask = np.ones((first.size - 4, first.size - 4), np.uint8)


def _move_out(axis: str, value: float):
    def change(boxes):
        setattr(boxes[0], axis, value)
    return change


def _mix_sizes(boxes):
    negative = next(b for b in boxes if not b.positive)
    negative.size = 24


def _folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _anisotropic(f: Files) -> str:
    """A tomogram whose z step is twice its x and y step (10 x 10 x 20 A)."""
    path = Path(f.mrc("aniso.mrc"))
    with mrcfile.open(path, mode="r+") as mrc:
        mrc.voxel_size = (10.0, 10.0, 20.0)
    return str(path)


def _session_of(f: Files, tomogram: str) -> str:
    """An annotation session made on ``tomogram``, with the boxes of ``f.boxes()``."""
    from napari_tomoseg.annotations import load_boxes
    from napari_tomoseg.session import Session

    session = Session.create(f.root / "session", tomogram, VOXEL, SHAPE)
    session.boxes = load_boxes(f.boxes())
    session.save()
    return str(f.root / "session")


CASES = {
    "session-of-another-tomogram": (lambda f: f.train(
        f.mrc("other.mrc", _tomogram() + 1.0), _session_of(f, f.mrc("t.mrc"))),
        "made on another tomogram"),
    "resume-with-another-arch": (lambda f: f.train(f.mrc("t.mrc"), f.boxes(), "--resume",
                                                   f.model(), "--arch", "eman2"),
                                 "cannot continue"),
    "anisotropic-voxels-train": (lambda f: f.train(_anisotropic(f), f.boxes()), "not cubes"),
    "constant-tomogram-train": (lambda f: f.train(f.mrc("flat.mrc", np.full(SHAPE, 3.0,
                                                                         np.float32)),
                                                  f.boxes()), "no contrast"),
    # larger slices: filtering leaves ~1e-16 of rounding noise, which normalising blew up
    "constant-wide-tomogram-train": (lambda f: f.train(f.mrc("wide.mrc", np.full(
        (SHAPE[0], 200, 300), 0.1, np.float32)), f.boxes()), "no contrast"),
    "anisotropic-voxels-segment": (lambda f: ["segment", _anisotropic(f), "-m", f.model(),
                                              "-o", str(f.out)], "not cubes"),
    # NaN / Inf
    "nan-slice-segment": (lambda f: ["segment", f.nan_tomogram(), "-m", f.model(),
                                     "-o", str(f.out)], "NaN"),
    "nan-slices-train": (lambda f: f.train(f.nan_tomogram(every_slice=True), f.boxes()), "NaN"),
    "nan-probability-pick": (lambda f: ["pick", f.probability(nan=True), str(f.out / "p.star")],
                             "NaN"),
    "nan-probability-merge": (lambda f: ["merge", "--prob", f"a={f.probability(nan=True)}",
                                         "-o", str(f.out / "labels.mrc")], "NaN"),
    "model-nan-weights-resume": (lambda f: f.train(f.mrc("t.mrc"), f.boxes(), "--resume", str(
        _raw_model_file(f.root / "nan.pt", state_change=lambda s: [
            t.fill_(float("nan")) for t in s.values() if t.is_floating_point()]))), "NaN"),
    # voxel size
    "voxel-0-segment": (lambda f: ["segment", f.mrc("t.mrc", voxel=0.0), "-m", f.model(),
                                   "-o", str(f.out)], "--voxel-size"),
    "voxel-negative-train": (lambda f: f.train(f.mrc("t.mrc", voxel=-3.0), f.boxes()),
                             "no usable voxel size"),
    "voxel-1e6-pick": (lambda f: ["pick", f.probability(voxel=1e6), str(f.out / "p.star")],
                       "no usable voxel size"),
    "voxel-0.01-segment": (lambda f: ["segment", f.mrc("t.mrc", voxel=0.01), "-m", f.model(),
                                      "-o", str(f.out)], "no usable voxel size"),
    "voxel-option-0": (lambda f: ["segment", f.mrc("t.mrc"), "-m", f.model(), "--voxel-size",
                                  "0", "-o", str(f.out)], "--voxel-size"),
    "rescale-factor-10": (lambda f: ["segment", f.mrc("t.mrc"), "-m", f.model(voxel=100.0),
                                     "-o", str(f.out)], "factor 10"),
    # model files
    "model-0-bytes": (lambda f: ["segment", f.mrc("t.mrc"), "-m", _empty(f.root / "m.pt"),
                                 "-o", str(f.out)], "empty"),
    "model-no-voxel-size": (lambda f: ["segment", f.mrc("t.mrc"), "-m", str(_raw_model_file(
        f.root / "m.pt", {"voxel_size": _DELETE})), "-o", str(f.out)], "voxel size"),
    "model-voxel-size-0": (lambda f: ["segment", f.mrc("t.mrc"), "-m", str(_raw_model_file(
        f.root / "m.pt", {"voxel_size": 0})), "-o", str(f.out)], "voxel size"),
    "model-bad-preprocess": (lambda f: ["segment", f.mrc("t.mrc"), "-m", str(_raw_model_file(
        f.root / "m.pt", {"preprocess": {"binning": 0}})), "-o", str(f.out)], "preprocessing"),
    "model-flipped-bytes": (lambda f: ["segment", f.mrc("t.mrc"), "-m", _flipped(f),
                                       "-o", str(f.out)], "checksum"),
    # boxes
    "mask-bigger-than-box": (lambda f: f.train(f.mrc("t.mrc"), f.boxes(change=_grow_mask)),
                             "20 x 20 pixels but the box is 16 x 16"),
    "mask-smaller-than-box": (lambda f: f.train(f.mrc("t.mrc"), f.boxes(change=_shrink_mask)),
                              "12 x 12 pixels"),
    "box-slice-outside": (lambda f: f.train(f.mrc("t.mrc"), f.boxes(change=_move_out("z", 99))),
                          "outside"),
    "box-x-outside": (lambda f: f.train(f.mrc("t.mrc"), f.boxes(change=_move_out("x", 5000.0))),
                      "outside"),
    "mixed-box-sizes": (lambda f: f.train(f.mrc("t.mrc"), f.boxes(change=_mix_sizes)),
                        "different sizes"),
    "binning-100": (lambda f: f.train(f.mrc("t.mrc"), f.boxes(), "--binning", "100"),
                    "binning 100"),
    "boxes-size-0": (lambda f: ["boxes", f.mrc("truth.mrc", _truth()), str(f.out),
                                "--feature", "membrane", "--size", "0"], "--size"),
    "boxes-empty-truth": (lambda f: ["boxes", f.mrc("truth.mrc", np.zeros(SHAPE, np.uint8)),
                                     str(f.out), "--feature", "membrane", "--size", "16"],
                          "no place"),
    "boxes-json-missing-z": (lambda f: f.train(f.mrc("t.mrc"), f.box_json(
        _bad_boxes_record(z=_DELETE))), "has no z"),
    "boxes-json-z-ten": (lambda f: f.train(f.mrc("t.mrc"), f.box_json(
        _bad_boxes_record(z="ten"))), "'ten'"),
    "boxes-json-list": (lambda f: f.train(f.mrc("t.mrc"), f.box_json([1, 2, 3])),
                        "list of boxes"),
    "boxes-json-boxes-dict": (lambda f: f.train(f.mrc("t.mrc"), f.box_json({"boxes": {"a": 1}})),
                              "list of boxes"),
    "boxes-json-record-list": (lambda f: f.train(f.mrc("t.mrc"), f.box_json({"boxes": [[3, 4]]})),
                               "not a record"),
    "boxes-json-truncated": (lambda f: f.train(f.mrc("t.mrc"), _truncated_json(f)),
                             "not a valid box file"),
    "masks-npz-corrupt": (lambda f: f.train(f.mrc("t.mrc"), _corrupt_masks(f)),
                          "not a readable mask archive"),
    # merge
    "merge-feature-twice": (lambda f: ["merge", "--prob", f"a={f.probability()}", "--prob",
                                       f"a={f.probability('b.mrc')}", "-o",
                                       str(f.out / "l.mrc")], "twice"),
    "merge-voxel-sizes-differ": (lambda f: ["merge", "--prob", f"a={f.probability()}", "--prob",
                                            f"b={f.probability('b.mrc', voxel=20.0)}", "-o",
                                            str(f.out / "l.mrc")], "20 A voxels"),
    "merge-output-is-a-folder": (lambda f: ["merge", "--prob", f"a={f.probability()}", "-o",
                                            str(_folder(f.root / "labels.mrc")), "--overwrite"],
                                 "labels.mrc: it is a folder"),
    "merge-output-csv": (lambda f: ["merge", "--prob", f"a={f.probability()}", "-o",
                                    str(f.out / "x.csv")], "name it .mrc"),
    "synth-name-outside": (lambda f: ["synth", str(f.out), "--name", "../escape", "--shape",
                                      "16", "32", "32"], "--name '../escape'"),
    "merge-threshold-abc": (lambda f: ["merge", "--prob", f"a={f.probability()}", "--threshold",
                                       "a=abc", "-o", str(f.out / "l.mrc")], "a=abc"),
    "merge-threshold-1.5": (lambda f: ["merge", "--prob", f"a={f.probability()}", "--threshold",
                                       "a=1.5", "-o", str(f.out / "l.mrc")], "[0, 1)"),
    # options
    "pick-spacing-0": (lambda f: ["pick", f.probability(), str(f.out / "p.star"), "--spacing",
                                  "0"], "--spacing"),
    "pick-unbinned-voxel-0": (lambda f: ["pick", f.probability(), str(f.out / "p.star"),
                                         "--unbinned-voxel-size", "0"], "--unbinned-voxel-size"),
    "pick-max-picks-0": (lambda f: ["pick", f.probability(), str(f.out / "p.star"),
                                    "--max-picks", "0"], "--max-picks"),
    "pick-threshold-text": (lambda f: ["pick", f.probability(), str(f.out / "p.star"),
                                       "--threshold", "high"], "--threshold"),
    "average-mask-radius-0": (lambda f: ["average", f.mrc("t.mrc"), "p.star", "-o", str(f.out),
                                         "--mask-radius", "0"], "--mask-radius"),
    "train-learning-rate-negative": (lambda f: f.train(f.mrc("t.mrc"), f.boxes(),
                                                       "--learning-rate", "-0.001"),
                                     "--learning-rate"),
    "train-steps-0": (lambda f: f.train(f.mrc("t.mrc"), f.boxes(), "--steps", "0"), "--steps"),
    "csv-text-in-x": (lambda f: ["points", _text_csv(f), str(f.out / "p.star"), "--tomogram",
                                 f.mrc("t.mrc")], "numbers"),
    # outputs that cannot be written
    "output-under-a-file": (lambda f: ["segment", f.mrc("t.mrc"), "-m", f.model(), "-o",
                                       str(_a_file(f) / "sub")], "cannot write"),
    "train-output-under-a-file": (lambda f: f.train(f.mrc("t.mrc"), f.boxes(), "-o",
                                                    str(_a_file(f) / "m.pt")), "cannot write"),
}


def _empty(path: Path) -> str:
    path.write_bytes(b"")
    return str(path)


def _flipped(f: Files) -> str:
    """A valid model file whose largest weight tensor has 4 KiB of flipped bytes on disk."""
    path = Path(f.model())
    state = load_model(path).network.state_dict()
    largest = max(state.values(), key=lambda t: t.numel()).contiguous().numpy().tobytes()
    raw = bytearray(path.read_bytes())
    start = raw.find(largest[:256])
    assert start > 0
    n = min(4096, len(largest))
    raw[start:start + n] = bytes(b ^ 0xFF for b in raw[start:start + n])
    path.write_bytes(bytes(raw))
    return str(path)


def _truncated_json(f: Files) -> str:
    folder = Path(f.boxes())
    text = (folder / "boxes.json").read_text()
    (folder / "boxes.json").write_text(text[: len(text) // 2])
    return str(folder)


def _corrupt_masks(f: Files) -> str:
    """A box folder of version 1 (boxes.json + masks.npz) whose masks.npz is damaged."""
    from tests.conftest import _write_version1_box_folder

    folder = Path(f.boxes())
    _write_version1_box_folder(folder, load_boxes(folder))
    raw = (folder / "masks.npz").read_bytes()
    (folder / "masks.npz").write_bytes(raw[:40] + b"\0" * 50 + raw[90:])
    return str(folder)


def _text_csv(f: Files) -> str:
    path = f.root / "p.csv"
    path.write_text("x,y,z\n10,12,3\nten,5,2\n")
    return str(path)


def _a_file(f: Files) -> Path:
    path = f.root / "plain-file"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line_and_writes_nothing(case, tmp_path, capsys):
    build, fragment = CASES[case]
    files = Files(tmp_path)
    argv = build(files)
    capsys.readouterr()
    code, err = _run(argv, capsys)
    _one_line_error(code, err, fragment)
    assert _results(files.out) == []


# ---------------------------------------------------------------- the right run still works

def test_voxel_size_option_rescues_a_header_without_one(tmp_path, capsys):
    files = Files(tmp_path)
    code, err = _run(["segment", files.mrc("t.mrc", voxel=0.0), "-m", files.model(),
                      "--voxel-size", "10", "-o", str(files.out)], capsys)
    assert code == 0, err
    _, info = open_volume(files.out / "t_membrane.mrc")
    assert info.voxel_size == (10.0, 10.0, 10.0)


def test_feature_name_from_a_model_file_cannot_leave_the_output(tmp_path, capsys):
    files = Files(tmp_path)
    evil = _model(feature="/../../../escaped")
    path = tmp_path / "evil.pt"
    save_model(evil, path)
    (tmp_path / "deep" / "er").mkdir(parents=True)
    out = tmp_path / "deep" / "er" / "out"
    code, err = _run(["segment", files.mrc("t.mrc"), "-m", str(path), "-o", str(out)], capsys)
    assert code == 0, err
    assert _results(out) == ["t_escaped.mrc"]
    outside = [p for p in tmp_path.rglob("*escaped*") if out not in p.parents]
    assert outside == []


@pytest.mark.parametrize("name, expected", [("/../../..", "feature"), ("a/b", "a_b"),
                                            ("..", "feature"), ("outer membrane", "outer_membrane"),
                                            ("ribosome", "ribosome"), ("x\x00y", "x_y")])
def test_safe_name(name, expected):
    assert safe_name(name) == expected


def test_model_without_checksum_loads_with_a_warning(tmp_path):
    path = _raw_model_file(tmp_path / "old.pt", checksum=False)
    with pytest.warns(UserWarning, match="no weights checksum"):
        model = load_model(path)
    assert model.voxel_size == VOXEL


def test_model_checksum_detects_a_changed_weight(tmp_path):
    def nudge(state):
        next(t for t in state.values() if t.is_floating_point()).view(-1)[0] += 1e-3
    path = _raw_model_file(tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    nudge(payload["state_dict"])
    torch.save(payload, path)
    with pytest.raises(InvalidModelError, match="checksum"):
        load_model(path)


def test_nan_weights_are_never_saved(tmp_path):
    model = _model()
    with torch.no_grad():
        next(model.network.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(NonFiniteError):
        save_model(model, tmp_path / "m.pt")
    assert _results(tmp_path) == []


def test_nan_loss_stops_training_before_the_weights_change(tmp_path):
    from napari_tomoseg.nn.training import TrainingSettings, iter_train

    model = _model()
    with torch.no_grad():
        next(model.network.parameters()).view(-1)[0] = float("nan")
    boxes = boxes_from_truth(_truth(), "membrane", 2, 4, size=16, seed=1)
    with pytest.raises(NonFiniteError, match="diverged at step 1"):
        for _ in iter_train(_tomogram(), boxes, VOXEL, TrainingSettings(steps=2, batch_size=2),
                            start_from=model):
            pass


def test_a_failed_model_write_keeps_the_model_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setattr(model_file.tempfile, "tempdir", str(tmp_path / "tmp"))
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    with pytest.raises(OutputNotWritableError, match="saved to") as info:
        save_model_or_rescue(_model(), blocker / "m.pt")
    rescued = Path(str(info.value).split("saved to ")[1].split(" instead")[0])
    assert rescued.parent == tmp_path / "tmp" / "tomoseg-rescued-models"
    assert load_model(rescued).feature == "membrane"


def test_train_on_good_input_still_writes_a_model(tmp_path, capsys):
    files = Files(tmp_path)
    code, err = _run(files.train(files.mrc("t.mrc"), files.boxes()), capsys)
    assert code == 0, err
    assert load_model(files.out / "m.pt").history[-1][0] == 2


def test_box_validation_functions_directly(tmp_path):
    folder = tmp_path / "b"
    save_boxes(folder, [Box("m", 1, 5.0, 5.0, 16, False)])
    assert len(load_boxes(folder)) == 1
    (folder / "boxes.json").write_text(json.dumps(_bad_boxes_record(y=float("inf"))
                                                  ).replace("Infinity", "1e999"))
    with pytest.raises(InvalidBoxesError, match="y must be a number"):
        load_boxes(folder)


def test_truncated_batch_manifest_is_one_clear_error(tmp_path):
    (tmp_path / "manifest.json").write_text('{"a": {"status": "do')
    with pytest.raises(TomosegError, match="manifest"):
        Manifest(tmp_path)


def test_error_policy_of_cli_and_widgets():
    assert user_message(TomosegError("bad box\nmore")) == "bad box"
    full = OSError(28, "No space left on device", "/data/out.mrc")
    assert user_message(full) == "cannot use /data/out.mrc: the disk is full."
    assert user_message(MemoryError()).startswith("out of memory")
    assert user_message(KeyError("x")) is None  # a bug: shown with its traceback


def test_user_errors_form_one_hierarchy_still_importable_from_their_old_modules(tmp_path):
    from napari_tomoseg import errors
    from napari_tomoseg._napari.writer import _write_volume
    from napari_tomoseg.io import copick_project
    from napari_tomoseg.nn import inference
    from napari_tomoseg.tilt_series import read_imod_xf

    assert inference.Cancelled is errors.Cancelled
    assert model_file.InvalidModelError is errors.InvalidModelError
    assert copick_project.CopickError is errors.CopickError
    with pytest.raises(errors.InvalidVolumeError, match="only 3D"):
        _write_volume(str(tmp_path / "flat.mrc"), np.zeros((4, 4), np.float32), {})
    assert not (tmp_path / "flat.mrc").exists()
    bad = tmp_path / "bad.xf"
    bad.write_text("1 0 0 1 2.5\n")
    with pytest.raises(errors.InvalidAlignmentError, match="6 numbers"):
        read_imod_xf(bad)
    bad.write_text("one two three four five six\n")
    with pytest.raises(errors.InvalidAlignmentError, match="not an IMOD .xf file"):
        read_imod_xf(bad)


def test_widget_report_shows_user_errors_and_logs_bugs(caplog):
    pytest.importorskip("napari")
    from napari_tomoseg._napari.notify import guarded

    shown: list[str] = []
    guarded(lambda: (_ for _ in ()).throw(PermissionError(13, "denied", "/ro/x.mrc")),
            shown.append)()
    assert shown == ["cannot use /ro/x.mrc: permission denied."]

    def bug():
        raise ZeroDivisionError("division by zero")
    guarded(bug, shown.append)()
    assert "internal error (ZeroDivisionError" in shown[-1]
    assert "Traceback" in caplog.text or any(r.exc_info for r in caplog.records)


def _limit_file_size() -> None:  # runs in the child before exec
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


@pytest.mark.skipif(not hasattr(resource, "RLIMIT_FSIZE"), reason="needs POSIX file-size limits")
def test_full_disk_during_segment_is_one_line_and_leaves_no_partial(tmp_path):
    """A file-size limit stands in for a full disk: writes past it fail with EFBIG."""
    files = Files(tmp_path)
    big = files.mrc("t.mrc", np.zeros((64, 96, 96), np.float32))  # written before the limit
    model = files.model()
    script = ("import sys; from napari_tomoseg.cli import main; "
              "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", script, "segment", big, "-m", model,
                           "--dtype", "float32", "-o", str(files.out)],
                          capture_output=True, text=True, preexec_fn=_limit_file_size,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    lines = _error_lines(done.stderr)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert len(lines) == 1 and "too large" in lines[0]
    assert str(files.out / "t_") in lines[0], lines[0]  # the file it could not write
    assert _results(files.out) == []


def test_widget_voxel_size_field_replaces_a_missing_header(tmp_path):
    napari = pytest.importorskip("napari")
    from napari_tomoseg._napari.voxel_size import apply_voxel_size, voxel_size_of
    from napari_tomoseg.layer_data import volume_layer

    data, kwargs, _ = volume_layer(Files(tmp_path).mrc("t.mrc", voxel=0.0))
    layer = napari.layers.Image(data, **kwargs)
    with pytest.raises(TomosegError, match="Voxel size"):
        voxel_size_of(layer)
    with pytest.raises(TomosegError, match="between"):
        apply_voxel_size(layer, 1e6)
    apply_voxel_size(layer, 12.5)
    assert voxel_size_of(layer) == 12.5 and tuple(layer.scale) == (12.5, 12.5, 12.5)
    files = Files(tmp_path)
    data, kwargs, _ = volume_layer(_anisotropic(files))
    stretched = napari.layers.Image(data, **kwargs)
    with pytest.raises(TomosegError, match="10 x 10 x 20 A .x, y, z., not cubes"):
        voxel_size_of(stretched)
    apply_voxel_size(stretched, 10.0)  # the user takes them as cubes
    assert voxel_size_of(stretched) == 10.0


def test_boxes_never_replace_existing_boxes_unasked(tmp_path, capsys):
    """`tomoseg boxes` into a folder with hand-made boxes of the same feature once replaced
    them all (and a second run lost the backup too)."""
    from napari_tomoseg.annotations import load_boxes

    files = Files(tmp_path)
    folder = Path(files.boxes())  # 6 boxes of 'membrane'
    truth = files.mrc("truth.mrc", _truth())
    argv = ["boxes", truth, str(folder), "--feature", "membrane", "--positives", "1",
            "--negatives", "0", "--size", "16"]
    code, err = _run(argv, capsys)
    _one_line_error(code, err, "--replace")
    assert len(load_boxes(folder)) == 6
    assert _run(argv + ["--replace"], capsys)[0] == 0
    assert len(load_boxes(folder)) == 1
    code, _ = _run(["boxes", truth, str(folder), "--feature", "actin", "--positives", "1",
                    "--negatives", "0", "--size", "16"], capsys)
    assert code == 0 and len(load_boxes(folder)) == 2  # another feature's boxes are added


def test_boxes_placed_on_another_binning_are_refused(tmp_path, capsys):
    """Boxes from a mask of one binning trained on a tomogram of another landed on other
    places without a word; the box file now records its grid, and train refuses it."""
    from napari_tomoseg.annotations import load_boxes

    files = Files(tmp_path)
    folder = tmp_path / "grid_boxes"
    truth = files.mrc("truth.mrc", _truth())
    assert _run(["boxes", truth, str(folder), "--feature", "membrane", "--positives", "1",
                 "--negatives", "1", "--size", "16"], capsys)[0] == 0
    binned = files.mrc("binned.mrc", _tomogram()[::2, ::2, ::2].copy(), voxel=2 * VOXEL)
    code, err = _run(["train", binned, "--boxes", str(folder), "--feature", "membrane",
                      "--steps", "2", "-o", str(tmp_path / "m.pt")], capsys)
    _one_line_error(code, err, "placed on a 16 x 48 x 48 volume")
    assert not (tmp_path / "m.pt").exists()
    other = files.mrc("other_truth.mrc", _truth()[::2, ::2, ::2].copy())
    code, err = _run(["boxes", other, str(folder), "--feature", "actin", "--positives", "1",
                      "--negatives", "0", "--size", "8"], capsys)
    _one_line_error(code, err, "placed on a 16 x 48 x 48 volume")
    # placing the folder's only feature again, on the binned mask, is what the error asks for
    assert _run(["boxes", other, str(folder), "--feature", "membrane", "--positives", "1",
                 "--negatives", "1", "--size", "8", "--replace"], capsys)[0] == 0
    assert load_boxes(folder).grid == (8, 24, 24)
    # a folder written before grids were recorded: adding to it claims no grid for old boxes
    older = Path(files.boxes())
    assert load_boxes(older).grid is None
    assert _run(["boxes", truth, str(older), "--feature", "actin", "--positives", "1",
                 "--negatives", "0", "--size", "16"], capsys)[0] == 0
    assert load_boxes(older).grid is None and len(load_boxes(older)) == 7
    # a session of another shape (made without a file, so with no checksum) is refused too
    from napari_tomoseg.session import Session

    session = Session.create(tmp_path / "binned_session", None, 2 * VOXEL, (8, 24, 24))
    code, err = _run(["train", files.mrc("t.mrc"), "--boxes", str(session.folder), "--feature",
                      "membrane", "--steps", "2", "-o", str(tmp_path / "m.pt")], capsys)
    _one_line_error(code, err, "made on a 8 x 24 x 24 tomogram")


def test_opening_a_header_without_voxel_size_warns_at_once(tmp_path, monkeypatch):
    """It opened at 1 A per voxel without a word (a trial); the CLI refused it clearly."""
    pytest.importorskip("napari")
    from napari.utils import notifications

    from napari_tomoseg._napari.reader import read_files

    said = []
    monkeypatch.setattr(notifications.notification_manager, "dispatch",
                        lambda notification: said.append(str(notification.message)))
    files = Files(tmp_path)
    read_files(files.mrc("zero.mrc", voxel=0.0))
    assert len(said) == 1 and "no usable voxel size" in said[0] and "Voxel size (A)" in said[0]
    read_files(files.mrc("fine.mrc"))  # 10 A in the header: nothing to say
    assert len(said) == 1


def test_a_given_voxel_size_that_differs_from_the_header_is_said(tmp_path):
    from napari_tomoseg.io.mrc import read_header, require_voxel_size
    from napari_tomoseg.io.mrc_header import VoxelSizeWarning

    path = Files(tmp_path).mrc("t.mrc")  # 10 A in the header
    info = read_header(path)[1]
    with pytest.warns(VoxelSizeWarning, match="12 A, replaces the header's 10 x 10 x 10 A"):
        assert require_voxel_size(info, path, 12.0).voxel_size == (12.0, 12.0, 12.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert require_voxel_size(info, path, 10.0).voxel_size == (10.0, 10.0, 10.0)


def test_boxes_from_a_mask_painted_on_one_slice_put_negatives_only_there(tmp_path, capsys):
    """A membrane painted on one slice of a real tomogram (a trial) gave negatives on every
    slice, 9 of 24 across the visible membrane of unpainted slices, taught as 'no membrane'."""
    from napari_tomoseg.annotations import load_boxes

    truth = np.zeros((20, 64, 64), np.uint8)
    truth[7, 30:33, :] = 1  # one painted line on slice 7; the other slices are unpainted
    path = Files(tmp_path).mrc("painted.mrc", truth)
    folder = tmp_path / "boxes"
    code, err = _run(["boxes", path, str(folder), "--feature", "membrane", "--positives", "2",
                      "--negatives", "6", "--size", "16"], capsys)
    assert code == 0
    assert "on 1 of 20 slices (z 7)" in err and "negative boxes are placed on those slices" in err
    boxes = load_boxes(folder)
    negatives = [b for b in boxes if not b.positive]
    assert negatives and {b.z for b in boxes} == {7}
    for b in negatives:  # and each is free of the painted line
        assert abs(b.y - 31) >= 8 + 1


def test_boxes_from_a_label_volume_of_several_features_need_the_label(tmp_path, capsys):
    """An Amira or copick export holding membranes as 1 and ribosomes as 4: every value > 0
    became the feature, so 'ribosome' learned membranes too."""
    from napari_tomoseg.annotations import load_boxes

    truth = _truth()
    truth[:, 40:48, 40:48] = 4  # a second feature's label
    path = Files(tmp_path).mrc("labels.mrc", truth)
    argv = ["boxes", path, str(tmp_path / "boxes"), "--feature", "ribosome", "--positives",
            "3", "--negatives", "0", "--size", "16"]
    code, err = _run(argv, capsys)
    _one_line_error(code, err, "--label N")
    assert "(1, 4)" in err
    code, err = _run(argv + ["--label", "3"], capsys)
    _one_line_error(code, err, "no voxel of label 3")
    assert _run(argv + ["--label", "4"], capsys)[0] == 0
    for box in load_boxes(tmp_path / "boxes"):  # each centred on label 4, never on the slab
        assert 40 <= box.y < 48 and 40 <= box.x < 48
