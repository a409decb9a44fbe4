"""Subtomogram averaging and classification of picked particles: average, classify."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from .arguments import POSITIVE, POSITIVE_INT, number, tilt_series_option
from .progress import run_with_bar


def _average_settings(args: argparse.Namespace):
    from ..averaging import AverageSettings

    return AverageSettings(box=args.box, iterations=args.iterations, symmetry=args.symmetry,
                           angular_step=args.angular_step, final_step=args.final_step,
                           max_shift=args.max_shift, tilt_min=args.tilt_range[0],
                           tilt_max=args.tilt_range[1], mask_radius=args.mask_radius,
                           start_resolution=args.start_resolution, invert=not args.no_invert,
                           seed=args.seed, device=args.device, min_distance=args.min_distance,
                           **({"initial_step": args.start_step} if "start_step" in args else {}))


def _inputs(args: argparse.Namespace) -> list:
    """Files this run reads: never overwritten, whatever ``--overwrite`` says."""
    return [args.tomogram, args.particles, getattr(args, "reference", None)]


def open_particles_on_tomogram(args: argparse.Namespace, output_folder: bool = True):
    """(volume, frame, particles) of ``args.tomogram`` and ``args.particles``, after checking
    the header's voxel size and, for a folder of results, that it can be written."""
    from ..averaging.pipeline import open_tomogram_and_particles
    from ..io.mrc import read_header, require_voxel_size
    from ..io.paths import check_writable

    require_voxel_size(read_header(args.tomogram)[1], args.tomogram,
                       hint="set it in the header (e.g. IMOD alterheader -del)",
                       cube_hint="set one size in the header (e.g. IMOD alterheader -del)")
    if output_folder:
        check_writable(args.output)
    return open_tomogram_and_particles(args.tomogram, args.particles, args.tomo_name,
                                       args.tilt_series_pixel_size)


def _print_written(written: dict) -> None:
    for key, path in written.items():
        print(f"  {key:10s} {path}")


def cmd_average(args: argparse.Namespace) -> int:
    """Gold-standard subtomogram averaging of picked particles."""
    from ..averaging.files import open_reference
    from ..jobs.average import average_job

    settings = _average_settings(args)
    volume, frame, table = open_particles_on_tomogram(args)
    reference = None
    if args.reference:
        reference = open_reference(args.reference, frame.voxel_size)
    start = time.perf_counter()
    result, sub, written = run_with_bar(
        average_job(volume, frame, table, settings, args.output, reference, args.edge, args.name,
                    args.overwrite, _inputs(args)),
        "averaging")
    nyquist = 2 * frame.voxel_size
    print(f"{len(sub.data)} particles averaged {_dropped(sub)}, "
          f"resolution {result.resolution:.1f} A at FSC 0.143 (Nyquist {nyquist:.1f} A), "
          f"{time.perf_counter() - start:.1f} s")
    if result.note:
        print(("" if result.supported else "WARNING: resolution ") + result.note)
    _print_written(written)
    return 0


def _dropped(sub) -> str:
    """Why particles of the input are missing from the result: none may go unsaid."""
    return f"({sub.skipped} too close to the edge, {sub.duplicates} duplicates dropped)"


def cmd_classify(args: argparse.Namespace) -> int:
    """Split aligned particles into classes."""
    from ..averaging import ClassifySettings
    from ..jobs.average import classify_job

    averaging = _average_settings(args)
    settings = ClassifySettings(classes=args.classes, iterations=args.iterations,
                                angular_range=args.angular_range, angular_step=args.local_step,
                                resolution=args.resolution, seed=args.seed)
    volume, frame, table = open_particles_on_tomogram(args)
    result, sub, written = run_with_bar(
        classify_job(volume, frame, table, averaging, settings, args.output, args.edge, args.name,
                     args.overwrite, _inputs(args)),
        "classifying")
    counts = np.bincount(result.classes, minlength=settings.classes + 1)[1:]
    print(f"{len(sub.data)} particles {_dropped(sub)} in {settings.classes} classes: "
          f"{counts.tolist()}")
    _print_written(written)
    return 0


def _averaging_options(p: argparse.ArgumentParser, iterations: int) -> None:
    tilt_series_option(p)
    p.add_argument("tomogram", help="tomogram MRC the particles were picked on")
    p.add_argument("particles", help="particles: .star (RELION 5) or .csv")
    p.add_argument("--output", "-o", type=Path, required=True, help="folder for the results")
    p.add_argument("--box", type=number(int, 12, inclusive=True), default=32,
                   help="box size in voxels (even, 12-512)")
    p.add_argument("--iterations", type=POSITIVE_INT, default=iterations)
    p.add_argument("--symmetry", default="C1", help="point group: C1, Cn or Dn")
    p.add_argument("--angular-step", type=POSITIVE, default=20.0,
                   help="global search step of the first iteration (degrees)")
    p.add_argument("--final-step", type=POSITIVE, default=2.0, help="finest local step (degrees)")
    p.add_argument("--max-shift", type=number(float, 0, inclusive=True), help="voxels from the pick (default box/6)")
    p.add_argument("--tilt-range", type=float, nargs=2, default=(-60.0, 60.0),
                   metavar=("MIN", "MAX"), help="tilt range about y (missing wedge)")
    p.add_argument("--mask-radius", type=POSITIVE, help="voxels (default 0.42 box)")
    p.add_argument("--start-resolution", type=POSITIVE,
                   help="A low-pass of the starting model (default max(60, 5 voxels))")
    p.add_argument("--no-invert", action="store_true",
                   help="protein is already bright in the tomogram")
    p.add_argument("--edge", choices=("skip", "pad"), default="skip",
                   help="particles whose box leaves the tomogram")
    p.add_argument("--tomo-name", help="keep only this rlnTomoName from a STAR file")
    p.add_argument("--min-distance", type=number(float, 0, inclusive=True),
                   help="voxels: closer picks are repeats of one particle, dropped (default 2; 0 keeps all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true",
                   help="replace earlier results of the same --name (inputs are never replaced)")


def add_parsers(sub) -> None:
    average = sub.add_parser("average", help="subtomogram averaging of picked particles")
    _averaging_options(average, 5)
    average.add_argument("--reference", help="starting reference MRC (default: from the data)")
    average.add_argument("--start-step", type=number(float, 0.5, inclusive=True, high=90.0),
                         default=25.0, help="global search step of the reference-free start "
                         "(degrees)")
    average.add_argument("--name", default="average", help="prefix of the output files")
    average.set_defaults(func=cmd_average)

    classify = sub.add_parser("classify", help="classify aligned particles (from tomoseg average)")
    _averaging_options(classify, 6)
    classify.add_argument("--classes", type=POSITIVE_INT, default=2)
    classify.add_argument("--angular-range", type=POSITIVE, default=10.0,
                          help="local search about each particle's orientation (degrees)")
    classify.add_argument("--local-step", type=POSITIVE, default=5.0)
    classify.add_argument("--resolution", type=POSITIVE, help="A low-pass of the class averages")
    classify.add_argument("--name", default="class", help="prefix of the output files")
    classify.set_defaults(func=cmd_classify)
