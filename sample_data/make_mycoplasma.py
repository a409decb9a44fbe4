"""Rebuild sample_data/mpneumoniae_20A.mrc from the public tilt series.

Source: the source distribution of warpylib 1.1.2 (PyPI, MIT licence)
ships a Mycoplasma pneumoniae tilt series from EMPIAR-10499 (Tegunov et
al., Nature Methods 2021): 41 tilts, -60..+60 degrees, 10 A/pixel, with
IMOD alignment files. This script downloads it with pip (about 58 MB),
aligns every tilt with the IMOD .xf transforms, bins 2x to 20 A/pixel,
reconstructs with napari-tomoseg's own weighted back-projection and
stores the tomogram as int8 (zero mean, +-4 sigma over +-127).

    python sample_data/make_mycoplasma.py [--keep-download DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np

from napari_tomoseg.io.mrc import quantise_int8, write_volume
from napari_tomoseg.tilt_series import apply_imod_xf, read_imod_xf, weighted_backprojection

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "mpneumoniae_20A.mrc"
BIN = 2
THICKNESS = 128  # slices at 20 A: 256 nm, the cell plus some ice


def download(folder: Path) -> Path:
    archive = folder / "warpylib-1.1.2.tar.gz"
    if not archive.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "warpylib==1.1.2", "-d", str(folder), "-q"], check=True)
    root = folder / "warpylib-1.1.2"
    if not root.exists():
        with tarfile.open(archive) as tar:
            members = [m for m in tar.getmembers() if "/testdata/" in m.name and
                       ("00254" in m.name)]
            tar.extractall(folder, members=members, filter="data")
    return root / "testdata"


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    ny, nx = (s // factor * factor for s in image.shape)
    return image[:ny, :nx].reshape(ny // factor, factor, nx // factor, factor).mean(axis=(1, 3))


def reconstruct(testdata: Path) -> tuple[np.ndarray, float]:
    with mrcfile.open(testdata / "00254.stack.mrc", permissive=True) as mrc:
        stack = np.asarray(mrc.data, dtype=np.float32)
        pixel = float(mrc.voxel_size.x)
    xf = read_imod_xf(testdata / "xf_import" / "00254.xf")
    angles = np.loadtxt(testdata / "xf_import" / "00254.tlt")
    aligned = []
    for image, transform in zip(stack, xf):
        image = (image - image.mean()) / image.std()
        aligned.append(bin_image(apply_imod_xf(image, transform), BIN))
    series = np.stack(aligned)
    tomogram = weighted_backprojection(series, angles, THICKNESS)
    return tomogram, pixel * BIN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep-download", type=Path, help="folder to keep the 58 MB download in")
    args = parser.parse_args()
    start = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep_download or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        tomogram, voxel = reconstruct(download(folder))
    write_volume(OUTPUT, quantise_int8(tomogram), voxel, overwrite=True)
    print(f"wrote {OUTPUT} {tomogram.shape} at {voxel} A/voxel in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
