"""Synthetic cells: deterministic, physically sized, with truth that matches the density."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.transform import Rotation

from napari_tomoseg.errors import InvalidSettingsError
from napari_tomoseg.io.mrc import open_volume
from napari_tomoseg.io.particles import read_star
from napari_tomoseg.synthetic import FEATURES, CellSpec, ImagingSpec, generate_cell, simulate
from napari_tomoseg.synthetic import ribosome as ribo

from .conftest import TINY


def test_same_seed_same_cell_other_seed_other_cell():
    a = generate_cell(TINY, seed=5)
    b = generate_cell(TINY, seed=5)
    c = generate_cell(TINY, seed=6)
    np.testing.assert_array_equal(a.density, b.density)
    np.testing.assert_array_equal(a.particles, b.particles)
    assert not np.array_equal(a.density, c.density)


def test_every_feature_is_present_and_labels_are_binary(tiny_result):
    for feature in FEATURES:
        labels = tiny_result.cell.labels[feature]
        assert set(np.unique(labels)) == {0, 1}, feature
    assert len(tiny_result.cell.particles) >= 3


def test_microtubule_is_25_nm_across():
    spec = CellSpec(shape=(64, 128, 128), voxel_size=10.0, n_vesicles=0, organelle=False,
                    plasma_membrane=False, n_microtubules=1, n_actin=0,
                    ribosome_density_per_um3=0, carbon_edge=False)
    tube = generate_cell(spec, seed=1).labels["microtubule"].astype(bool)
    # the largest inscribed ball of the filled tube has the tube's radius
    radius_voxels = ndimage.distance_transform_edt(tube).max()
    assert radius_voxels * 2 * spec.voxel_size / 10 == pytest.approx(25.0, abs=2.5)


def test_ribosome_centres_lie_in_ribosome_labels(tiny_result):
    labels = tiny_result.cell.labels["ribosome"]
    centres = np.round(tiny_result.cell.particles).astype(int)
    inside = labels[tuple(centres.T)]
    assert inside.mean() > 0.9


def test_particle_density_is_the_reference_rotated_by_relion_angles():
    """particle(r) = ref(A^T r) with A = RELION's matrix of (rot, tilt, psi)."""
    voxel, box = 10.0, 48
    angles = (30.0, 70.0, -120.0)
    centre = np.array([box // 2] * 3, float)
    particle = ribo.render_blobs((box,) * 3, centre, voxel, angles)
    reference = ribo.reference_density(box, voxel)
    a = ribo.relion_matrix(*angles)
    zyx = np.indices((box,) * 3).reshape(3, -1).T - centre
    xyz = zyx[:, ::-1] @ a  # A^T r for every voxel, in (x, y, z)
    sampled = ndimage.map_coordinates(reference, (xyz[:, ::-1] + centre).T, order=1)
    corr = np.corrcoef(sampled, particle.ravel())[0, 1]
    assert corr > 0.99
    # and the transposed convention (ref(A r)) does not fit
    wrong = ndimage.map_coordinates(reference, ((zyx[:, ::-1] @ a.T)[:, ::-1] + centre).T, order=1)
    assert np.corrcoef(wrong, particle.ravel())[0, 1] < 0.9


def test_the_ribosome_is_chiral():
    """No rotation superimposes the blob model on its mirror image (Kabsch fit)."""
    centres, sigmas, weights = ribo.blob_parameters(10.0)
    mirrored = centres * np.array([1.0, 1.0, -1.0])
    weights_sqrt = np.sqrt(weights)[:, None]
    a = (centres - centres.mean(0)) * weights_sqrt
    b = (mirrored - mirrored.mean(0)) * weights_sqrt
    rotation, rssd = Rotation.align_vectors(a, b)
    rmsd_nm = rssd / np.sqrt(weights.sum())
    assert rmsd_nm > 2.0
    # while the model itself fits perfectly after any rotation
    turned = Rotation.from_euler("ZYZ", [40, 80, 10], degrees=True).apply(centres)
    _, rssd_same = Rotation.align_vectors(a, (turned - turned.mean(0)) * weights_sqrt)
    assert rssd_same < 1e-6


def test_tomogram_shows_the_density_through_noise_and_wedge(tiny_result):
    # protein is dark: the tomogram anticorrelates with the (low-passed) density
    density = ndimage.gaussian_filter(tiny_result.cell.density, 1.5)
    tomogram = ndimage.gaussian_filter(tiny_result.tomogram, 1.5)
    corr = np.corrcoef(density.ravel(), tomogram.ravel())[0, 1]
    assert corr < -0.3
    assert tiny_result.tomogram.mean() == pytest.approx(0, abs=1e-4)


def test_more_noise_means_worse_tomogram():
    spec = CellSpec(shape=(24, 64, 64), n_vesicles=1, n_microtubules=1, n_actin=1)
    clean = simulate(spec, seed=1).tomogram
    noisy = simulate(spec, seed=1, imaging=ImagingSpec(snr=0.02)).tomogram
    truth = -ndimage.gaussian_filter(generate_cell(spec, seed=1).density, 1.5)
    c_clean = np.corrcoef(truth.ravel(), ndimage.gaussian_filter(clean, 1.5).ravel())[0, 1]
    c_noisy = np.corrcoef(truth.ravel(), ndimage.gaussian_filter(noisy, 1.5).ravel())[0, 1]
    assert c_clean > c_noisy + 0.1


def test_written_files_round_trip(tiny_files, tiny_result):
    tomogram, info = open_volume(tiny_files["tomogram"])
    np.testing.assert_allclose(tomogram, tiny_result.tomogram)
    assert info.origin == (-150.0, 320.0, 1200.0) and info.voxel_size == (20.0, 20.0, 20.0)
    for feature in FEATURES:
        labels, linfo = open_volume(tiny_files[feature])
        np.testing.assert_array_equal(labels, tiny_result.cell.labels[feature])
        assert linfo.origin == info.origin
    from napari_tomoseg.io.particles import TomogramFrame

    frame = TomogramFrame("tiny", info.shape, 20.0, info.origin)
    table = read_star(tiny_files["particles"], frame)
    np.testing.assert_allclose(table[["z", "y", "x"]], tiny_result.cell.particles, atol=1e-3)
    np.testing.assert_allclose(table[["rot", "tilt", "psi"]], tiny_result.cell.angles, atol=1e-4)
    manifest = json.loads(tiny_files["manifest"].read_text())
    assert manifest["n_ribosomes"] == len(table)


def test_bad_settings_are_refused():
    with pytest.raises(InvalidSettingsError):
        generate_cell(CellSpec(shape=(8, 64, 64)))
    with pytest.raises(InvalidSettingsError):
        simulate(TINY, imaging=ImagingSpec(snr=0))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_filaments_cross_the_field_even_when_its_centre_is_crowded(seed):
    """A crowded centre once made the least obstructed path a corner stub (fewest hits
    because most of it lay outside the field): two of three realistic microtubules."""
    from napari_tomoseg.synthetic.cell import _clear_path

    spec = CellSpec(shape=(32, 128, 128), voxel_size=10.0)
    occupied = np.zeros(spec.shape, bool)
    occupied[:, 32:96, 32:96] = True
    path = _clear_path(np.random.default_rng(seed), spec, occupied, radius=3.0, straight=True)
    inside = path[np.all((path >= 0) & (path < np.array(spec.shape)), axis=1)]
    extent = np.linalg.norm(inside[-1, 1:] - inside[0, 1:])
    assert extent >= 0.7 * 128


def test_the_least_obstructed_share_wins_not_the_fewest_hits(monkeypatch):
    """A path mostly outside the field has few points to hit; its share of them counts."""
    from napari_tomoseg.synthetic import cell as cell_module

    spec = CellSpec(shape=(32, 128, 128), voxel_size=10.0)
    occupied = np.zeros(spec.shape, bool)
    occupied[16, 4:7, 10] = True  # hit by the stub: a few of its few points
    occupied[16, 60:66, 64] = True  # hit by the crossing path: more points, a smaller share
    stub = np.linspace([16.0, -200.0, 10.0], [16.0, 10.0, 10.0], 400)
    crossing = np.linspace([16.0, 0.0, 64.0], [16.0, 127.0, 64.0], 400)
    paths = iter([stub, crossing])
    monkeypatch.setattr(cell_module, "_random_polyline", lambda *args: next(paths))
    chosen = cell_module._clear_path(np.random.default_rng(0), spec, occupied, radius=1.0,
                                     straight=True, tries=2)
    np.testing.assert_array_equal(chosen, crossing)


def test_a_cell_in_ice_is_the_same_cell_set_between_empty_slices():
    """ice_margin_nm: the cell of the thinner volume, padded; nothing of it lies in the margins."""
    spec = CellSpec(shape=(64, 96, 96), voxel_size=10.0, n_vesicles=1, n_microtubules=1,
                    n_actin=1, ribosome_density_per_um3=20000.0, distractor_density_per_um3=5000.0)
    framed = generate_cell(CellSpec(**{**spec.__dict__, "shape": (84, 96, 96),
                                       "ice_margin_nm": 10.0}), seed=3)
    bare = generate_cell(spec, seed=3)
    assert framed.density.shape == (84, 96, 96)
    assert not framed.density[:10].any() and not framed.density[-10:].any()
    np.testing.assert_array_equal(framed.density[10:-10], bare.density)
    for feature, labels in framed.labels.items():
        assert not labels[:10].any() and not labels[-10:].any(), feature
    np.testing.assert_allclose(framed.particles, bare.particles + [10, 0, 0])
    with pytest.raises(InvalidSettingsError, match="ice on each side"):
        generate_cell(CellSpec(shape=(32, 64, 64), ice_margin_nm=10.0))


def test_ribosome_candidates_are_drawn_evenly_over_depth():
    """Free space is most plentiful at the faces (in the benchmark's cell 1367 candidates at
    depth 10, 32 at depth 55); a plain draw tried mostly face positions first."""
    from napari_tomoseg.synthetic.cell_ribosomes import _even_in_depth

    depth = np.repeat([10, 55, 88], [1400, 30, 1300])
    first = depth[_even_in_depth(np.random.default_rng(0), depth)[:60]]
    counts = np.array([(first == d).sum() for d in (10, 55, 88)])
    assert counts.min() >= 10, counts  # a plain draw: about 31, 1 and 28
    assert sorted(_even_in_depth(np.random.default_rng(1), depth)) == list(range(len(depth)))
