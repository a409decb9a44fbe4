"""Time and memory of ``trace_filaments`` on maps of growing size, and what it finds there.

    python benchmarks/bench_filaments.py [--short] [--out FILE]

Each map holds straight tubes of a microtubule's 25 nm at 10 A per voxel, with gaps (the
map keeps 15 of every 25 voxels along each; at 11 of 25 the contrast sits at the cut and
tubes were lost), ribosome-sized balls as strong as the tubes, and noise. Columns: seconds,
the tracing's peak memory (numpy's, by tracemalloc; the map itself not counted), filaments
found against placed, and the tubes' Dice against the whole tubes next to the threshold's.
Run it alone: a second job on two cores slows both.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import realistic as rs  # noqa: E402

from napari_tomoseg.filaments import FilamentSettings, trace_filaments  # noqa: E402
from napari_tomoseg.metrics import dice  # noqa: E402

VOXEL, RADIUS = 10.0, 12.5


def patchy_map(shape: tuple[int, int, int], n_tubes: int, seed: int):
    """(map, whole tubes): tubes through the middle of the slab in random directions."""
    rng = np.random.default_rng(seed)
    prob = (0.15 * rng.random(shape, dtype=np.float32))
    truth = np.zeros(shape, bool)
    grid = np.indices(shape, dtype=np.float32)
    for _ in range(n_tubes):
        direction = rng.normal(size=3) * [0.2, 1, 1]
        direction /= np.linalg.norm(direction)
        centre = np.array(shape, float) / 2 + rng.uniform(-0.3, 0.3, 3) * shape
        centre[0] = shape[0] / 2
        offset = grid - centre[:, None, None, None].astype(np.float32)
        along = np.tensordot(direction.astype(np.float32), offset, axes=1)
        across = np.sqrt(np.maximum((offset ** 2).sum(0) - along ** 2, 0))
        tube = (np.abs(along) < 0.35 * max(shape)) & (across <= RADIUS)
        truth |= tube
        prob[tube & ((along % 25) < 15)] = 0.9
    zz, yy, xx = (rng.uniform(0, s, 6 * n_tubes) for s in shape)
    for z, y, x in zip(zz, yy, xx):
        ball = (grid[0] - z) ** 2 + (grid[1] - y) ** 2 + (grid[2] - x) ** 2 <= 12 ** 2
        prob[ball & ~truth] = 0.9
    return prob, truth


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--short", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = [((64, 192, 192), 2)] if args.short else [
        ((96, 256, 256), 2), ((128, 512, 512), 4), ((200, 720, 720), 6)]
    lines = ["# " + rs.provenance(),
             "| map (z y x) | tubes placed | found | s | peak MB (tracemalloc, the map not "
             "counted) | Dice tubes | Dice threshold |", "|---|---|---|---|---|---|---|"]
    for shape, n_tubes in sizes:
        prob, truth = patchy_map(shape, n_tubes, seed=1)
        tracemalloc.start()  # numpy's allocations are traced: the tracing's own peak
        start = time.perf_counter()
        found = trace_filaments(prob, VOXEL, FilamentSettings())
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
        tracemalloc.stop()
        lines.append(f"| {' x '.join(map(str, shape))} | {n_tubes} | {len(found.paths)} | "
                     f"{seconds:.1f} | {peak:.0f} | "
                     f"{dice(found.tubes > 0, truth):.2f} | {dice(prob > 0.5, truth):.2f} |")
        print(lines[-1], flush=True)
    rs.emit(lines, args.out)


if __name__ == "__main__":
    main()
