"""Exploration speed: a new thick slab while scrolling, and opening a huge tomogram.

    python benchmarks/bench_explore.py [--short]

1. A 1024x1024x256 float32 MRC (1 GB, memory-mapped): time to compute the
   display of a new 15-slice slab (mean; with and without a 2 nm low-pass)
   for 20 consecutive z positions, nothing cached.
2. A 4096x4096x1024 float16 MRC (32 GiB, sparse on disk): time and peak
   memory to open it, build the pyramid and compute the first (coarsest)
   view of its middle slice.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np

from napari_tomoseg.explore import DisplaySettings, multiscale_pyramid
from napari_tomoseg.explore.display import display_plane
from napari_tomoseg.io.mrc import open_volume


def peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 1024
    return float("nan")


def current_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--short", action="store_true")
    args = parser.parse_args()
    shape = (64, 512, 512) if args.short else (256, 1024, 1024)
    huge = (128, 1024, 1024) if args.short else (1024, 4096, 4096)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tomo.mrc"
        rng = np.random.default_rng(0)
        with mrcfile.new_mmap(path, shape=shape, mrc_mode=2, overwrite=True) as mrc:
            for z in range(shape[0]):
                mrc.data[z] = rng.normal(size=shape[1:]).astype(np.float32)
            mrc.voxel_size = 10.0
        data, _ = open_volume(path)
        print(f"slab display on a {shape[2]}x{shape[1]}x{shape[0]} float32 tomogram (ms per new slab)")
        print("| slab | filter | median | max |")
        print("|---|---|---|---|")
        for lowpass in (0.0, 2.0):
            settings = DisplaySettings(thickness=15, lowpass_nm=lowpass)
            times = []
            for z in range(100, 120) if not args.short else range(20, 40):
                start = time.perf_counter()
                display_plane(data, 0, z, 10.0, settings)
                times.append(1000 * (time.perf_counter() - start))
            print(f"| 15 slices | {'low-pass 2 nm' if lowpass else 'none'} | "
                  f"{np.median(times):.0f} | {np.max(times):.0f} |")
        del data
        big = Path(folder) / "huge.mrc"
        with mrcfile.new_mmap(big, shape=huge, mrc_mode=12, overwrite=True) as mrc:
            mrc.voxel_size = 10.0
        rss_before = current_mb()
        start = time.perf_counter()
        volume, _ = open_volume(big, check_finite=False)
        levels = multiscale_pyramid(volume)
        first = np.asarray(levels[-1][huge[0] // 2])
        seconds = time.perf_counter() - start
        print(f"\n{huge[2]}x{huge[1]}x{huge[0]} float16 ({big.stat().st_size / 2**30:.0f} GiB): open + "
              f"pyramid ({len(levels)} levels) + first view {first.shape}: {seconds:.2f} s, "
              f"resident memory +{current_mb() - rss_before:.0f} MB (peak {peak_mb():.0f} MB)")


if __name__ == "__main__":
    main()
