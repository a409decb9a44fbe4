"""RELION 3.0/3.1 subtomogram STAR files: tomogram in rlnMicrographName, 3.0 shifts in pixels.

The STAR text is written by hand here, never by our writer, and every expected centre is
computed with RELION's own conventions, re-implemented below from its source (3dem/relion):

* src/metadata_label.h: ``rlnOriginX/Y/Z`` are "X-coordinate (in pixels) for the origin of
  rotation", ``rlnOriginX/Y/ZAngst`` the same in Angstrom.
* src/jaz/io/star_converter.cpp (RELION 3.1 reading a 3.0 file): ``unifyPixelSize`` sets
  ``rlnImagePixelSize = 10000 * rlnDetectorPixelSize / rlnMagnification`` and
  ``translateOffsets`` sets ``rlnOriginXAngst = rlnOriginX * rlnImagePixelSize``: same sign.
* src/preprocessing.cpp (RELION 3.0, ``getCoordinateMetaDataTable``, re-extraction with
  re-centring): ``xoff *= angpix_particles / angpix_micrograph; xcoord -= ROUND(xoff)``: the
  centre is the coordinate minus the origin, the origin in pixels of the particle image.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from napari_tomoseg.errors import InvalidCoordinatesError
from napari_tomoseg.io.mrc import write_volume
from napari_tomoseg.io.particles import (CoordinateWarning, TomogramFrame, read_csv,
                                         read_star)

VOXEL = 10.0  # Angstrom, the tomogram's voxel (and the subtomograms' pixel unless rescaled)
FRAME = TomogramFrame("TS_01", (60, 200, 200), VOXEL)
COORD = np.array([[100.0, 120.0, 30.0], [50.0, 60.0, 20.0]])  # x, y, z pixels
ORIGIN_PX = np.array([[5.0, -3.0, 2.0], [-1.5, 0.0, 4.0]])  # x, y, z pixels (RELION 3.0)


# --- RELION, re-implemented from its source -------------------------------------------------
def relion_image_pixel_size(detector_pixel_um: float, magnification: float) -> float:
    """``StarConverter::unifyPixelSize``: ``angpix = 10000 * dstep / mag``."""
    return 10000.0 * detector_pixel_um / magnification


def relion31_origin_angst(origin_px: np.ndarray, image_pixel: float) -> np.ndarray:
    """``StarConverter::translateOffsets``: ``rlnOriginXAngst = rlnOriginX * angpix``."""
    return origin_px * image_pixel


def relion30_centre(coord_px: np.ndarray, origin_px: np.ndarray, image_pixel: float,
                    micrograph_pixel: float) -> np.ndarray:
    """``Preprocessing::getCoordinateMetaDataTable`` (3.0): origin rescaled to micrograph
    pixels (``rescale_fndata = angpix2 / angpix``), then ``xcoord -= xoff`` (unrounded)."""
    return coord_px - origin_px * (image_pixel / micrograph_pixel)


# --- STAR text, by hand -----------------------------------------------------------------------
def star_text(columns: list[str], rows: list[list]) -> str:
    header = "".join(f"_{c} #{i + 1}\n" for i, c in enumerate(columns))
    body = "".join(" ".join(str(v) for v in row) + "\n" for row in rows)
    return f"\n# version 30001\n\ndata_particles\n\nloop_\n{header}{body}"


def relion30_star(path, micrographs, coord=COORD, origin_px=ORIGIN_PX, extra=None):
    """A RELION 3.0 subtomogram STAR: no rlnTomoName, shifts in pixels."""
    extra = extra or {}
    columns = ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ",
               "rlnImageName", "rlnOriginX", "rlnOriginY", "rlnOriginZ", *extra]
    rows = [[mic, *c, f"Extract/job010/{i:06d}.mrc", *o, *(v[i] for v in extra.values())]
            for i, (mic, c, o) in enumerate(zip(micrographs, coord, origin_px))]
    path.write_text(star_text(columns, rows))
    return path


def relion31_star(path, micrographs, origin_angst, coord=COORD):
    columns = ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ",
               "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"]
    rows = [[mic, *c, *o] for mic, c, o in zip(micrographs, coord, origin_angst)]
    path.write_text(star_text(columns, rows))
    return path


def xyz(table) -> np.ndarray:
    return table[["x", "y", "z"]].to_numpy(dtype=float)


# --- Bug 2: RELION 3.0 shifts in pixels --------------------------------------------------------
def test_relion30_pixel_shifts_move_the_centre_as_relion_does(tmp_path):
    path = relion30_star(tmp_path / "r30.star", ["TS_01.mrc"] * 2)
    expected = relion30_centre(COORD, ORIGIN_PX, VOXEL, VOXEL)
    np.testing.assert_allclose(expected[0], [95.0, 123.0, 28.0])  # the worked example
    np.testing.assert_allclose(xyz(read_star(path, FRAME)), expected, atol=1e-6)
    # without a tomogram the shifts are in the pixels of the coordinates all the same
    np.testing.assert_allclose(xyz(read_star(path)), expected, atol=1e-6)


def test_a_particle_written_the_30_and_the_31_way_has_one_centre(tmp_path):
    r30 = read_star(relion30_star(tmp_path / "r30.star", ["TS_01.mrc"] * 2), FRAME)
    angst = relion31_origin_angst(ORIGIN_PX, VOXEL)
    r31 = read_star(relion31_star(tmp_path / "r31.star", ["TS_01.mrc"] * 2, angst), FRAME)
    np.testing.assert_allclose(xyz(r30), xyz(r31), atol=1e-6)


def test_rescaled_subtomograms_shift_by_their_own_pixel(tmp_path):
    """Extracted at 20 A from a 10 A tomogram: RELION 3.0 writes that pixel as
    rlnDetectorPixelSize / rlnMagnification, and the shifts in it."""
    dstep, mag = 20.0, 10000.0
    image_pixel = relion_image_pixel_size(dstep, mag)
    path = relion30_star(tmp_path / "r30.star", ["TS_01.mrc"] * 2,
                         extra={"rlnDetectorPixelSize": [dstep] * 2, "rlnMagnification": [mag] * 2})
    expected = relion30_centre(COORD, ORIGIN_PX, image_pixel, VOXEL)
    np.testing.assert_allclose(expected[0], [90.0, 126.0, 26.0])
    np.testing.assert_allclose(xyz(read_star(path, FRAME)), expected, atol=1e-6)


def test_angstrom_shifts_win_over_pixel_shifts(tmp_path):
    angst = np.array([[10.0, 20.0, -30.0], [0.0, 0.0, 0.0]])
    columns = ["rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY", "rlnCoordinateZ",
               "rlnOriginX", "rlnOriginY", "rlnOriginZ",
               "rlnOriginXAngst", "rlnOriginYAngst", "rlnOriginZAngst"]
    rows = [["TS_01.mrc", *c, *o, *a] for c, o, a in zip(COORD, ORIGIN_PX, angst)]
    (tmp_path / "both.star").write_text(star_text(columns, rows))
    table = read_star(tmp_path / "both.star", FRAME)
    np.testing.assert_allclose(xyz(table), COORD - angst / VOXEL, atol=1e-6)


def test_text_in_a_pixel_shift_is_one_clear_error(tmp_path):
    path = relion30_star(tmp_path / "r30.star", ["TS_01.mrc"] * 2,
                         origin_px=[["abc", 0, 0], [0, 0, 0]])
    with pytest.raises(InvalidCoordinatesError, match="rlnOriginX of particle 1 is 'abc'"):
        read_star(path, FRAME)


# --- Bug 1: the tomogram of each row is in rlnMicrographName -----------------------------------
MULTI = ["Tomograms/TS_01.mrc", "TS_02.mrc", "TS_02", "Tomograms/TS_03/TS_03.mrc"]
MULTI_COORD = np.array([[100.0, 120.0, 30.0], [50.0, 60.0, 20.0], [70.0, 80.0, 40.0],
                        [10.0, 20.0, 10.0]])


def multi_star(tmp_path):
    return relion30_star(tmp_path / "r30multi.star", MULTI, coord=MULTI_COORD,
                         origin_px=np.zeros((4, 3)))


def test_only_the_opened_tomograms_rows_are_read(tmp_path):
    path = multi_star(tmp_path)
    with pytest.warns(CoordinateWarning, match="particles of 'TS_01'; skipped 3 of 2 other"):
        table = read_star(path, FRAME)
    np.testing.assert_allclose(xyz(table), MULTI_COORD[:1])
    assert list(table["tomo_name"]) == ["TS_01"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoordinateWarning)
        two = read_star(path, FRAME, tomo_name="TS_02")
    np.testing.assert_allclose(xyz(two), MULTI_COORD[1:3])
    with pytest.raises(InvalidCoordinatesError,
                       match=r"no particles of 'tomo' \(it holds TS_01, TS_02, TS_03\)"):
        read_star(path, TomogramFrame("tomo", FRAME.shape, VOXEL))


def test_one_other_tomogram_is_placed_with_a_warning_unless_named(tmp_path):
    path = relion30_star(tmp_path / "one.star", ["Tomograms/tomo7.rec"] * 2)
    with pytest.warns(CoordinateWarning, match="belong to 'tomo7', not 'TS_01'"):
        assert len(read_star(path, FRAME)) == 2
    with pytest.raises(InvalidCoordinatesError, match="no particles of 'TS_09'"):
        read_star(path, FRAME, tomo_name="TS_09")


def test_rln_tomo_name_wins_and_numeric_names_stay_text(tmp_path):
    columns = ["rlnTomoName", "rlnMicrographName", "rlnCoordinateX", "rlnCoordinateY",
               "rlnCoordinateZ"]
    (tmp_path / "both.star").write_text(star_text(columns, [["TS_01", "TS_02.mrc", 5, 5, 5]]))
    assert len(read_star(tmp_path / "both.star", FRAME)) == 1
    (tmp_path / "num.star").write_text(star_text(columns[1:], [["001", 5, 5, 5], ["002", 6, 6, 6]]))
    with pytest.warns(CoordinateWarning, match="particles of '001'"):
        assert len(read_star(tmp_path / "num.star", TomogramFrame("001", FRAME.shape, VOXEL))) == 1


def test_points_cli_keeps_one_tomogram_of_a_relion30_star(tmp_path, capsys):
    from napari_tomoseg.cli import main

    star = multi_star(tmp_path)
    tomo = write_volume(tmp_path / "tomo.mrc", np.zeros(FRAME.shape, np.float32), VOXEL)
    out = tmp_path / "out.csv"
    assert main(["points", str(star), str(out), "--tomogram", str(tomo)]) != 0
    assert "no particles of 'tomo' (it holds TS_01, TS_02, TS_03)" in capsys.readouterr().err
    assert not out.exists()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CoordinateWarning)
        assert main(["points", str(star), str(out), "--tomogram", str(tomo),
                     "--tomo-name", "TS_02"]) == 0
    np.testing.assert_allclose(xyz(read_csv(out)), MULTI_COORD[1:3], atol=1e-6)
