"""Our tilt geometry and MRC origin have IMOD's hand, checked against IMOD's own formulas.

IMOD's projection model (tiltalign, re-implemented here, not read from our
code): flib/tiltalign/fill_matrices.f90 fill_ytilt_matrix fills the matrix
row by row ("matrices must be organized to progress across rows",
mat_product) as [[cos b, 0, sin b], [0, 1, 0], [-sin b, 0, cos b]], and
funct.f90 projects a point as xproj = a x + b y + c z, yproj = d x + e y + f z.
Without distortion or rotation that is xproj = x cos b + z sin b, yproj = y
(x, y, z about the tilt axis; the tilt axis along y).

IMOD's MRC origin (libiimod/mrcfiles.c mrc_head_read, html/mrc_format.txt):
internally the origin is "the location of the origin of the coordinate
system relative to the first pixel", so a pixel i sits at
i * spacing - origin. The value in the file is inverted on reading when the
file carries a standard MRC version (nversion 20140 and later) or IMOD's
flag 4; files IMOD wrote without that flag store the internal value.
"""

from __future__ import annotations

import struct
from datetime import date

import numpy as np
import pytest

from napari_tomoseg import tilt_series as ts
from napari_tomoseg.io.mrc import open_volume, write_volume

IMOD_STAMP = 1146047817


def imod_xproj(x: float, z: float, tilt_deg: float) -> float:
    """tiltalign's projected X of a point (x, z) about the tilt axis."""
    b = np.deg2rad(tilt_deg)
    ytmat = np.array([np.cos(b), 0, np.sin(b), 0, 1, 0, -np.sin(b), 0, np.cos(b)])  # row-major
    a, _, c = ytmat.reshape(3, 3)[0]
    return a * x + c * z


def point_volume(nz: int, ny: int, nx: int, points: list[tuple[float, float, float]]) -> np.ndarray:
    """Small Gaussian spots at (x, y, z) offsets from the volume centre."""
    z, y, x = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in (nz, ny, nx)), indexing="ij")
    volume = np.zeros((nz, ny, nx), np.float32)
    for px, py, pz in points:
        volume += np.exp(-((x - px) ** 2 + (y - py) ** 2 + (z - pz) ** 2) / (2 * 1.0 ** 2))
    return volume


@pytest.mark.parametrize("tilt", [-50.0, -20.0, 35.0, 55.0])
def test_projection_puts_an_off_centre_point_where_imod_does(tilt):
    nz, ny, nx = 33, 9, 65
    x0, z0 = 6.0, 10.0  # mirrored geometry would put it at x0 cos - z0 sin: far away
    projection = ts.project(point_volume(nz, ny, nx, [(x0, 0.0, z0)]), np.array([tilt]))[0]
    profile = projection.sum(axis=0)
    u = np.arange(nx) - (nx - 1) / 2
    found = float((profile * u).sum() / profile.sum())
    assert found == pytest.approx(imod_xproj(x0, z0, tilt), abs=0.3)
    assert abs(found - imod_xproj(x0, -z0, tilt)) > 5  # not the mirror image


def test_reconstruction_of_imod_projections_keeps_the_hand():
    """Projections drawn with IMOD's formula reconstruct (our WBP) an L at the right hand."""
    nz, ny, nx = 33, 5, 65
    points = [(8.0, 0.0, 9.0), (-10.0, 0.0, 9.0), (-10.0, 0.0, -6.0)]  # an L: no mirror symmetry
    tilts = ts.tilt_angles(-60, 60, 3)
    u = np.arange(nx) - (nx - 1) / 2
    series = np.zeros((len(tilts), ny, nx), np.float32)
    for i, tilt in enumerate(tilts):
        for px, _, pz in points:
            series[i] += np.exp(-(u - imod_xproj(px, pz, tilt)) ** 2 / 2.0)[None, :]
    volume = ts.weighted_backprojection(series, tilts, nz)
    plane = volume[:, ny // 2, :]  # (z, x)

    def at(px, pz):
        return float(plane[int(round(pz + (nz - 1) / 2)), int(round(px + (nx - 1) / 2))])

    for px, _, pz in points:
        assert at(px, pz) > 0.5 * plane.max()
        assert at(px, -pz) < 0.25 * plane.max()  # the mirrored spot is empty


def imod_origin(path) -> np.ndarray:
    """IMOD's internal (x, y, z) origin after mrc_head_read's inversion rule."""
    header = open(path, "rb").read(224)
    nversion = struct.unpack_from("<i", header, 108)[0]
    stamp, flags = struct.unpack_from("<ii", header, 152)
    origin = np.array(struct.unpack_from("<fff", header, 196), dtype=float)
    # mrcGetStandardVersion: 20140 <= nversion < 10 * (current year + 2)
    if (stamp == IMOD_STAMP and flags & 4) or 20140 <= nversion < 10 * (date.today().year + 2):
        origin = -origin
    return origin


def test_our_origin_is_where_imod_puts_the_voxels(tmp_path):
    origin_zyx = (-150.0, 320.0, 1200.0)
    voxel = 10.0
    path = write_volume(tmp_path / "t.mrc", np.zeros((4, 5, 6), np.float32), voxel, origin_zyx)
    internal = imod_origin(path)  # x, y, z
    index_xyz = np.array([3.0, 2.0, 1.0])
    imod_world = index_xyz * voxel - internal
    _, info = open_volume(path)
    ours = np.array(info.origin)[::-1] + index_xyz * voxel
    assert np.allclose(imod_world, ours)


@pytest.mark.parametrize("nversion", [0, 25000, 10 * (date.today().year + 2)])
def test_an_old_style_imod_origin_is_read_with_imods_sign(tmp_path, nversion):
    """A file IMOD wrote with a non-zero origin and no flag 4 stores the internal value; a
    version number beyond IMOD's window (old SerialEM left such) marks no standard file."""
    path = write_volume(tmp_path / "imod.mrc", np.zeros((4, 5, 6), np.float32), 10.0)
    raw = bytearray(path.read_bytes())
    struct.pack_into("<i", raw, 108, nversion)  # no standard version, as IMOD writes then
    struct.pack_into("<ii", raw, 152, IMOD_STAMP, 0)
    struct.pack_into("<fff", raw, 196, 40.0, -30.0, 20.0)  # internal: origin relative to pixel 0
    path.write_bytes(bytes(raw))
    assert np.allclose(imod_origin(path), [40.0, -30.0, 20.0])  # not inverted by IMOD
    _, info = open_volume(path)
    # IMOD places pixel 0 at 0 * spacing - internal origin = (-40, 30, -20) (x, y, z)
    assert np.allclose(np.array(info.origin)[::-1], [-40.0, 30.0, -20.0])
