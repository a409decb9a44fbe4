"""MRC reading and writing: geometry kept, memory-mapped, bad files refused clearly."""

from __future__ import annotations

import resource
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from napari_tomoseg.errors import InvalidVolumeError
from napari_tomoseg.io.mrc import (MrcStream, open_volume, read_header, replace_nonfinite,
                                   robust_contrast_limits, write_volume)
from napari_tomoseg.io.mrc_header import PermutedAxesWarning


def _volume(shape=(6, 10, 12), dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * 20).astype(dtype)


def test_round_trip_keeps_data_voxel_size_and_origin(tmp_path):
    data = _volume()
    path = write_volume(tmp_path / "t.mrc", data, voxel_size=(12.0, 13.5, 14.0),
                        origin=(-100.0, 250.5, 3000.0))
    loaded, info = open_volume(path)
    np.testing.assert_array_equal(loaded, data)
    assert isinstance(loaded, np.memmap)
    assert info.shape == data.shape
    assert info.voxel_size == pytest.approx((12.0, 13.5, 14.0))
    assert info.origin == pytest.approx((-100.0, 250.5, 3000.0))
    with mrcfile.open(path) as mrc:  # what other programs see: x y z order in the header
        assert float(mrc.header.origin.x) == pytest.approx(3000.0)
        assert float(mrc.voxel_size.x) == pytest.approx(14.0)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.uint16, np.float16, np.float32])
def test_modes_read_with_their_values(tmp_path, dtype):
    data = _volume(dtype=np.float32)
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        data = np.clip(data, info.min, info.max)
    data = data.astype(dtype)
    path = write_volume(tmp_path / "m.mrc", data)
    loaded, _ = open_volume(path)
    assert loaded.dtype == dtype
    np.testing.assert_array_equal(loaded, data)
    lo, hi = robust_contrast_limits(loaded)
    assert float(data.min()) <= lo < hi <= float(data.max())


def test_labels_of_any_integer_type_are_stored_compactly(tmp_path):
    labels = np.zeros((4, 5, 6), np.int64)
    labels[1, 2, 3] = 3
    path = write_volume(tmp_path / "labels.mrc", labels)
    loaded, _ = open_volume(path)
    assert loaded.dtype == np.int8
    assert loaded[1, 2, 3] == 3 and loaded.sum() == 3


def _gzipped(path):
    """The same file as .mrc.gz (which is read whole, not memory-mapped)."""
    import gzip

    packed = path.with_name(path.name + ".gz")
    packed.write_bytes(gzip.compress(path.read_bytes()))
    return packed


@pytest.mark.parametrize("compressed", [False, True])
def test_old_imod_unsigned_bytes_are_read_unsigned(tmp_path, compressed):
    data = np.array([[[0, 100, 200, 255]]], dtype=np.uint8)
    path = tmp_path / "imod.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(data.view(np.int8))
    raw = bytearray(path.read_bytes())
    raw[152:156] = np.int32(1146047817).tobytes()  # IMOD stamp, flags 0: unsigned bytes
    raw[156:160] = np.int32(0).tobytes()
    path.write_bytes(bytes(raw))
    loaded, _ = open_volume(_gzipped(path) if compressed else path)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, data)


@pytest.mark.parametrize("dmin, dmax, expected", [(0.0, 255.0, [0, 100, 200, 255]),
                                                   (-128.0, 127.0, [0, 100, -56, -1])])
def test_unstamped_bytes_are_unsigned_when_the_header_range_says_so(tmp_path, dmin, dmax,
                                                                   expected):
    """IMOD's rule for byte files from other programs (b3dutil.c, readBytesSigned): a
    header range of 0..255 cannot be signed bytes; otherwise MRC2014's signed bytes."""
    path = tmp_path / "bytes.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.array([[[0, 100, 200, 255]]], dtype=np.uint8).view(np.int8))
        mrc.header.dmin, mrc.header.dmax = dmin, dmax
    loaded, _ = open_volume(path)
    assert loaded.ravel().tolist() == expected


# (mapc, mapr, maps) -> how the (z, y, x) volume is stored: sections, rows, columns are the
# axes maps, mapr, mapc (MRC2014); (2, 3, 1) is a cycle, so an inverted permutation fails it
@pytest.mark.parametrize("mapping, stored_as", [((3, 2, 1), (2, 1, 0)), ((2, 3, 1), (2, 0, 1))])
@pytest.mark.parametrize("compressed", [False, True])
def test_swapped_axis_mapping_is_transposed_to_zyx(tmp_path, mapping, stored_as, compressed):
    data = _volume(shape=(3, 4, 5))
    path = tmp_path / "swapped.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ascontiguousarray(data.transpose(stored_as)))
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = mapping
    with pytest.warns(PermutedAxesWarning, match="IMOD, RELION and EMAN2 ignore"):
        loaded, info = open_volume(_gzipped(path) if compressed else path)
    assert info.shape == (3, 4, 5)
    np.testing.assert_array_equal(loaded, data)


def _as_relion_reads(path) -> np.ndarray:
    """The voxels as RELION's rwMRC.h reads them: nx, ny, nz and the data after the header
    (and nsymbt bytes), mapc, mapr and maps never read (as IMOD)."""
    raw = Path(path).read_bytes()
    nx, ny, nz, mode = np.frombuffer(raw[:16], "<i4")
    assert mode == 2
    nsymbt = int(np.frombuffer(raw[92:96], "<i4")[0])
    start = 1024 + nsymbt
    return np.frombuffer(raw[start:start + 4 * nx * ny * nz], "<f4").reshape(nz, ny, nx)


def test_clean_rewrites_a_permuted_file_as_relion_and_imod_read_it(tmp_path, capsys):
    """The warning's advice works: the copy holds, as RELION reads it, what we show."""
    from napari_tomoseg.cli import main

    data = _volume(shape=(3, 4, 5))
    path = tmp_path / "swapped.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.ascontiguousarray(data.transpose(2, 1, 0)))
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = (3, 2, 1)
        mrc.voxel_size = 10.0
    assert _as_relion_reads(path).shape == (5, 4, 3)  # what RELION would pick on: transposed
    with warnings.catch_warnings():
        warnings.simplefilter("error", PermutedAxesWarning)  # not told to do what it does
        assert main(["clean", str(path), str(tmp_path / "standard.mrc")]) == 0
    assert "standard order" in capsys.readouterr().out
    np.testing.assert_array_equal(_as_relion_reads(tmp_path / "standard.mrc"), data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PermutedAxesWarning)  # the copy is standard
        copy, info = open_volume(tmp_path / "standard.mrc")
    np.testing.assert_array_equal(copy, data)
    assert info.voxel_size == (10.0, 10.0, 10.0)


def test_missing_voxel_size_is_flagged(tmp_path):
    path = tmp_path / "nov.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(_volume())
        mrc.voxel_size = 0.0
    _, info = read_header(path)
    assert info.voxel_size == (1.0, 1.0, 1.0) and not info.voxel_size_in_header


def test_a_volume_larger_than_memory_budget_opens_without_reading(tmp_path):
    """A 4 GiB sparse file: opening it and reading a slice must not load it."""
    shape = (1024, 1024, 1024)
    path = tmp_path / "huge.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((1, 1, 1), np.float32))
        mrc.header.nx, mrc.header.ny, mrc.header.nz = shape[2], shape[1], shape[0]
        mrc.header.mx, mrc.header.my, mrc.header.mz = shape[2], shape[1], shape[0]
    with open(path, "r+b") as handle:
        handle.truncate(1024 + 4 * int(np.prod(shape)))  # sparse: no disk blocks
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    data, info = open_volume(path)
    middle = np.asarray(data[512])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert info.shape == shape and middle.shape == (1024, 1024)
    assert (after - before) * 1024 < 200 * 2**20  # far below the 4 GiB of the file


def _write_raw(path, data=None):
    write_volume(path, _volume() if data is None else data)
    return path


@pytest.mark.parametrize("case,message", [
    ("not_mrc", "not a valid MRC file"),
    ("tiny", "shorter than the 1024-byte MRC header"),
    ("truncated", "truncated or its header is wrong"),
    ("too_long", "more data than its header describes"),
    ("dims_disagree", "truncated or its header is wrong"),
    ("complex", "complex numbers"),
    ("four_d", "stack of volumes (4D"),
    ("nan", "NaN or infinite"),
    ("inf", "NaN or infinite"),
    ("missing", "does not exist"),
])
def test_bad_files_give_clear_errors(tmp_path, case, message):
    path = tmp_path / f"{case}.mrc"
    if case == "not_mrc":
        path.write_bytes(b"This is a text file with an MRC suffix. " * 100)
    elif case == "tiny":
        path.write_bytes(b"MRC")
    elif case == "truncated":
        raw = _write_raw(path).read_bytes()
        path.write_bytes(raw[:-100])
    elif case == "too_long":
        raw = _write_raw(path).read_bytes()
        path.write_bytes(raw + b"\0" * 400)
    elif case == "dims_disagree":
        _write_raw(path)
        with mrcfile.open(path, mode="r+", permissive=True) as mrc:
            mrc.header.nz = 60
    elif case == "complex":
        with mrcfile.new(path) as mrc:
            mrc.set_data(np.ones((2, 3, 4), np.complex64))
    elif case == "four_d":
        with mrcfile.new(path) as mrc:
            mrc.set_data(np.ones((2, 3, 4, 5), np.float32))
    elif case in ("nan", "inf"):
        data = _volume()
        data[3, 4, 5] = np.nan if case == "nan" else np.inf
        _write_raw(path, data)
    with pytest.raises(InvalidVolumeError) as info:
        open_volume(path)
    assert message in str(info.value)
    assert path.name in str(info.value) or case == "missing"


def test_replace_nonfinite_makes_a_usable_copy(tmp_path):
    data = _volume()
    data[0, 0, 0] = np.nan
    data[5, 9, 11] = -np.inf
    src = _write_raw(tmp_path / "bad.mrc", data)
    assert replace_nonfinite(src, tmp_path / "clean.mrc", chunk_slices=2) == 2
    clean, _ = open_volume(tmp_path / "clean.mrc")
    finite = np.isfinite(data)
    assert np.all(np.isfinite(clean))
    np.testing.assert_allclose(clean[finite], data[finite])
    assert clean[0, 0, 0] == pytest.approx(data[finite].mean(), rel=1e-4)


def test_writing_never_overwrites_unless_asked(tmp_path):
    path = _write_raw(tmp_path / "keep.mrc")
    original = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_volume(path, np.zeros((2, 2, 2), np.float32))
    assert path.read_bytes() == original


def test_streamed_volume_appears_only_when_complete(tmp_path):
    target = tmp_path / "seg.mrc"
    with pytest.raises(RuntimeError):
        with MrcStream(target, (4, 8, 8), np.float16, voxel_size=20.0, origin=(1, 2, 3)) as out:
            out.write(0, np.ones((1, 8, 8)))
            raise RuntimeError("cancelled")
    assert not target.exists() and not list(tmp_path.iterdir())
    with MrcStream(target, (4, 8, 8), np.float16, voxel_size=20.0, origin=(1, 2, 3)) as out:
        for z in range(4):
            out.write(z, np.full((1, 8, 8), z))
    data, info = open_volume(target)
    assert data.dtype == np.float16 and float(data[3, 0, 0]) == 3.0
    assert info.voxel_size == (20.0, 20.0, 20.0) and info.origin == (1.0, 2.0, 3.0)


def test_gzip_compressed_volumes_round_trip(tmp_path):
    data = (_volume() > 0).astype(np.int8)
    path = write_volume(tmp_path / "labels.mrc.gz", data, 7.0, (1.0, 2.0, 3.0))
    loaded, info = open_volume(path)
    np.testing.assert_array_equal(loaded, data)
    assert info.voxel_size == (7.0, 7.0, 7.0) and info.origin == (1.0, 2.0, 3.0)


def test_streamed_uint8_keeps_its_values_and_a_failed_start_leaves_nothing(tmp_path):
    """MRC has no unsigned-byte mode: mrcfile widens uint8 to uint16, and the stream must
    write what the header says (an IMOD byte tomogram through `tomoseg clean`)."""
    target = tmp_path / "bytes.mrc"
    values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    with MrcStream(target, (2, 16, 16), np.uint8, voxel_size=(5.0, 6.0, 7.0)) as out:
        out.write(0, values)
        out.write(1, values[:, ::-1])
    data, info = open_volume(target)
    np.testing.assert_array_equal(np.asarray(data[0]), values[0])
    np.testing.assert_array_equal(np.asarray(data[1]), values[0, ::-1])
    assert info.voxel_size == (5.0, 6.0, 7.0)
    with pytest.raises(ValueError):  # a header label over 80 characters
        MrcStream(tmp_path / "bad.mrc", (2, 4, 4), np.float32, labels=("x" * 100,))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bytes.mrc"]


def test_replace_nonfinite_keeps_a_missing_voxel_size_missing(tmp_path):
    """A header without a voxel size must not come out of `tomoseg clean` with a real 1 A:
    every command would then take 1 A without asking."""
    src = tmp_path / "nov.mrc"
    with mrcfile.new(src) as mrc:
        mrc.set_data(_volume())
        mrc.voxel_size = 0.0
    replace_nonfinite(src, tmp_path / "clean.mrc")
    assert not read_header(tmp_path / "clean.mrc")[1].voxel_size_in_header


@pytest.mark.parametrize("compressed", [False, True])
def test_a_nan_origin_reads_as_zero_plain_or_compressed(tmp_path, compressed):
    """A plain file's NaN origin read as 0; the same header gzipped kept NaN, which moved the
    layer to nowhere and wrote NaN into the CSV's Angstrom columns."""
    import mrcfile

    path = tmp_path / "o.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(np.zeros((4, 5, 6), np.float32))
        mrc.voxel_size = 10.0
        mrc.header.origin.z = np.nan
        mrc.header.origin.y = 20.0
    _, info = open_volume(_gzipped(path) if compressed else path)
    assert info.origin == (0.0, 0.0, 0.0)


def _chimerax_first_voxel_xyz(path) -> np.ndarray:
    """Where ChimeraX puts voxel (0, 0, 0), in Angstrom: its MRC reader
    (map_data/mrc/mrc_format.py, MRC_Data.__init__) takes the header origin unless it is all
    zero, and then the start indices (nxstart, nystart, nzstart) times the voxel size."""
    with mrcfile.open(path, header_only=True) as mrc:
        h = mrc.header
        step = np.array([float(h.cella.x) / h.mx, float(h.cella.y) / h.my, float(h.cella.z) / h.mz])
        origin = np.array([float(h.origin.x), float(h.origin.y), float(h.origin.z)])
        start = np.array([int(h.nxstart), int(h.nystart), int(h.nzstart)])
    return origin if origin.any() else start * step


@pytest.mark.parametrize("compressed", [False, True])
def test_a_map_of_a_tomogram_placed_by_its_start_indices_lies_on_it_in_chimerax(tmp_path,
                                                                                 compressed):
    """A tomogram with origin 0 and start indices (50, 60, 70) (as Bsoft writes): read as
    origin 0, its maps (start 0) lay 50-70 voxels away from it in ChimeraX."""
    src = tmp_path / "t.mrc"
    with mrcfile.new(src) as mrc:
        mrc.set_data(np.ones((6, 7, 8), np.float32))
        mrc.voxel_size = 10.0
        mrc.header.nxstart, mrc.header.nystart, mrc.header.nzstart = 50, 60, 70
    _, info = open_volume(_gzipped(src) if compressed else src)
    assert info.origin == (700.0, 600.0, 500.0)  # z y x, where ChimeraX shows it
    replace_nonfinite(src, tmp_path / "copy.mrc")  # written as every map is: its origin
    np.testing.assert_allclose(_chimerax_first_voxel_xyz(tmp_path / "copy.mrc"),
                               _chimerax_first_voxel_xyz(src))
