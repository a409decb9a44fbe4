"""Picking particles from probability maps: known blobs, rules, and the command line."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_tomoseg.errors import InvalidSettingsError
from napari_tomoseg.picking import (PickSettings, dropped_note, match_picks, pick_particles,
                                    roundness, sample_along)


def test_known_blobs_are_found_at_their_centres(blobs):
    rng = np.random.default_rng(0)
    centres = np.array([[20.3, 20.0, 20.0], [20.0, 60.2, 30.0], [40.0, 40.0, 70.6],
                        [30.0, 75.0, 75.0], [45.0, 15.0, 60.0]])
    prob = blobs((64, 96, 96), centres, radius=6, rng=rng)
    picks = pick_particles(prob, voxel_size=10.0, settings=PickSettings(diameter=120.0))
    result = match_picks(picks[["z", "y", "x"]].to_numpy(), centres, radius=6)
    assert result["f1"] == 1.0
    assert result["mean_distance"] < 1.0
    assert picks["score_norm"].max() == pytest.approx(1.0)


def test_distance_edge_size_and_count_rules(blobs):
    centres = np.array([[30.0, 30.0, 30.0], [30.0, 30.0, 38.0],  # 8 px apart
                        [30.0, 3.0, 60.0],  # near the edge
                        [30.0, 60.0, 60.0]])
    prob = blobs((64, 96, 96), centres, radius=3)
    prob[30, 80:82, 10:12] = 1.0  # a 4-voxel speck
    settings = PickSettings(diameter=60.0, min_distance=100.0, edge=50.0, threshold=0.3)
    picks = pick_particles(prob, 10.0, settings)
    coords = picks[["z", "y", "x"]].to_numpy()
    assert len(coords) == 2  # the close pair merged to one, edge and speck dropped
    assert np.all(coords[:, 1] >= 5.0)
    assert len(pick_particles(prob, 10.0, PickSettings(diameter=60.0, threshold=0.3,
                                                      max_picks=1))) == 1
    with pytest.raises(InvalidSettingsError):
        PickSettings(diameter=-1)


def test_touching_particles_are_split_by_watershed():
    centres = np.array([[32.0, 40.0, 40.0], [32.0, 40.0, 50.0]])  # overlapping spheres
    zz, yy, xx = np.indices((64, 80, 90))
    mask = np.zeros((64, 80, 90), np.float32)
    for c in centres:
        mask[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 7 ** 2] = 1
    merged = pick_particles(mask, 10.0, PickSettings(diameter=140.0, min_distance=50.0,
                                                     method="components"))
    split = pick_particles(mask, 10.0, PickSettings(diameter=140.0, min_distance=50.0,
                                                    split_touching=True, method="components"))
    peaks = pick_particles(mask, 10.0, PickSettings(diameter=140.0, min_distance=50.0))
    assert len(merged) == 1 and len(split) == 2
    assert match_picks(split[["z", "y", "x"]].to_numpy(), centres, 3)["f1"] == 1.0
    assert match_picks(peaks[["z", "y", "x"]].to_numpy(), centres, 3)["f1"] == 1.0


def test_peaks_keep_recall_on_a_crowded_row_and_at_the_edges(blobs):
    """Ten touching particles in a row, and particles cut by every face of the volume."""
    radius = 5.0
    row = [[20.0, 30.0, 12.0 + 2 * radius * i] for i in range(10)]  # centres one diameter apart
    edges = [[1.0, 50.0, 50.0], [38.0, 50.0, 30.0], [20.0, 0.5, 70.0], [20.0, 79.0, 40.0],
             [25.0, 60.0, 0.0], [15.0, 65.0, 119.0]]
    centres = np.array(row + edges)
    rng = np.random.default_rng(3)
    prob = blobs((40, 80, 120), centres, radius * 1.5, rng)  # sigma = radius: neighbours touch
    picks = pick_particles(prob, 10.0, PickSettings(diameter=100.0))
    found = match_picks(picks[["z", "y", "x"]].to_numpy(), centres, radius)
    assert found["recall"] == 1.0 and found["precision"] == 1.0
    components = pick_particles(prob, 10.0, PickSettings(diameter=100.0, method="components"))
    assert len(components) < len(centres) - 5  # components merge the row: why peaks are default
    # asked for, the edge rule drops exactly the six particles within 30 A of a face
    inner = pick_particles(prob, 10.0, PickSettings(diameter=100.0, edge=30.0))
    assert match_picks(inner[["z", "y", "x"]].to_numpy(), centres[:10], radius)["f1"] == 1.0


def test_a_particle_stretched_along_z_is_picked_once(blobs):
    """The missing wedge stretches a particle's map along z: on the real M. pneumoniae cell
    one ribosome gave two picks 6-11 slices apart (19 pairs in 510 picks), both of which
    went into the average. Neighbours in the plane, and particles two diameters apart in z,
    stay apart."""
    stretched = [[16.0, 20.0, 20.0], [25.0, 20.0, 20.0]]  # two peaks on one ridge, 9 slices
    stacked = [[10.0, 60.0, 20.0], [30.0, 60.0, 20.0]]  # two particles, 20 slices apart
    touching = [[20.0, 40.0, 60.0], [20.0, 40.0, 70.0]]  # side by side, one diameter apart
    prob = blobs((40, 80, 96), np.array(stretched + stacked + touching), radius=5)
    settings = PickSettings(diameter=100.0, min_roundness=0.0)
    picks = pick_particles(prob, 10.0, settings)[["z", "y", "x"]].to_numpy()
    assert len(picks) == 5
    assert np.sum(np.linalg.norm(picks[:, 1:] - [20.0, 20.0], axis=1) < 2) == 1
    assert match_picks(picks, np.array(stacked + touching), radius=3)["recall"] == 1.0
    isotropic = pick_particles(prob, 10.0, PickSettings(diameter=100.0, min_roundness=0.0,
                                                        z_stretch=1.0))
    assert len(isotropic) == 6  # what it did before: the stretched particle picked twice
    with pytest.raises(InvalidSettingsError, match="z stretch"):
        PickSettings(z_stretch=0.5)


def test_roundness_drops_a_wall_and_a_rod_but_keeps_touching_and_cut_particles(blobs):
    """The default shape test: a sheet (a carbon edge seen edge-on) and a rod above threshold
    give rows of false peaks, each flat along the wall or the rod; lone particles, a row of
    touching ones and particles cut by the volume's faces are round at their peaks."""
    radius = 5.0
    lone = [[20.0, 20.0, 20.0], [44.0, 75.0, 30.0], [30.0, 80.0, 75.0]]
    row = [[32.0, 20.0, 40.0 + 2 * radius * i] for i in range(5)]  # touching: one diameter apart
    cut = [[1.0, 60.0, 60.0], [62.0, 30.0, 60.0], [40.0, 0.5, 60.0], [20.0, 60.0, 95.0]]
    centres = np.array(lone + row + cut)
    prob = blobs((64, 96, 96), centres, radius * 1.5)
    prob[8:14, 44:50, :] = np.maximum(prob[8:14, 44:50, :], 0.9)  # a rod along x
    prob[:, 88:94, 0:70] = np.maximum(prob[:, 88:94, 0:70], 0.9)  # a wall, across z
    every = pick_particles(prob, 10.0, PickSettings(diameter=100.0, min_roundness=0.0))
    false = match_picks(every[["z", "y", "x"]].to_numpy(), centres, radius)
    assert false["recall"] == 1.0 and false["precision"] < 0.7  # the rod's and wall's rows
    kept = pick_particles(prob, 10.0, PickSettings(diameter=100.0))  # min roundness 0.15
    found = match_picks(kept[["z", "y", "x"]].to_numpy(), centres, radius)
    assert found["recall"] == 1.0 and found["precision"] == 1.0
    assert kept["roundness"].between(0.15, 1.0).all()
    # the measure: 1 for a ball, (sigma ratio)^2 = 0.25 for a 2:1 ellipsoid, 0 for a sheet
    zz, yy, xx = np.indices((41, 41, 41), dtype=float) - 20
    ellipsoid = np.exp(-(zz ** 2 / 128 + yy ** 2 / 32 + xx ** 2 / 32))
    np.testing.assert_allclose(roundness(ellipsoid, np.array([[20, 20, 20]])), 0.25, atol=0.01)
    assert roundness(np.exp(-zz ** 2 / 32), np.array([[20, 20, 20]]))[0] < 1e-6
    # the mixed derivatives: the same ellipsoid with its long axis along the (1, 1, 0) diagonal
    along = (zz + yy) / np.sqrt(2)
    across = (zz - yy) / np.sqrt(2)
    tilted = np.exp(-(along ** 2 / 128 + across ** 2 / 32 + xx ** 2 / 32))
    np.testing.assert_allclose(roundness(tilted, np.array([[20, 20, 20]])), 0.25, atol=0.02)
    with pytest.raises(InvalidSettingsError, match="roundness"):
        PickSettings(min_roundness=1.5)


def test_a_field_of_long_particles_is_said_not_silently_emptied():
    """Saturated 3:1 rods fail the default shape test: the picker warns and counts them, and
    the job's message says how many it dropped; a lower cut keeps them."""
    import warnings

    from napari_tomoseg.io.particles import TomogramFrame
    from napari_tomoseg.jobs import run_job
    from napari_tomoseg.jobs.pick import pick_job
    from napari_tomoseg.picking import ShapeWarning

    prob = np.zeros((48, 96, 96), np.float32)
    centres = [(24, 20 + 28 * i, 20 + 28 * j) for i in range(3) for j in range(3)]
    zz, yy, xx = np.indices(prob.shape)
    for z, y, x in centres:  # 30 x 10 x 10 voxels, long along x, probability 1 inside
        prob[((xx - x) / 15.0) ** 2 + ((yy - y) / 5.0) ** 2 + ((zz - z) / 5.0) ** 2 <= 1] = 1.0
    with pytest.warns(ShapeWarning, match=r"9 peaks with a particle's mass were dropped .*"
                                          r"check the diameter \(150 A"):
        dropped = pick_particles(prob, 10.0, PickSettings(diameter=150.0))
    assert len(dropped) == 0 and dropped.attrs["flat_or_long"] == 9
    with warnings.catch_warnings():
        warnings.simplefilter("error", ShapeWarning)
        kept = pick_particles(prob, 10.0, PickSettings(diameter=150.0, min_roundness=0.0))
    assert match_picks(kept[["z", "y", "x"]].to_numpy(), np.array(centres, float), 3.0)["f1"] == 1.0
    messages = []
    with pytest.warns(ShapeWarning):
        run_job(pick_job(prob, TomogramFrame("rods", prob.shape, 10.0), PickSettings(diameter=150.0),
                         "rod"), on_progress=lambda p: messages.append(p.message))
    assert "0 rod picks (9 flat or long peaks dropped)" in messages


def test_scores_rank_particles_above_noise_and_suggest_a_cut(blobs):
    from napari_tomoseg.picking import suggest_score_cut

    rng = np.random.default_rng(5)
    centres = rng.uniform([8, 8, 8], [56, 88, 88], (12, 3))
    prob = blobs((64, 96, 96), centres, 4.0) * 0.9
    noise = np.clip(rng.normal(0.0, 0.25, prob.shape), 0, 1)
    prob = np.maximum(prob, np.clip(ndimage.gaussian_filter(noise, 1.0) * 3, 0, 0.6))
    picks = pick_particles(prob, 10.0, PickSettings(diameter=80.0, threshold=0.3))
    truth = match_picks(picks[["z", "y", "x"]].to_numpy(), centres, 4.0)
    assert truth["recall"] == 1.0 and len(picks) > len(centres)  # noise peaks too
    ranked = picks.sort_values("score", ascending=False)[["z", "y", "x"]].to_numpy()
    top = match_picks(ranked[:len(centres)], centres, 4.0)
    assert top["precision"] >= 0.9  # true particles rank first
    cut = suggest_score_cut(picks["score"].to_numpy())
    kept = picks[picks["score"] >= cut][["z", "y", "x"]].to_numpy()
    assert match_picks(kept, centres, 4.0)["f1"] >= 0.9


def test_points_along_a_filament_are_evenly_spaced():
    mask = np.zeros((20, 20, 120), bool)
    mask[9:12, 9:12, 10:110] = True
    points = sample_along(mask, spacing=100.0, voxel_size=10.0)
    xs = np.sort(points["x"].to_numpy())
    assert 9 <= len(xs) <= 11
    assert np.allclose(np.diff(xs), 10.0, atol=1.0)


def test_cli_pick_writes_star_with_origin(tmp_path, blobs):
    from napari_tomoseg.cli import main
    from napari_tomoseg.io.mrc import write_volume
    from napari_tomoseg.io.particles import TomogramFrame, read_star

    centres = np.array([[20.0, 30.0, 30.0], [40.0, 60.0, 50.0]])
    path = write_volume(tmp_path / "prob.mrc", blobs((64, 96, 96), centres, 5).astype(np.float16),
                        20.0, (100.0, -40.0, 60.0))
    assert main(["pick", str(path), str(tmp_path / "p.star"), "--diameter", "200"]) == 0
    frame = TomogramFrame("prob", (64, 96, 96), 20.0, (100.0, -40.0, 60.0))
    back = read_star(tmp_path / "p.star", frame)
    assert match_picks(back[["z", "y", "x"]].to_numpy(), centres, 1.0)["f1"] == 1.0


def test_an_artifact_map_keeps_picks_off_it_in_the_core_and_the_cli(tmp_path, blobs, capsys):
    """Picks centred on an artifact (carbon, above its own threshold) are dropped; others
    stay, also one beside the artifact; a map of another grid is refused."""
    from napari_tomoseg.cli import main
    from napari_tomoseg.io.mrc import write_volume
    from napari_tomoseg.io.particles import TomogramFrame, read_star

    centres = np.array([[20.0, 30.0, 30.0], [40.0, 60.0, 50.0], [30.0, 20.0, 80.0]])
    prob = blobs((64, 96, 96), centres, 5)
    carbon = np.zeros(prob.shape, np.float32)
    carbon[:, :, 72:] = 0.9  # a carbon edge under the third particle
    settings = PickSettings(diameter=200.0, threshold=0.5)
    assert len(pick_particles(prob, 20.0, settings)) == 3
    kept = pick_particles(prob, 20.0, settings, exclude=carbon > 0.5)
    assert match_picks(kept[["z", "y", "x"]].to_numpy(), centres[:2], 1.0)["f1"] == 1.0
    assert kept.attrs["excluded"] == 1  # said, not silent
    with pytest.raises(InvalidSettingsError, match="share a grid"):
        pick_particles(prob, 20.0, settings, exclude=np.zeros((64, 96, 95), bool))
    path = write_volume(tmp_path / "prob.mrc", prob.astype(np.float16), 20.0, (0.0, 0.0, 0.0))
    artifact = write_volume(tmp_path / "carbon.mrc", carbon, 20.0, (0.0, 0.0, 0.0))
    assert main(["pick", str(path), str(tmp_path / "p.star"), "--diameter", "200",
                 "--exclude", str(artifact)]) == 0
    assert "(1 peak on excluded artifacts dropped)" in capsys.readouterr().out
    back = read_star(tmp_path / "p.star", TomogramFrame("prob", prob.shape, 20.0, (0, 0, 0)))
    assert match_picks(back[["z", "y", "x"]].to_numpy(), centres[:2], 1.0)["f1"] == 1.0
    other = write_volume(tmp_path / "other.mrc", carbon[:, :, :90].copy(), 20.0, (0.0, 0.0, 0.0))
    assert main(["pick", str(path), str(tmp_path / "q.star"), "--diameter", "200",
                 "--exclude", str(other)]) == 2
    assert not (tmp_path / "q.star").exists()


def test_max_blob_drops_picks_along_a_carbon_edge_and_says_what_else_it_drops(tmp_path, blobs):
    """A long wall above threshold (a carbon edge) yields a row of false peaks in one blob of
    many particle volumes; --max-blob 3 drops them and keeps lone particles, and (the reason
    it is off by default) also a cluster of touching particles bigger than 3 volumes."""
    from napari_tomoseg.cli import main
    from napari_tomoseg.io.mrc import write_volume
    from napari_tomoseg.io.particles import TomogramFrame, read_star

    lone = np.array([[20.0, 20.0, 20.0], [44.0, 75.0, 30.0], [30.0, 80.0, 75.0]])
    cluster = np.array([[32.0, 20.0, 14.0 + 6.0 * i] for i in range(10)])  # touching, a row
    prob = blobs((64, 96, 96), np.concatenate([lone, cluster]), radius=5)
    prob[:, 44:50, :] = np.maximum(prob[:, 44:50, :], 0.9)  # the edge, across the volume
    every = pick_particles(prob, 10.0, PickSettings(diameter=100.0, threshold=0.5,
                                                    min_roundness=0.0))
    on_edge = (every["y"] > 40) & (every["y"] < 54)
    assert on_edge.sum() >= 5  # the false row
    capped = pick_particles(prob, 10.0, PickSettings(diameter=100.0, threshold=0.5, max_blob=3,
                                                     min_roundness=0.0))
    assert match_picks(capped[["z", "y", "x"]].to_numpy(), lone, 2.0)["f1"] == 1.0
    assert match_picks(every[["z", "y", "x"]].to_numpy(), cluster, 2.0)["recall"] == 1.0
    assert match_picks(capped[["z", "y", "x"]].to_numpy(), cluster, 2.0)["recall"] == 0.0
    with pytest.raises(InvalidSettingsError, match="not both"):
        PickSettings(max_size=100, max_blob=3)
    path = write_volume(tmp_path / "prob.mrc", prob.astype(np.float16), 10.0, (0.0, 0.0, 0.0))
    assert main(["pick", str(path), str(tmp_path / "p.star"), "--diameter", "100",
                 "--threshold", "0.5", "--max-blob", "3"]) == 0
    back = read_star(tmp_path / "p.star", TomogramFrame("prob", prob.shape, 10.0, (0, 0, 0)))
    assert match_picks(back[["z", "y", "x"]].to_numpy(), lone, 2.0)["f1"] == 1.0


def test_a_diameter_under_two_voxels_is_refused(blobs):
    """--diameter 2 on 10 A voxels gave 0 picks and no hint (pixels or nm for Angstrom)."""
    prob = blobs((16, 32, 32), np.array([[8.0, 16.0, 16.0]]), 4)
    with pytest.raises(InvalidSettingsError, match="under two voxels"):
        pick_particles(prob, 10.0, PickSettings(diameter=15.0))
    assert len(pick_particles(prob, 10.0, PickSettings(diameter=80.0))) == 1


def test_an_almost_empty_integer_map_of_segment_is_not_read_as_a_mask(tmp_path, blobs, capsys):
    """segment --dtype uint8 stores round(p * 255): a carbon map of a tomogram without carbon
    holds only 0s and 1s, which the 0/1-mask rule read as probability 1 (76% of the volume
    excluded, 117 picks on an empty ribosome map, merge labelling a quarter of the voxels)."""
    from napari_tomoseg.cli import main
    from napari_tomoseg.io.mrc import write_volume
    from napari_tomoseg.io.probability_header import threshold_label

    rng = np.random.default_rng(0)
    faint = np.round(rng.uniform(0.001, 0.005, (32, 64, 64)) * 255).astype(np.uint16)
    assert set(np.unique(faint)) == {0, 1}
    empty = write_volume(tmp_path / "t_carbon.mrc", faint, 20.0,
                         labels=(threshold_label("carbon", 0.5),))
    centres = np.array([[16.0, 20.0, 20.0], [16.0, 44.0, 44.0]])
    prob = write_volume(tmp_path / "t_ribosome.mrc", blobs((32, 64, 64), centres, 5)
                        .astype(np.float16), 20.0, labels=(threshold_label("ribosome", 0.5),))
    assert main(["pick", str(prob), str(tmp_path / "p.star"), "--diameter", "200",
                 "--exclude", str(empty)]) == 0
    assert "excluded" not in capsys.readouterr().out  # nothing lies on carbon
    assert main(["pick", str(empty), str(tmp_path / "e.star"), "--diameter", "200"]) == 0
    assert ": 0 carbon picks" in capsys.readouterr().out
    assert main(["merge", "--prob", f"carbon={empty}", "--prob", f"ribosome={prob}", "-o",
                 str(tmp_path / "m.mrc")]) == 0
    from napari_tomoseg.io.mrc import open_volume

    merged, _ = open_volume(tmp_path / "m.mrc")
    assert not np.any(merged == 1)  # no carbon anywhere
    mask = write_volume(tmp_path / "mask.mrc", (faint > 0).astype(np.int8), 20.0)
    assert main(["pick", str(prob), str(tmp_path / "q.star"), "--diameter", "200",
                 "--exclude", str(mask)]) == 0  # a plain 0/1 mask is still a mask


@pytest.mark.parametrize("method", ["peaks", "components"])
def test_a_stop_request_ends_picking_between_its_passes(blobs, method):
    """Picking a large map is a few whole-volume passes (a minute): a face's stop event
    ends it after the current pass, not after all of them."""
    import threading

    from napari_tomoseg.errors import Cancelled
    from napari_tomoseg.io.particles import TomogramFrame
    from napari_tomoseg.jobs.pick import pick_job
    from napari_tomoseg.jobs.progress import stop_event

    prob = blobs((32, 64, 64), np.array([[16.0, 32.0, 32.0]]), radius=5)
    job = pick_job(prob, TomogramFrame("t", prob.shape, 10.0),
                   PickSettings(diameter=100.0, method=method), "ribosome")
    stop = threading.Event()
    with stop_event(stop):
        assert next(job).message == "picking ribosome"
        stop.set()  # while the job is between yields
        with pytest.raises(Cancelled):
            next(job)  # before: picking ran to its end and yielded the picks


def _stretched_blobs(shape, centres, sigma, stretch):
    """Gaussian blobs longer along x by ``stretch`` (roundness about 1 / stretch**2)."""
    zz, yy, xx = np.indices(shape, dtype=np.float32)
    prob = np.zeros(shape, np.float32)
    for z, y, x in centres:
        d2 = (zz - z) ** 2 + (yy - y) ** 2 + ((xx - x) / stretch) ** 2
        prob = np.maximum(prob, np.exp(-d2 / (2 * sigma ** 2)))
    return prob


def test_the_relative_roundness_cut_drops_the_odd_long_peak_but_keeps_a_map_of_long_particles():
    """Among round picks, a peak much longer than they are is dropped (0.5 x their median
    roundness, at most 0.25); a map whose particles are all that long keeps every one, and
    min roundness 0 or relative 0 keep everything."""
    round_centres = [[20.0, 15.0 + 30 * i, 15.0 + 30 * j] for i in range(3) for j in range(3)]
    long_centres = [[50.0, 30.0, 25.0], [50.0, 70.0, 65.0]]
    shape = (70, 100, 100)
    prob = np.maximum(_stretched_blobs(shape, round_centres, 3.3, 1.0),
                      _stretched_blobs(shape, long_centres, 3.3, 2.3))  # roundness ~0.2
    settings = PickSettings(diameter=100.0)
    every = pick_particles(prob, 10.0, PickSettings(diameter=100.0, relative_roundness=0.0))
    assert len(every) == 11 and (every["roundness"] < 0.25).sum() == 2
    kept = pick_particles(prob, 10.0, settings)
    assert match_picks(kept[["z", "y", "x"]].to_numpy(), np.array(round_centres), 5.0)["f1"] == 1.0
    assert kept.attrs["less_round"] == 2 and kept.attrs["flat_or_long"] == 0
    assert len(pick_particles(prob, 10.0, PickSettings(diameter=100.0, min_roundness=0.0))) == 11
    all_long = _stretched_blobs(shape, [[20.0, 15.0 + 23 * i, 25.0 + 50 * j] for i in range(4)
                                        for j in range(2)] + long_centres, 3.3, 2.3)
    long_picks = pick_particles(all_long, 10.0, settings)
    assert len(long_picks) == 10  # their median is theirs: 0.5 x ~0.2 asks for less than 0.15
    with pytest.raises(InvalidSettingsError, match="relative roundness"):
        PickSettings(relative_roundness=1.5)


def test_max_picks_gives_the_best_picks_of_the_whole_map_with_the_relative_cut():
    """The relative cut's median comes from every pick, so max picks N returns the first N
    of the uncapped picks; the components method (no roundness) is untouched by it."""
    centres = [[20.0, 15.0 + 30 * i, 15.0 + 30 * j] for i in range(3) for j in range(3)]
    shape = (70, 100, 100)
    prob = np.maximum(_stretched_blobs(shape, centres, 3.3, 1.0),
                      _stretched_blobs(shape, [[50.0, 30.0, 25.0], [50.0, 70.0, 65.0]], 3.3, 2.3))
    prob *= np.linspace(0.8, 1.0, 100, dtype=np.float32)[None, None, :]  # scores differ
    every = pick_particles(prob, 10.0, PickSettings(diameter=100.0))
    assert len(every) == 9 and every.attrs["less_round"] == 2
    assert "2 less round than the map's picks dropped" in dropped_note(every)
    for n in (3, 9):
        top = pick_particles(prob, 10.0, PickSettings(diameter=100.0, max_picks=n))
        np.testing.assert_allclose(top[["z", "y", "x"]].to_numpy(),
                                   every[["z", "y", "x"]].to_numpy()[:n])
    components = pick_particles(prob, 10.0, PickSettings(diameter=100.0, method="components"))
    assert len(components) == 11  # one per blob: no roundness, no relative cut


def test_what_the_picker_drops_is_said_and_a_saturated_map_warned(blobs, tmp_path, capsys):
    """--edge of half the volume gave '0 picks' with no note; a map above the threshold almost
    everywhere (an undertrained model) gave picks in its corners without a word; --spacing
    ignored the particle options given with it; an artifact map from another place excluded
    the wrong voxels."""
    from napari_tomoseg.cli import main
    from napari_tomoseg.io.mrc import write_volume
    from napari_tomoseg.pick_checks import MapWarning

    centres = np.array([[12.0, 20.0, 20.0], [12.0, 40.0, 44.0], [6.0, 30.0, 10.0]])
    prob = blobs((24, 64, 64), centres, 4)
    settings = PickSettings(diameter=80.0, edge=100.0)  # 10 voxels: the first two stay
    picks = pick_particles(prob, 10.0, settings)
    assert len(picks) == 2 and picks.attrs["near_edge"] == 1
    assert "1 within the edge distance dropped" in dropped_note(picks)
    with pytest.warns(MapWarning, match="above the threshold"):
        pick_particles(np.full((24, 64, 64), 0.9, np.float32), 10.0, PickSettings(diameter=80.0))
    path = write_volume(tmp_path / "m.mrc", prob.astype(np.float32), 10.0)
    out = tmp_path / "p.csv"
    assert main(["pick", str(path), str(out), "--spacing", "50", "--max-picks", "3"]) == 2
    assert "--max-picks are for particles" in capsys.readouterr().err
    elsewhere = write_volume(tmp_path / "carbon.mrc", np.zeros_like(prob, np.float32), 10.0,
                             (0.0, 0.0, 300.0))
    assert main(["pick", str(path), str(out), "--diameter", "80",
                 "--exclude", str(elsewhere)]) == 2
    assert "another origin" in capsys.readouterr().err
    coarse = write_volume(tmp_path / "coarse.mrc", np.zeros_like(prob, np.float32), 20.0)
    assert main(["pick", str(path), str(out), "--diameter", "80", "--exclude", str(coarse)]) == 2
    assert "voxels of 20 A" in capsys.readouterr().err and not out.exists()
