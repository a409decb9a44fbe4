"""Files we exchange with RELION 5 and EMAN2, checked against their own conventions.

Nothing here trusts our reader to judge our writer: every expectation is
computed with the other program's formulas, re-implemented below from its
source code (file and function cited), from the raw text of what we wrote.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import starfile
from scipy import ndimage

from napari_tomoseg.errors import InvalidCoordinatesError, InvalidSettingsError
from napari_tomoseg.io.particles import (CoordinateWarning, TomogramFrame, particle_table,
                                         read_eman2_json, read_star, write_eman2_json, write_star)
from napari_tomoseg.synthetic.ribosome import reference_density


# --- RELION, re-implemented from its source ------------------------------------------------
def relion_euler_matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """``Euler_angles2matrix(alpha, beta, gamma, A)`` of 3dem/relion src/euler.cpp (degrees)."""
    a, b, g = np.radians([rot, tilt, psi])
    ca, sa, cb, sb, cg, sg = np.cos(a), np.sin(a), np.cos(b), np.sin(b), np.cos(g), np.sin(g)
    cc, cs, sc, ss = cb * ca, cb * sa, sb * ca, sb * sa
    return np.array([[cg * cc - sg * sa, cg * cs + sg * ca, -cg * sb],
                     [-sg * cc - cg * sa, -sg * cs + cg * ca, sg * sb],
                     [sc, ss, cb]])


def relion_tomogram_pixel(centred_xyz_angst, origin_xyz_angst, subtomo_angles,
                          tilt_series_pixel_size, tomo_size_xyz) -> np.ndarray:
    """Decentred tilt-series pixel of a particle, as RELION 5 computes it.

    src/jaz/tomography/particle_set.cpp: ``getParticleCoordDecenteredPixel``
    (centred A / rlnTomoTiltSeriesPixelSize + centre) and ``getPosition``
    (minus A_subtomogram @ origin / pixel size); the centre is
    ``rlnTomoSize / 2.0`` (src/jaz/tomography/tomogram_set.cpp, loadTomogram).
    """
    a_sub = relion_euler_matrix(*subtomo_angles)
    return (np.asarray(centred_xyz_angst) / tilt_series_pixel_size + np.asarray(tomo_size_xyz) / 2.0
            - a_sub @ np.asarray(origin_xyz_angst) / tilt_series_pixel_size)


def relion4_tomogram_pixel(coordinate_xyz, origin_xyz_angst, subtomo_angles,
                           tilt_series_pixel_size) -> np.ndarray:
    """The same for a file without centred columns: ``getParticleCoordDecenteredPixel``'s
    "backwards compatibility with relion-4" branch takes ``rlnCoordinateX/Y/Z`` as they are,
    as decentred pixels of the unbinned tilt series; ``getPosition`` subtracts the origin."""
    a_sub = relion_euler_matrix(*subtomo_angles)
    return (np.asarray(coordinate_xyz, dtype=float)
            - a_sub @ np.asarray(origin_xyz_angst) / tilt_series_pixel_size)


def first_data_block(path) -> str:
    """The block RELION's ``MetaDataTable::read(filename)`` with no name reads: the first one
    (what relion_tomo_import_coordinates does, src/jaz/tomography/apps/import_coordinates.cpp)."""
    for line in open(path):
        if line.strip().startswith("data_"):
            return line.strip()
    raise AssertionError(f"{path} has no data block")


def angle_between(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1, 1))))


def _angles(row) -> np.ndarray:
    return relion_euler_matrix(row["rlnAngleRot"], row["rlnAngleTilt"], row["rlnAnglePsi"])


# --- 1. Euler angles -------------------------------------------------------------------------
def test_our_matrices_and_renderer_follow_relion_euler_cpp():
    from napari_tomoseg.io.relion_euler import relion_angles, relion_matrices
    from napari_tomoseg.synthetic.ribosome import render_blobs

    rng = np.random.default_rng(3)
    angles = np.column_stack([rng.uniform(-180, 180, 20), rng.uniform(0, 180, 20),
                              rng.uniform(-180, 180, 20)])
    ours = relion_matrices(angles)
    for i, (rot, tilt, psi) in enumerate(angles):
        np.testing.assert_allclose(ours[i], relion_euler_matrix(rot, tilt, psi), atol=1e-12)
    np.testing.assert_allclose(relion_matrices(relion_angles(ours)), ours, atol=1e-9)
    try:  # teamtomo's eulerangles documents RELION as intrinsic ZYZ, matrix transposed
        from eulerangles import euler2matrix
    except ImportError:
        pass
    else:
        documented = euler2matrix(angles, axes="zyz", intrinsic=True, right_handed_rotation=True)
        np.testing.assert_allclose(np.transpose(documented, (0, 2, 1)), ours, atol=1e-9)
    # a point u of the reference sits at pos + A u: the centre of mass moves so
    box, voxel, angle = 40, 10.0, (35.0, 60.0, -110.0)
    reference = reference_density(box, voxel)
    particle = render_blobs((box,) * 3, np.full(3, box // 2, float), voxel, angle)
    com_ref = np.array(ndimage.center_of_mass(reference))[::-1] - box // 2  # (x, y, z)
    com_particle = np.array(ndimage.center_of_mass(particle))[::-1] - box // 2
    a = relion_euler_matrix(*angle)
    assert np.linalg.norm(com_particle - a @ com_ref) < 0.1
    assert np.linalg.norm(com_particle - a.T @ com_ref) > 1.0  # the transposed convention fails


def _render_relion(shape, centres_zyx, angles, reference) -> np.ndarray:
    """particle(r) = ref(A^T (r - pos)): RELION's convention, sampled voxel by voxel."""
    volume = np.zeros(shape, np.float32)
    box = reference.shape[0]
    half = box // 2
    grid = np.indices((box,) * 3).reshape(3, -1).T - half  # (z, y, x) offsets
    for centre, angle in zip(centres_zyx, angles):
        a = relion_euler_matrix(*angle)
        base = np.round(centre).astype(int)
        local_xyz = grid[:, ::-1] + (base - centre)[::-1]  # r - pos, in (x, y, z)
        source_xyz = local_xyz @ a  # rows: (A^T v)^T = v^T A
        values = ndimage.map_coordinates(reference, (source_xyz[:, ::-1] + half).T, order=1)
        z, y, x = (grid + base).T
        volume[z, y, x] += values
    return volume


def test_averaging_writes_the_angles_relion_reads(tmp_path, one_torch_thread):
    from napari_tomoseg.averaging import AverageSettings
    from napari_tomoseg.jobs import run_job
    from napari_tomoseg.jobs.average import average_job

    box, voxel, spacing = 24, 15.0, 26
    reference = reference_density(box, voxel)
    rng = np.random.default_rng(7)
    grid = np.array([(z, y, x) for z in range(2) for y in range(2) for x in range(4)])
    centres = (grid + 0.5) * spacing + rng.uniform(-1.5, 1.5, grid.shape)
    angles = np.column_stack([rng.uniform(-180, 180, len(grid)),
                              np.degrees(np.arccos(rng.uniform(-1, 1, len(grid)))),
                              rng.uniform(-180, 180, len(grid))])
    shape = (2 * spacing, 2 * spacing, 4 * spacing)
    tomogram = -_render_relion(shape, centres, angles, reference)  # protein dark
    tomogram += rng.normal(0, 0.1 * tomogram.std(), shape).astype(np.float32)
    frame = TomogramFrame("TS_07", shape, voxel, tilt_series_pixel_size=voxel)
    picks = particle_table(np.round(centres))
    # the mask must hold the whole ribosome (17 voxels across, its stalk further out):
    # at the default 0.42 box (10 voxels) alignment failed here whatever the convention
    settings = AverageSettings(box=box, iterations=1, angular_step=20.0, final_step=5.0,
                               start_resolution=35.0, mask_radius=11.5,
                               tilt_min=-90.0, tilt_max=90.0, device="cpu")
    _, _, written = run_job(average_job(tomogram, frame, picks, settings, tmp_path,
                                        reference=reference))
    path = written["particles"]
    assert first_data_block(path) == "data_particles"
    table = starfile.read(path, always_dict=True)["particles"]
    centred = table[[f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]].to_numpy(float)
    found_zyx = centred[:, ::-1] / voxel + np.array(shape) / 2
    truth = [int(np.argmin(np.linalg.norm(centres - p, axis=1))) for p in found_zyx]
    assert len(set(truth)) == len(table) >= 14
    errors = [angle_between(_angles(row), relion_euler_matrix(*angles[t]))
              for (_, row), t in zip(table.iterrows(), truth)]
    assert np.median(errors) < 15, np.round(errors)
    # read as the inverse rotation (the convention before the fix) they are far off
    transposed = [angle_between(_angles(row).T, relion_euler_matrix(*angles[t]))
                  for (_, row), t in zip(table.iterrows(), truth)]
    assert np.median(transposed) > 45
    assert np.median(np.linalg.norm(found_zyx - centres[truth], axis=1)) < 1.5


# --- 2 and 3. block order, optics, tilt-series pixel size ------------------------------------
def test_bin4_pick_lands_on_the_unbinned_tilt_series_pixel(tmp_path):
    shape = (60, 200, 180)  # binned by 4 from 7 A tilt-series pixels
    frame = TomogramFrame("TS_01", shape, 28.0, origin=(-400.0, 90.0, 1200.0),
                          tilt_series_pixel_size=7.0)
    picks = np.array([[12.0, 33.0, 150.0], [30.0, 100.0, 90.0], [59.0, 0.0, 1.0]])
    path = write_star(tmp_path / "TS_01.star", particle_table(picks), frame)
    assert first_data_block(path) == "data_particles"
    blocks = starfile.read(path, always_dict=True)
    assert float(blocks["optics"]["rlnTomoTiltSeriesPixelSize"][0]) == 7.0
    unbinned_size_xyz = np.array(shape[::-1]) * 4  # rlnTomoSizeX/Y/Z of the unbinned tomogram
    for (_, row), pick in zip(blocks["particles"].iterrows(), picks):
        centred = [row[f"rlnCenteredCoordinate{a}Angst"] for a in "XYZ"]
        relion = relion_tomogram_pixel(centred, [0, 0, 0], (0, 0, 0), 7.0, unbinned_size_xyz)
        # binned voxel i spans unbinned pixels 4i .. 4i + 4 from the same corner
        np.testing.assert_allclose(relion, 4 * pick[::-1], atol=1e-3)
    assert set(blocks["particles"]["rlnTomoName"]) == {"TS_01"}


def test_pixel_columns_are_unbinned_tilt_series_pixels_as_relion4_reads_them(tmp_path):
    frame = TomogramFrame("TS_01", (60, 200, 180), 28.0, tilt_series_pixel_size=7.0)
    picks = np.array([[12.0, 33.0, 150.0], [30.0, 100.0, 90.0]])
    table = particle_table(picks)
    table["origin_x"], table["origin_y"], table["origin_z"] = [14.0, -7.0], [3.5, 0.0], [0.0, 21.0]
    for column, values in {"subtomo_rot": [10.0, 0.0], "subtomo_tilt": [80.0, 35.0],
                           "subtomo_psi": [-30.0, 120.0]}.items():
        table[column] = values
    for column in ("rot", "tilt", "psi"):
        table[column] = [5.0, 40.0]
    blocks = starfile.read(write_star(tmp_path / "TS_01.star", table, frame), always_dict=True)
    for (_, row), pick in zip(blocks["particles"].iterrows(), picks):
        relion = relion4_tomogram_pixel(
            [row[f"rlnCoordinate{a}"] for a in "XYZ"],
            [row[f"rlnOrigin{a}Angst"] for a in "XYZ"],
            [row[f"rlnTomoSubtomogram{a}"] for a in ("Rot", "Tilt", "Psi")], 7.0)
        np.testing.assert_allclose(relion, 4 * pick[::-1], atol=1e-3)


def test_pixel_columns_alone_bring_binned_picks_back(tmp_path):
    """Our writer and reader of the pixel columns agree through a binning and origin shifts
    (the test above checks the writer against RELION's formula, this one the way back)."""
    frame = TomogramFrame("TS_01", (60, 200, 180), 28.0, tilt_series_pixel_size=7.0)
    picks = np.array([[12.25, 33.0, 150.5], [30.0, 100.75, 90.0]])
    table = particle_table(picks)
    table["origin_x"], table["origin_y"], table["origin_z"] = [14.0, -7.0], [3.5, 0.0], [0.0, 21.0]
    path = write_star(tmp_path / "TS_01.star", table, frame)
    blocks = starfile.read(path, always_dict=True)
    blocks["particles"] = blocks["particles"].drop(columns=CENTRED_COLUMNS)
    starfile.write(blocks, path, overwrite=True)
    back = read_star(path, frame)
    np.testing.assert_allclose(back[["z", "y", "x"]].to_numpy(), picks, atol=1e-5)


CENTRED_COLUMNS = [f"rlnCenteredCoordinate{a}Angst" for a in "XYZ"]


def test_relion4_pixel_columns_are_read_onto_a_binned_tomogram(tmp_path):
    star = tmp_path / "relion4.star"
    starfile.write({"optics": pd.DataFrame({"rlnOpticsGroup": [1],
                                            "rlnTomoTiltSeriesPixelSize": [1.35]}),
                    "particles": pd.DataFrame({
                        "rlnTomoName": ["TS_01", "TS_01"], "rlnCoordinateX": [400.0, 200.0],
                        "rlnCoordinateY": [480.0, 600.0], "rlnCoordinateZ": [100.0, 80.0],
                        "rlnOriginXAngst": [0.0, 13.5], "rlnOriginYAngst": [0.0, 0.0],
                        "rlnOriginZAngst": [0.0, 0.0], "rlnOpticsGroup": [1, 1]})}, star)
    frame = TomogramFrame("TS_01", (125, 720, 511), 10.8)  # bin 8
    table = read_star(star, frame)
    for (_, row), xyz in zip(table.iterrows(), [[400, 480, 100], [200, 600, 80]]):
        unbinned = relion4_tomogram_pixel(xyz, [13.5 if xyz[0] == 200 else 0.0, 0, 0],
                                          (0, 0, 0), 1.35)
        np.testing.assert_allclose([row.x, row.y, row.z], unbinned * 1.35 / 10.8, atol=1e-6)
    binned = TomogramFrame("TS_01", (125, 720, 511), 10.8, tilt_series_pixel_size=1.35)
    starfile.write({"particles": pd.DataFrame({"rlnCoordinateX": [40.0], "rlnCoordinateY": [48.0],
                                               "rlnCoordinateZ": [10.0]})}, star, overwrite=True)
    with pytest.warns(CoordinateWarning, match="8x too far"):
        assert read_star(star, binned)[["x", "y", "z"]].to_numpy().tolist() == [[40, 48, 10]]


def test_each_particle_is_read_at_its_own_optics_groups_pixel_size(tmp_path):
    """RELION 4 keeps rlnTomoTiltSeriesPixelSize per optics group and each particle names
    its group (rlnOpticsGroup): the first particle's group stood for all, so a second
    group at 2.7 A was read at 1.35 A, half way to the corner."""
    star = tmp_path / "two_groups.star"
    starfile.write({"optics": pd.DataFrame({"rlnOpticsGroup": [1, 2],
                                            "rlnTomoTiltSeriesPixelSize": [1.35, 2.7]}),
                    "particles": pd.DataFrame({
                        "rlnTomoName": ["TS_01", "TS_01"], "rlnCoordinateX": [400.0, 200.0],
                        "rlnCoordinateY": [480.0, 300.0], "rlnCoordinateZ": [100.0, 40.0],
                        "rlnOriginXAngst": [0.0, 13.5], "rlnOriginYAngst": [0.0, 0.0],
                        "rlnOriginZAngst": [0.0, 0.0], "rlnOpticsGroup": [1, 2]})}, star)
    frame = TomogramFrame("TS_01", (125, 720, 511), 10.8)
    table = read_star(star, frame)
    for (_, row), xyz, shift, size in zip(table.iterrows(), [[400, 480, 100], [200, 300, 40]],
                                          [0.0, 13.5], [1.35, 2.7]):
        unbinned = relion4_tomogram_pixel(xyz, [shift, 0, 0], (0, 0, 0), size)
        np.testing.assert_allclose([row.x, row.y, row.z], unbinned * size / 10.8, atol=1e-6)
    blocks = starfile.read(star)  # a pixel size of 0 says "unknown": this tomogram's pixels
    blocks["optics"]["rlnTomoTiltSeriesPixelSize"] = 0.0
    starfile.write(blocks, star, overwrite=True)
    assert read_star(star, frame)["x"].tolist() == pytest.approx([400.0, 200.0 - 13.5 / 10.8])


def test_unknown_pixel_size_is_never_guessed(tmp_path):
    frame = TomogramFrame("TS_01", (20, 40, 40), 28.0)
    with pytest.warns(CoordinateWarning, match="tilt-series pixel size is unknown"):
        path = write_star(tmp_path / "p.star", particle_table([[5.0, 6.0, 7.0]]), frame)
    text = path.read_text()
    assert "rlnTomoTiltSeriesPixelSize" not in text and "data_optics" not in text
    assert first_data_block(path) == "data_particles"
    with pytest.raises(InvalidSettingsError):
        TomogramFrame("TS_01", (20, 40, 40), 28.0, tilt_series_pixel_size=0.0)


def _probability(tmp_path):
    from napari_tomoseg.io.mrc import write_volume

    prob = np.zeros((24, 48, 48), np.float32)
    zz, yy, xx = np.indices(prob.shape)
    for c in [(12, 12, 12), (12, 30, 34)]:
        prob[(zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2 <= 9] = 1.0
    return write_volume(tmp_path / "TS_03_ribosome.mrc", prob, 28.0, overwrite=True)


def test_every_star_we_write_starts_with_the_particles(tmp_path):
    from napari_tomoseg._napari.writer import write_points_star
    from napari_tomoseg.batch import BatchSettings, write_combined_star
    from napari_tomoseg.cli import main
    from napari_tomoseg.layer_data import frame_metadata

    prob = _probability(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoordinateWarning)
        assert main(["pick", str(prob), str(tmp_path / "pick.star"), "--diameter", "150",
                     "--tomo-name", "TS_03", "--unbinned-voxel-size", "7"]) == 0
        assert main(["points", str(tmp_path / "pick.star"), str(tmp_path / "points.star"),
                     "--tomogram", str(prob), "--tomo-name", "TS_03"]) == 0
        frame = TomogramFrame("TS_03", (24, 48, 48), 28.0, (0.0, 0.0, 0.0), 7.0)
        napari_star = write_points_star(str(tmp_path / "napari.star"), [[12.0, 12.0, 12.0]],
                                        {"scale": (28.0,) * 3, "translate": (0.0,) * 3,
                                         "name": "picks: ribosome", "metadata": frame_metadata(frame)})[0]
        (tmp_path / "TS_03_ribosome.star").write_bytes((tmp_path / "pick.star").read_bytes())
        combined = write_combined_star([{"name": "TS_03", "status": "done"}], tmp_path,
                                       BatchSettings(models=(), output=str(tmp_path), pick=("ribosome",)))
    for path in [tmp_path / "pick.star", tmp_path / "points.star", napari_star, *combined]:
        assert first_data_block(path) == "data_particles", path
        blocks = starfile.read(path, always_dict=True)
        assert float(blocks["optics"]["rlnTomoTiltSeriesPixelSize"][0]) == 7.0, path
        assert set(blocks["particles"]["rlnTomoName"]) == {"TS_03"}, path  # never a layer name


# --- 4. reading a RELION 5 particle set -------------------------------------------------------
RELION5_STAR = """
# version 50001

data_optics

loop_
_rlnOpticsGroup #1
_rlnOpticsGroupName #2
_rlnTomoTiltSeriesPixelSize #3
1 opticsGroup1 5.000000
2 opticsGroup2 6.000000

# version 50001

data_particles

loop_
_rlnTomoName #1
_rlnCenteredCoordinateXAngst #2
_rlnCenteredCoordinateYAngst #3
_rlnCenteredCoordinateZAngst #4
_rlnOriginXAngst #5
_rlnOriginYAngst #6
_rlnOriginZAngst #7
_rlnAngleRot #8
_rlnAngleTilt #9
_rlnAnglePsi #10
_rlnTomoSubtomogramRot #11
_rlnTomoSubtomogramTilt #12
_rlnTomoSubtomogramPsi #13
_rlnOpticsGroup #14
TS_05 1200.000000 -850.000000 120.000000 12.500000 -7.000000 3.000000 30.000000 90.000000 -45.000000 10.000000 80.000000 170.000000 1
TS_05 -2000.000000 400.000000 -300.000000 0.000000 0.000000 0.000000 -120.000000 45.000000 60.000000 -30.000000 120.000000 -10.000000 1
TS_05 0.000000 0.000000 0.000000 -20.000000 15.000000 5.000000 170.000000 10.000000 20.000000 0.000000 90.000000 0.000000 1
TS_06 100.000000 200.000000 300.000000 0.000000 0.000000 0.000000 0.000000 90.000000 0.000000 0.000000 90.000000 0.000000 2
"""


def test_a_relion5_particle_set_reads_into_napari_and_writes_back(tmp_path):
    from napari_tomoseg._napari.writer import write_points_star
    from napari_tomoseg.layer_data import points_layer

    path = tmp_path / "particles.star"
    path.write_text(RELION5_STAR)
    tomo_size_xyz = np.array([928, 960, 400])  # unbinned TS_05, 5 A pixels
    frame = TomogramFrame("TS_05", (100, 240, 232), 20.0)  # the same tomogram binned by 4
    with pytest.warns(CoordinateWarning, match="skipped 1 of 1 other"):
        data, kwargs, kind = points_layer(path, frame)
    assert kind == "points" and len(data) == 3
    hand = starfile.read(path, always_dict=True)
    rows = hand["particles"][hand["particles"]["rlnTomoName"] == "TS_05"].reset_index(drop=True)
    features = kwargs["features"]
    for i, row in rows.iterrows():
        centred = [row[f"rlnCenteredCoordinate{a}Angst"] for a in "XYZ"]
        origin = [row[f"rlnOrigin{a}Angst"] for a in "XYZ"]
        sub = [row[f"rlnTomoSubtomogram{n}"] for n in ("Rot", "Tilt", "Psi")]
        unbinned = relion_tomogram_pixel(centred, origin, sub, 5.0, tomo_size_xyz)
        np.testing.assert_allclose(data[i][::-1], unbinned / 4, atol=1e-4)
        # getMatrix3x3: A_subtomogram @ A_particle
        expected = relion_euler_matrix(*sub) @ _angles(row)
        ours = relion_euler_matrix(*features.loc[i, ["rot", "tilt", "psi"]])
        assert angle_between(ours, expected) < 1e-4
    assert kwargs["metadata"]["tomoseg"]["tilt_series_pixel_size"] == 5.0
    out = write_points_star(str(tmp_path / "back.star"), data, kwargs)[0]
    assert first_data_block(out) == "data_particles"
    back = starfile.read(out, always_dict=True)
    for column in rows.columns:
        if rows[column].dtype.kind in "fi":
            np.testing.assert_allclose(back["particles"][column].to_numpy(float),
                                       rows[column].to_numpy(float), atol=1e-4, err_msg=column)
        else:
            assert list(back["particles"][column]) == list(rows[column]), column
    assert back["optics"].iloc[0]["rlnTomoTiltSeriesPixelSize"] == 5.0


def test_a_star_of_other_tomograms_or_far_outside_is_refused(tmp_path):
    path = tmp_path / "particles.star"
    path.write_text(RELION5_STAR)
    with pytest.raises(InvalidCoordinatesError, match="no particles of 'TS_09'"):
        read_star(path, TomogramFrame("TS_09", (100, 240, 232), 20.0))
    tiny = TomogramFrame("TS_05", (4, 4, 4), 1.0)  # every particle far outside
    with pytest.raises(InvalidCoordinatesError, match="outside"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CoordinateWarning)
            read_star(path, tiny)
    frame = TomogramFrame("TS_01", (20, 40, 40), 10.0, tilt_series_pixel_size=10.0)
    write_star(tmp_path / "p.star", particle_table([[5.0, 6.0, 7.0], [5.0, 6.0, 5007.0]]), frame)
    with pytest.warns(CoordinateWarning, match="1 of 2 particles lie outside"):
        read_star(tmp_path / "p.star", frame)


# --- 5. EMAN2 ---------------------------------------------------------------------------------
def test_eman2_info_json_follows_e2spt_boxer(tmp_path):
    """cryoem/eman2 programs/e2spt_boxer.py, EMTomoBoxer.SaveJson: with apix_unbin, boxes are
    ``(b - n // 2) * apix_cur / apix_unbin`` and boxsize ``round(box * apix_cur / apix_unbin)``."""
    shape = (61, 200, 181)
    frame = TomogramFrame("TS_02", shape, 28.0, tilt_series_pixel_size=7.0)
    picks = np.array([[30.0, 100.0, 90.0], [3.0, 17.5, 170.0]])
    # a new file has no tilt alignment, which e2spt_extract reads at once (do_extraction)
    with pytest.warns(CoordinateWarning, match="e2spt_extract needs the tomogram's own"):
        path = write_eman2_json(tmp_path / "TS_02_info.json", particle_table(picks), frame,
                                box_size=32)
    record = json.loads(path.read_text())
    assert record["apix_unbin"] == 7.0
    assert record["class_list"]["0"]["boxsize"] == round(32 * 28.0 / 7.0) == 128
    nx, ny, nz = shape[::-1]
    for box, (z, y, x) in zip(record["boxes_3d"], picks):
        expected = [(x - nx // 2) * 4.0, (y - ny // 2) * 4.0, (z - nz // 2) * 4.0]
        np.testing.assert_allclose(box[:3], expected, atol=1e-9)
    np.testing.assert_allclose(read_eman2_json(path, frame)[["z", "y", "x"]], picks, atol=1e-9)
    # unknown tilt-series pixel size: EMAN2's own fallback, this tomogram's pixels, no apix_unbin
    unknown = TomogramFrame("TS_02", shape, 28.0)
    with pytest.warns(CoordinateWarning):
        write_eman2_json(tmp_path / "u.json", particle_table(picks), unknown, box_size=32)
    record = json.loads((tmp_path / "u.json").read_text())
    assert "apix_unbin" not in record and record["class_list"]["0"]["boxsize"] == 32
    np.testing.assert_allclose(np.array(record["boxes_3d"])[:, :3].astype(float), picks[:, ::-1])
    assert isinstance(pd.DataFrame(record["boxes_3d"]), pd.DataFrame)


def test_picks_written_into_an_eman2_info_file_keep_its_alignment_and_other_classes(tmp_path):
    """EMAN2 keeps a tomogram's tilt alignment and every class's boxes in one info file, and
    its boxer sets only ``boxes_3d`` and ``class_list`` there, converting with the file's own
    ``apix_unbin`` (e2spt_boxer.py, SaveJson on a js_open_dict). We rebuilt the file from the
    picks alone: the tilt alignment and the user's EMAN2 boxes were gone."""
    shape = (61, 200, 181)
    nx, ny, nz = shape[::-1]
    eman2 = {"apix_unbin": 7.0, "tlt_file": "tiltseries/TS_02.hdf", "defocus": [2.1, 2.3],
             "tlt_params": [[1.0, -2.0, 85.3, -60.0, 0.1], [0.5, 0.2, 85.3, -57.0, 0.0]],
             "boxes_3d": [[10.0, -20.0, 4.0, "manual", 0.0, 0],
                          [-36.0, 8.0, 0.0, "manual", 0.0, 1]],
             "class_list": {"0": {"boxsize": 96, "name": "membrane"}, "1": "ribosome"}}
    path = tmp_path / "TS_02_info.json"
    path.write_text(json.dumps(eman2))
    frame = TomogramFrame("TS_02", shape, 28.0, tilt_series_pixel_size=7.0)
    picks = np.array([[30.0, 100.0, 90.0], [3.0, 17.5, 170.0]])
    write_eman2_json(path, particle_table(picks, score=[0.9, 0.4]), frame, box_size=32,
                     feature="ribosome")
    record = json.loads(path.read_text())
    for key in ("tlt_file", "defocus", "tlt_params", "apix_unbin"):
        assert record[key] == eman2[key]
    assert record["boxes_3d"][0] == eman2["boxes_3d"][0]  # the membrane box stays
    ribosomes = [b for b in record["boxes_3d"] if b[5] == 1]  # the old ribosome box is replaced
    assert len(ribosomes) == 2 and len(record["boxes_3d"]) == 3
    assert record["class_list"]["0"] == eman2["class_list"]["0"]
    assert record["class_list"]["1"] == {"boxsize": 128, "name": "ribosome"}
    for box, (z, y, x) in zip(ribosomes, picks):
        np.testing.assert_allclose(box[:3], [(x - nx // 2) * 4.0, (y - ny // 2) * 4.0,
                                             (z - nz // 2) * 4.0], atol=1e-9)
    # a third feature gets the next class; the file's apix_unbin wins over another size given
    with pytest.warns(CoordinateWarning, match="apix_unbin 7 A differs"):
        write_eman2_json(path, particle_table(picks[:1]), frame, 32, unbinned_voxel_size=14.0,
                         feature="carbon")
    record = json.loads(path.read_text())
    assert record["class_list"]["2"]["name"] == "carbon" and record["boxes_3d"][-1][5] == 2
    np.testing.assert_allclose(record["boxes_3d"][-1][:3], ribosomes[0][:3], atol=1e-9)
    back = read_eman2_json(path, frame)  # classes 1-based, as rlnClassNumber
    assert list(back["class"]) == [1, 2, 2, 3]
    assert list(back["feature"]) == ["membrane", "ribosome", "ribosome", "carbon"]
    np.testing.assert_allclose(back[["z", "y", "x"]].to_numpy()[1:3], picks, atol=1e-9)
    # the box EMAN2 wrote, read as e2spt_boxer reads it: b / apix * apix_unbin + n // 2
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy()[0],
                               [10.0 / 4.0 + nx // 2, -20.0 / 4.0 + ny // 2, 4.0 / 4.0 + nz // 2])
    path.write_text("{ not json")  # never replaced: it may hold an alignment
    with pytest.raises(InvalidCoordinatesError, match="not replaced"):
        write_eman2_json(path, particle_table(picks), frame, 32)
    assert path.read_text() == "{ not json"


def test_picks_on_a_cropped_tomogram_written_for_eman2_extraction_are_warned_about(tmp_path):
    """e2spt_extract projects boxes_3d (centred on EMAN2's own reconstruction) through
    tlt_params; a trimvol crop of slices 61-220 of 300 (header origin: 60 slices, 1680 A)
    moves the centre by 10 voxels, so such picks would be extracted 10 voxels off. EMAN2's
    own MRC files (start indices -n // 2, mrcio.cpp) and origin 0 are not warned about."""
    path = tmp_path / "TS_02_info.json"
    path.write_text(json.dumps({"apix_unbin": 7.0, "tlt_params": [[0.0, 0.0, 0.0, 0.0, 0.0]],
                                "tlt_file": "tiltseries/TS_02.hdf"}))
    picks = particle_table(np.array([[30.0, 100.0, 90.0]]))
    shape, voxel = (160, 200, 181), 28.0
    cropped = TomogramFrame("TS_02", shape, voxel, origin=(1680.0, 0.0, 0.0),
                            tilt_series_pixel_size=7.0)
    with pytest.warns(CoordinateWarning, match="origin is .*z 1680"):
        write_eman2_json(path, picks, cropped, box_size=32, feature="ribosome")
    eman2_mrc = tuple(-(n // 2) * voxel for n in shape)  # x: -90 voxels for 181
    for origin in ((0.0, 0.0, 0.0), eman2_mrc):
        whole = TomogramFrame("TS_02", shape, voxel, origin=origin, tilt_series_pixel_size=7.0)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            write_eman2_json(path, picks, whole, box_size=32, feature="ribosome")


def test_eman2_boxes_of_a_class_without_a_name_are_kept(tmp_path):
    """Boxes of class 0 with no class_list entry: our feature took index 0 and replaced them."""
    path = tmp_path / "TS_02_info.json"
    path.write_text(json.dumps({"apix_unbin": 7.0, "boxes_3d": [[1.0, 2.0, 3.0, "manual", 0.0, 0],
                                                                 [4.0, 5.0, 6.0, "manual", 0.0, 0]]}))
    frame = TomogramFrame("TS_02", (61, 200, 181), 28.0, tilt_series_pixel_size=7.0)
    write_eman2_json(path, particle_table([[30.0, 100.0, 90.0]]), frame, 32, feature="ribosome")
    record = json.loads(path.read_text())
    assert [b[5] for b in record["boxes_3d"]] == [0, 0, 1]
    assert record["class_list"] == {"1": {"boxsize": 128, "name": "ribosome"}}


def test_non_finite_eman2_boxes_are_refused_on_both_sides(tmp_path):
    frame = TomogramFrame("TS_02", (61, 200, 181), 28.0, tilt_series_pixel_size=7.0)
    with pytest.raises(InvalidCoordinatesError, match="not finite"):
        write_eman2_json(tmp_path / "w.json", particle_table([[1.0, np.nan, 3.0]]), frame, 32)
    assert not (tmp_path / "w.json").exists()
    (tmp_path / "r.json").write_text('{"apix_unbin": 7.0, "boxes_3d": [[NaN, 1.0, 2.0]]}')
    with pytest.raises(InvalidCoordinatesError, match="not finite"):
        read_eman2_json(tmp_path / "r.json", frame)


def test_a_star_of_an_unnamed_block_saves_back_in_place(tmp_path):
    """crYOLO and converters write an unnamed data_ block: it was taken for a block the
    points would lose, and saving back was refused although nothing was lost."""
    path = tmp_path / "c.star"
    path.write_text("data_\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n"
                    "_rlnCoordinateY #3\n_rlnCoordinateZ #4\n001 10 12 5\n001 20 22 6\n")
    frame = TomogramFrame("001", (20, 40, 40), 10.0)
    table = read_star(path, frame)
    write_star(path, table, frame, keep_richer=True)
    np.testing.assert_allclose(read_star(path, frame)[["z", "y", "x"]], table[["z", "y", "x"]])


def test_numeric_tomogram_names_stay_text(tmp_path):
    """RELION names tomograms by text: '001' is not '1' (starfile parsed it as a number, so
    the particles of '001' were not found and our outputs named the tomogram '1')."""
    from napari_tomoseg.io.mrc import write_volume
    from napari_tomoseg.layer_data import frame_for_particles

    star = tmp_path / "001.star"
    star.write_text("data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCenteredCoordinateXAngst #2\n"
                    "_rlnCenteredCoordinateYAngst #3\n_rlnCenteredCoordinateZAngst #4\n"
                    "001 0.0 0.0 0.0\n002 100.0 0.0 0.0\n001 -50.0 20.0 10.0\n")
    frame = TomogramFrame("001", (20, 40, 40), 10.0)
    with pytest.warns(CoordinateWarning, match="'001'; skipped 1 of 1 other tomogram"):
        table = read_star(star, frame)
    np.testing.assert_allclose(table[["z", "y", "x"]].to_numpy(),
                               [[10.0, 20.0, 20.0], [11.0, 22.0, 15.0]])
    assert set(table["tomo_name"]) == {"001"}
    write_volume(tmp_path / "001.mrc", np.zeros((20, 40, 40), np.float32), 10.0)
    assert frame_for_particles(star).name == "001"  # the napari reader finds its tomogram
    written = starfile.read(write_star(tmp_path / "out.star", table, frame),
                            parse_as_string=["rlnTomoName"], always_dict=True)["particles"]
    assert set(written["rlnTomoName"]) == {"001"}


def test_a_voxel_finer_than_the_tilt_series_is_refused():
    """IMOD writes 1 A when it does not know the voxel size: with a 2.7 A tilt series that
    wrote pixels as Angstrom into rlnCenteredCoordinate*Angst without a word."""
    with pytest.raises(InvalidSettingsError, match="IMOD writes 1 A"):
        TomogramFrame("TS_03", (20, 40, 40), 1.0, tilt_series_pixel_size=2.7)
    assert TomogramFrame("TS_03", (20, 40, 40), 2.7, tilt_series_pixel_size=2.7).voxel_size == 2.7


def test_points_without_angles_are_written_with_zero_and_said(tmp_path):
    """A point added by hand beside picks with angles has none (NaN): a NaN in a STAR stops
    RELION, so it is written as 0 and the user is told; an infinite angle is refused."""
    frame = TomogramFrame("TS_03", (20, 40, 40), 10.0)
    table = particle_table([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], rot=[10.0, np.nan],
                           tilt=[20.0, np.nan], psi=[30.0, np.nan])
    with pytest.warns(CoordinateWarning, match="1 particle\\(s\\) without angles .*rows 2"):
        write_star(tmp_path / "a.star", table, frame)
    back = read_star(tmp_path / "a.star", frame)
    np.testing.assert_allclose(back[["rot", "tilt", "psi"]].to_numpy(), [[10, 20, 30], [0, 0, 0]])
    with pytest.raises(InvalidCoordinatesError, match="infinite angles"):
        write_star(tmp_path / "i.star", table.assign(rot=[np.inf, 0.0]), frame)
    assert not (tmp_path / "i.star").exists()
    path = tmp_path / "r.star"  # older files with nan angles still open; a nan place does not
    path.write_text("data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n"
                    "_rlnCoordinateY #3\n_rlnCoordinateZ #4\n_rlnAngleRot #5\n"
                    "_rlnAngleTilt #6\n_rlnAnglePsi #7\n"
                    "TS_03 10 10 5 0 0 0\nTS_03 10 10 5 nan nan nan\n")
    assert np.isnan(read_star(path, frame)["rot"].iloc[1])
    path.write_text(path.read_text().replace("TS_03 10 10 5 nan", "TS_03 nan 10 5 0"))
    with pytest.raises(InvalidCoordinatesError, match="rlnCoordinateX of particle 2 is nan"):
        read_star(path, frame)


def test_csv_and_eman2_json_particles_far_outside_are_checked_as_star_files_are(tmp_path):
    """A CSV point 5000 px outside was written on without a word; the STAR one was refused."""
    from napari_tomoseg.io.particle_files import read_particles

    frame = TomogramFrame("TS_01", (20, 40, 40), 10.0)
    csv = tmp_path / "o.csv"
    csv.write_text("x,y,z\n7,6,5\n5000,20,5\n")
    with pytest.warns(CoordinateWarning, match="1 of 2 particles lie outside"):
        read_particles(csv, frame)
    csv.write_text("x,y,z\n-1000,20,5\n5000,20,5\n")
    with pytest.raises(InvalidCoordinatesError, match="outside"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CoordinateWarning)
            read_particles(csv, frame)
    assert len(read_particles(csv)[0]) == 2  # without a tomogram there is nothing to check
    far = write_eman2_json(tmp_path / "TS_01_info.json",
                           particle_table([[5.0, 6.0, 7.0], [5.0, 6.0, 5007.0]]), frame, box_size=8)
    with pytest.warns(CoordinateWarning, match="1 of 2 particles lie outside"):
        read_particles(far, frame)


def test_text_in_a_coordinate_column_is_one_clear_error(tmp_path):
    path = tmp_path / "p.star"
    path.write_text("data_particles\n\nloop_\n_rlnTomoName #1\n_rlnCoordinateX #2\n"
                    "_rlnCoordinateY #3\n_rlnCoordinateZ #4\nok 10 10 5\nok abc 10 5\n")
    with pytest.raises(InvalidCoordinatesError, match="rlnCoordinateX of particle 2 is 'abc'"):
        read_star(path, TomogramFrame("ok", (20, 40, 40), 10.0))


def test_points_says_when_the_given_pixel_size_contradicts_the_star(tmp_path, capsys):
    """Read with the file's 7 A, written with the 3.5 A given: one of them is wrong."""
    from napari_tomoseg.cli import main

    prob = _probability(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoordinateWarning)
        assert main(["pick", str(prob), str(tmp_path / "pick.star"), "--diameter", "150",
                     "--tomo-name", "TS_03", "--tilt-series-pixel-size", "7"]) == 0
        capsys.readouterr()
        args = ["points", str(tmp_path / "pick.star"), str(tmp_path / "p.star"), "--tomogram",
                str(prob), "--tomo-name", "TS_03", "--overwrite", "--tilt-series-pixel-size"]
        assert main(args + ["3.5"]) == 0
        assert "says the tilt-series pixel size is 7 A" in capsys.readouterr().err
        assert main(args + ["7"]) == 0
        assert "warning" not in capsys.readouterr().err


def test_picks_added_to_an_info_file_without_apix_unbin_keep_its_pixel_convention(tmp_path):
    """e2spt_boxer reads every box of a file as ``b / apix * apix_unbin + n // 2`` once the
    file has apix_unbin: adding it to a file whose boxes are plain uncentred pixels moved
    them all and rescaled their boxsize. Ours are written in the file's own pixels."""
    shape = (61, 200, 181)
    path = tmp_path / "TS_02_info.json"
    path.write_text(json.dumps({"boxes_3d": [[100.0, 120.0, 30.0, "manual", 0.0, 0]],
                                "class_list": {"0": {"boxsize": 32, "name": "membrane"}}}))
    frame = TomogramFrame("TS_02", shape, 28.0, tilt_series_pixel_size=7.0)
    picks = np.array([[30.0, 100.0, 90.0]])
    with pytest.warns(CoordinateWarning, match="no apix_unbin"):
        write_eman2_json(path, particle_table(picks), frame, box_size=16, feature="ribosome")
    record = json.loads(path.read_text())
    assert "apix_unbin" not in record
    assert record["boxes_3d"][0] == [100.0, 120.0, 30.0, "manual", 0.0, 0]
    assert record["class_list"]["0"]["boxsize"] == 32
    assert record["boxes_3d"][1][:3] == [90.0, 100.0, 30.0]  # x, y, z in this tomogram's pixels
    assert record["class_list"]["1"] == {"boxsize": 16, "name": "ribosome"}
