"""Where a CUDA GPU exists, the work runs on it: nothing falls back to the CPU silently.

Skipped on machines without CUDA (CI); run on a GPU machine with
``pytest tests/test_gpu.py``. GPU memory must be allocated by each stage,
which a silent CPU fallback would leave at zero.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_tomoseg.annotations import boxes_from_truth
from napari_tomoseg.errors import InvalidSettingsError
from napari_tomoseg.nn.devices import pick_device

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
VOXEL = 20.0


def _allocated_by(action) -> tuple[object, int]:
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    result = action()
    torch.cuda.synchronize()
    return result, torch.cuda.max_memory_allocated() - before


@cuda
def test_auto_picks_the_gpu():
    assert pick_device("auto").type == "cuda"


@cuda
def test_training_segmentation_and_averaging_use_the_gpu(tiny_result):
    from napari_tomoseg.averaging import AverageSettings, average
    from napari_tomoseg.averaging.extract import extract_subtomograms
    from napari_tomoseg.synthetic.particle_field import simulate_particle_field
    from napari_tomoseg.nn.inference import segment
    from napari_tomoseg.nn.training import TrainingSettings, train

    boxes = boxes_from_truth(tiny_result.cell.labels["ribosome"], "ribosome", 4, 8, 32, seed=0)
    settings = TrainingSettings(steps=5, batch_size=4, hold_out=False, device="cuda",
                                parameters={"base": 8, "levels": 2, "context": 1})
    model, used = _allocated_by(lambda: train(tiny_result.tomogram, boxes, VOXEL, settings,
                                              feature="ribosome"))
    assert used > 0 and next(model.network.parameters()).is_cuda
    prob, used = _allocated_by(lambda: segment(tiny_result.tomogram, model, VOXEL, device="cuda"))
    assert used > 0 and prob.shape == tiny_result.tomogram.shape and np.isfinite(prob).all()
    field = simulate_particle_field(12, voxel_size=15.0, snr=5.0, seed=4)
    sub = extract_subtomograms(field.tomogram, field.zyx, 32)
    result, used = _allocated_by(lambda: average(sub.data, field.voxel_size, AverageSettings(
        box=32, iterations=1, angular_step=30.0, device="cuda")))
    assert used > 0 and result.average.shape == (32, 32, 32)


def test_asking_for_a_missing_gpu_is_an_error_not_a_fallback(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InvalidSettingsError, match="CUDA"):
        pick_device("cuda")
