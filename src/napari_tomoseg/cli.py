"""``tomoseg``: every action of the plugin from a shell, for batches and clusters.

Errors a user can cause end as one line on stderr and exit status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import __version__
from .errors import TomosegError


def _progress_bar(description: str):
    from tqdm import tqdm

    bar = tqdm(total=1, desc=description, unit="step", leave=False, file=sys.stderr)

    def update(step: int, total: int, message: str) -> None:
        bar.total = total
        bar.set_description(message)
        bar.n = step
        bar.refresh()

    return bar, update


def cmd_synth(args: argparse.Namespace) -> int:
    from .synthetic import CellSpec, ImagingSpec, simulate, write_synthetic

    spec = CellSpec(shape=tuple(args.shape), voxel_size=args.voxel_size,
                    n_vesicles=args.vesicles, n_microtubules=args.microtubules,
                    n_actin=args.actin, carbon_edge=not args.no_carbon)
    imaging = ImagingSpec(tilt_min=args.tilt_range[0], tilt_max=args.tilt_range[1],
                          tilt_step=args.tilt_range[2], snr=args.snr, defocus_um=args.defocus)
    target = args.output / f"{args.name}.mrc"
    if target.exists() and not args.overwrite:  # say so before minutes of simulation
        raise FileExistsError(f"{target} exists; use --overwrite or another --name.")
    start = time.perf_counter()
    bar, update = _progress_bar("synthetic cell")
    try:
        result = simulate(spec, imaging, seed=args.seed, progress=update)
    finally:
        bar.close()
    files = write_synthetic(result, args.output, name=args.name, origin=tuple(args.origin),
                            overwrite=args.overwrite, compact=args.compact)
    print(f"synthetic cell {spec.shape} at {spec.voxel_size} A/voxel, seed {args.seed}, "
          f"{len(result.cell.particles)} ribosomes, {time.perf_counter() - start:.1f} s")
    for key, path in files.items():
        print(f"  {key:12s} {path}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from .io.mrc import open_volume

    for path in args.files:
        data, info = open_volume(path, check_finite=False)
        z, y, x = info.shape
        note = "" if info.voxel_size_in_header else " (not in header: assumed)"
        print(f"{path}: {x} x {y} x {z} voxels (x y z), {info.dtype}, voxel "
              f"{info.voxel_size[2]:g} x {info.voxel_size[1]:g} x {info.voxel_size[0]:g} A{note}, "
              f"origin {info.origin[2]:g} {info.origin[1]:g} {info.origin[0]:g} A")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    from .io.mrc import replace_nonfinite

    replaced = replace_nonfinite(args.input, args.output)
    print(f"{args.output}: replaced {replaced:,} NaN/Inf voxels with the mean")
    return 0


def cmd_points(args: argparse.Namespace) -> int:
    """Convert particle files between STAR and CSV, placing them on a tomogram."""
    from .io.mrc import read_header
    from .io.particles import TomogramFrame, read_csv, read_star, write_csv, write_star
    from .layer_data import tomogram_name

    _, info = read_header(args.tomogram)
    frame = TomogramFrame(name=args.tomo_name or tomogram_name(args.tomogram), shape=info.shape,
                          voxel_size=info.isotropic_voxel_size, origin=info.origin)
    source = Path(args.input)
    table = read_star(source, frame) if source.suffix.lower() == ".star" else read_csv(source)
    table = table.drop(columns=["tomo_name"], errors="ignore")
    if Path(args.output).suffix.lower() == ".star":
        write_star(args.output, table, frame)
    else:
        write_csv(args.output, table, frame)
    print(f"{args.output}: {len(table)} particles")
    return 0


def _display_available() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def cmd_launch(args: argparse.Namespace) -> int:
    if not _display_available() and not args.force:
        print("tomoseg: no display found (DISPLAY is not set), so napari cannot open a window.\n"
              "Running the headless demo instead; on a desktop, or with `xvfb-run`, "
              "`tomoseg launch` opens napari.", file=sys.stderr)
        return cmd_demo(argparse.Namespace(output=args.demo_output, overwrite=True))
    from ._napari.launch import launch

    launch(files=args.files, sample=args.sample, run=not args.no_run)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Headless tour: make a small synthetic cell, read it back, report what is in it."""
    import numpy as np

    from .io.mrc import open_volume
    from .io.particles import read_star
    from .synthetic import FEATURES, CellSpec, simulate, write_synthetic

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tomoseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"napari-tomoseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="make a synthetic cellular tomogram with ground truth")
    synth.add_argument("output", type=Path, help="folder for the files")
    synth.add_argument("--name", default="synthetic")
    synth.add_argument("--shape", type=int, nargs=3, default=(128, 512, 512), metavar=("Z", "Y", "X"))
    synth.add_argument("--voxel-size", type=float, default=10.0, help="Angstrom (default 10)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--snr", type=float, default=0.5, help="per-tilt signal-to-noise ratio")
    synth.add_argument("--tilt-range", type=float, nargs=3, default=(-60.0, 60.0, 3.0),
                       metavar=("MIN", "MAX", "STEP"))
    synth.add_argument("--defocus", type=float, default=0.0, help="micrometres; 0 = no CTF")
    synth.add_argument("--origin", type=float, nargs=3, default=(0.0, 0.0, 0.0),
                       metavar=("Z", "Y", "X"), help="header origin in Angstrom")
    synth.add_argument("--vesicles", type=int, default=5)
    synth.add_argument("--microtubules", type=int, default=3)
    synth.add_argument("--actin", type=int, default=8)
    synth.add_argument("--no-carbon", action="store_true")
    synth.add_argument("--compact", action="store_true", help="int8 tomogram, gzipped labels")
    synth.add_argument("--overwrite", action="store_true")
    synth.set_defaults(func=cmd_synth)

    info = sub.add_parser("info", help="print the geometry of MRC files")
    info.add_argument("files", nargs="+")
    info.set_defaults(func=cmd_info)

    clean = sub.add_parser("clean", help="copy an MRC file with NaN/Inf voxels replaced")
    clean.add_argument("input")
    clean.add_argument("output")
    clean.set_defaults(func=cmd_clean)

    points = sub.add_parser("points", help="convert particles between STAR and CSV")
    points.add_argument("input")
    points.add_argument("output")
    points.add_argument("--tomogram", required=True, help="the MRC the particles belong to")
    points.add_argument("--tomo-name", help="rlnTomoName (default: the tomogram's file name)")
    points.set_defaults(func=cmd_points)

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (TomosegError, FileExistsError, FileNotFoundError) as exc:
        print(f"tomoseg: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tomoseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
