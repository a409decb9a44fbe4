"""Start here: launch (napari with the plugin) and demo (a headless tour)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _display_available() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_launch(args: argparse.Namespace) -> int:
    if not _display_available() and not args.force:
        ignored = (f" ({', '.join(args.files)} not opened)" if args.files else "")
        print("tomoseg: no display found (DISPLAY is not set), so napari cannot open a window"
              f"{ignored}.\nRunning the headless demo instead (into {args.demo_output}); on a "
              "desktop, or with `xvfb-run`, `tomoseg launch` opens napari.", file=sys.stderr)
        return cmd_demo(argparse.Namespace(output=args.demo_output, overwrite=True))
    from .._napari.launch import launch

    launch(files=args.files, sample=args.sample, run=not args.no_run)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Headless tour: make a small synthetic cell, read it back, report what is in it."""
    import numpy as np

    from ..features import FEATURES
    from ..io.mrc import open_volume
    from ..io.particles import read_star
    from ..synthetic import CellSpec, simulate, write_synthetic

    start = time.perf_counter()
    spec = CellSpec(shape=(48, 192, 192), n_vesicles=2, n_microtubules=1, n_actin=3)
    result = simulate(spec, seed=7)
    files = write_synthetic(result, args.output, name="demo_cell", overwrite=args.overwrite)
    data, info = open_volume(files["tomogram"])
    print(f"demo tomogram {files['tomogram']}: {info.shape} voxels at {info.voxel_size[0]} A")
    for feature in FEATURES:
        labels, _ = open_volume(files[feature])
        print(f"  {feature:12s} {100 * float(np.mean(labels > 0)):5.2f}% of voxels")
    particles = read_star(files["particles"])
    print(f"  {len(particles)} ribosomes in {files['particles'].name}; "
          f"{time.perf_counter() - start:.1f} s in all")
    return 0


def add_parsers(sub) -> None:
    launch = sub.add_parser("launch", help="open napari with the plugin and a sample tomogram")
    launch.add_argument("files", nargs="*", help="tomograms or particle files to open")
    launch.add_argument("--sample", choices=("synthetic", "mpneumoniae", "none"), default="synthetic")
    launch.add_argument("--no-run", action="store_true", help="set up the viewer, do not block")
    launch.add_argument("--force", action="store_true", help="try napari even without DISPLAY")
    launch.add_argument("--demo-output", type=Path, default=Path("tomoseg_demo"))
    launch.set_defaults(func=cmd_launch)

    demo = sub.add_parser("demo", help="headless tour on a small synthetic cell")
    demo.add_argument("output", type=Path, nargs="?", default=Path("tomoseg_demo"))
    demo.add_argument("--overwrite", action="store_true")
    demo.set_defaults(func=cmd_demo)
