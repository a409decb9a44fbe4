"""Picks scored against a reference (template matching) tell particles from look-alikes."""

from __future__ import annotations

import mrcfile
import numpy as np
import pandas as pd
import pytest
import starfile
from scipy.spatial.transform import Rotation

from napari_tomoseg.averaging.template_scores import (TemplateSettings, iter_template_scores,
                                                      suggested_cut, template_scores)
from napari_tomoseg.cli import main
from napari_tomoseg.errors import (InvalidCoordinatesError, InvalidSettingsError,
                                   InvalidVolumeError)
from napari_tomoseg.synthetic.distractors import SHAPES, _render
from napari_tomoseg.synthetic.ribosome import reference_density, render_blobs

VOXEL = 10.0
FAST = TemplateSettings(angular_step=30.0, max_shift=1)


def _field(seed: int = 0, noise: float = 0.3):
    """A 48 x 112 x 112 volume (protein dark) with three ribosomes and three look-alikes of
    their mass (dumb-bells), each at a random orientation; the places of each."""
    rng = np.random.default_rng(seed)
    density = np.zeros((48, 112, 112), np.float32)
    ribosomes = np.array([[24, 28, 28], [24, 28, 84], [24, 84, 28]], float)
    lookalikes = np.array([[24, 84, 84], [24, 56, 56], [24, 28, 56]], float)
    for centre, angles in zip(ribosomes, rng.uniform(0, 360, (3, 3))):
        render_blobs(density.shape, centre, VOXEL, tuple(angles), out=density)
    for centre in lookalikes:
        _render(density, SHAPES["dumbbell"], centre, Rotation.random(random_state=rng).as_matrix(),
                VOXEL, 1.0)
    tomogram = -density + rng.normal(0, noise * density.std(), density.shape).astype(np.float32)
    return tomogram, ribosomes, lookalikes


def test_the_reference_ranks_particles_above_lookalikes_of_their_mass():
    tomogram, ribosomes, lookalikes = _field()
    scores = template_scores(tomogram, np.vstack([ribosomes, lookalikes]),
                             reference_density(32, VOXEL), VOXEL, FAST)
    assert scores.shape == (6,) and np.all(np.abs(scores) <= 1.0 + 1e-6)
    assert scores[:3].min() > scores[3:].max() + 0.05, scores
    # protein is dark in the tomogram: matched without inverting, the particles score worst
    plain = template_scores(tomogram, ribosomes, reference_density(32, VOXEL), VOXEL,
                            TemplateSettings(angular_step=30.0, max_shift=1, invert=False))
    assert plain.max() < scores[:3].min() - 0.3


def test_an_off_centre_pick_is_found_within_the_shift_search():
    tomogram, ribosomes, _ = _field(seed=1)
    on = template_scores(tomogram, ribosomes, reference_density(32, VOXEL), VOXEL, FAST)
    off = template_scores(tomogram, ribosomes + [0, 2, 0], reference_density(32, VOXEL), VOXEL,
                          TemplateSettings(angular_step=30.0, max_shift=2))
    unsearched = template_scores(tomogram, ribosomes + [0, 2, 0], reference_density(32, VOXEL),
                                 VOXEL, TemplateSettings(angular_step=30.0, max_shift=0))
    assert np.all(off >= on - 0.02) and np.all(unsearched < off - 0.02)


def test_bad_references_and_picks_are_refused_and_progress_is_told():
    tomogram, ribosomes, _ = _field()
    with pytest.raises(InvalidSettingsError, match="cube of an even size"):
        template_scores(tomogram, ribosomes, np.ones((32, 32, 30)), VOXEL, FAST)
    with pytest.raises(InvalidSettingsError, match="empty"):
        template_scores(tomogram, ribosomes, np.zeros((32, 32, 32)), VOXEL, FAST)
    with pytest.raises(InvalidCoordinatesError):
        template_scores(tomogram, [[np.nan, 1, 1]], reference_density(32, VOXEL), VOXEL, FAST)
    with pytest.raises(InvalidSettingsError, match="0-8 voxels"):
        TemplateSettings(max_shift=9)
    steps = list(iter_template_scores(tomogram, ribosomes, reference_density(32, VOXEL), VOXEL,
                                      FAST))  # progress: every chunk of orientations, once
    assert [done for done, _ in steps] == list(range(1, len(steps) + 1))
    assert {total for _, total in steps} == {len(steps)} and len(steps) >= 2


def test_suggested_cut_is_the_median_less_two_deviations():
    scores = np.array([0.30, 0.31, 0.32, 0.33, 0.34, 0.10])
    median = np.median(scores)
    assert suggested_cut(scores) == pytest.approx(median - 2 * np.median(np.abs(scores - median)))
    assert np.sum(scores < suggested_cut(scores)) == 1


def test_rescore_writes_scores_that_relion_reads_and_cuts_on_request(tmp_path):
    tomogram, ribosomes, lookalikes = _field()
    volume = tmp_path / "cell.mrc"
    with mrcfile.new(volume) as mrc:
        mrc.set_data(tomogram)
        mrc.voxel_size = VOXEL
    reference = tmp_path / "reference.mrc"
    with mrcfile.new(reference) as mrc:
        mrc.set_data(reference_density(32, VOXEL))
        mrc.voxel_size = VOXEL
    picks = np.vstack([ribosomes, lookalikes])
    particles = tmp_path / "picks.csv"  # x y z pixels, the plain exchange format
    pd.DataFrame({"x": picks[:, 2], "y": picks[:, 1], "z": picks[:, 0]}).to_csv(particles,
                                                                            index=False)
    out = tmp_path / "scored.star"
    common = [str(volume), str(particles), "--reference", str(reference), "--angular-step",
              "30", "--max-shift", "1",
              "--tilt-series-pixel-size", "10"]
    assert main(["rescore", *common, "-o", str(out)]) == 0
    table = starfile.read(out)
    table = table["particles"] if isinstance(table, dict) else table
    assert len(table) == 6
    scores = table["rlnTomosegReferenceScore"].to_numpy()
    offset = table[[f"rlnCoordinate{a}" for a in "XYZ"]].to_numpy() - picks[:, ::-1]
    assert np.allclose(offset, offset[0])  # each score stays on its own pick's row
    assert scores[:3].min() > scores[3:].max()
    kept = tmp_path / "kept.star"
    assert main(["rescore", *common, "-o", str(kept), "--cut", str(scores[3:].max() + 1e-4)]) == 0
    table = starfile.read(kept)
    table = table["particles"] if isinstance(table, dict) else table
    assert len(table) == 3
    assert main(["rescore", *common, "-o", str(kept)]) == 2  # no overwrite without asking
    auto = tmp_path / "auto.csv"
    assert main(["rescore", *common, "-o", str(auto), "--cut", "AUTO"]) == 0
    assert len(pd.read_csv(auto)) == int(np.sum(scores >= suggested_cut(scores)))
    with mrcfile.new(reference, overwrite=True) as mrc:  # a map at another voxel size
        mrc.set_data(reference_density(32, VOXEL))
        mrc.voxel_size = 4.0
    assert main(["rescore", *common, "-o", str(tmp_path / "other.star")]) == 2
    assert not (tmp_path / "other.star").exists()


def test_chunked_and_unkept_work_gives_the_same_scores(monkeypatch):
    """Few picks per chunk and templates made again per chunk (large boxes) change nothing."""
    import napari_tomoseg.averaging.template_scores as ts

    tomogram, ribosomes, lookalikes = _field(seed=2)
    picks = np.vstack([ribosomes, lookalikes])
    whole = template_scores(tomogram, picks, reference_density(32, VOXEL), VOXEL, FAST)
    monkeypatch.setattr(ts, "_DATA_BUDGET", 27 * 7000 * 2)  # a pick or two per chunk
    monkeypatch.setattr(ts, "_TEMPLATE_BUDGET", 1)  # orientations outside, made once each
    monkeypatch.setattr(ts, "_VOXELS_PER_CHUNK", 32 ** 3 * 50)
    steps = list(iter_template_scores(tomogram, picks, reference_density(32, VOXEL), VOXEL, FAST))
    assert len(steps) > 6
    assert np.allclose(template_scores(tomogram, picks, reference_density(32, VOXEL), VOXEL,
                                       FAST), whole, atol=1e-5)


def test_nan_data_a_mask_past_the_box_and_no_picks_are_refused():
    tomogram, ribosomes, _ = _field()
    tomogram[20:28, 24:32, 24:32] = np.nan
    with pytest.raises(InvalidVolumeError, match="NaN"):
        template_scores(tomogram, ribosomes, reference_density(32, VOXEL), VOXEL, FAST)
    with pytest.raises(InvalidSettingsError, match="does not fit"):
        template_scores(tomogram, ribosomes, reference_density(32, VOXEL), VOXEL,
                        TemplateSettings(mask_radius=16))
    with pytest.raises(InvalidCoordinatesError):
        template_scores(tomogram, np.zeros((0, 3)), reference_density(32, VOXEL), VOXEL, FAST)
    assert suggested_cut(np.full(5, 0.2)) == pytest.approx(0.2)  # nothing stands out: keep all
