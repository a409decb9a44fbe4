"""Picks scored against a reference by local template matching: rescore.

Picks of a network trained on a few boxes include look-alikes of the particle's
size; their 3D shape against a reference (an average, or a map from EMDB at the
tomogram's voxel size) tells most apart (docs/engine.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .arguments import POSITIVE, number, tilt_series_option
from .progress import run_with_bar


def rescore_cut(text: str) -> str | float:
    if text.lower() in ("auto", "none"):
        return text.lower()
    try:
        return number(float, -1.0, inclusive=True, high=1.0)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected auto, none or a score from -1 to 1, not "
                                         f"'{text}'") from None


def cmd_rescore(args: argparse.Namespace) -> int:
    """Score picks against a reference; print the suggested cut; write the scored picks."""
    from ..averaging.files import open_reference
    from ..averaging.template_scores import TemplateSettings
    from ..io.particle_files import check_particle_output
    from ..jobs.rescore import rescore_job
    from .averaging import open_particles_on_tomogram

    check_particle_output(args.output, (args.tomogram, args.particles, args.reference),
                          args.overwrite)
    settings = TemplateSettings(angular_step=args.angular_step, max_shift=args.max_shift,
                                lowpass=args.lowpass, mask_radius=args.mask_radius,
                                tilt_min=args.tilt_range[0], tilt_max=args.tilt_range[1],
                                invert=not args.no_invert)
    volume, frame, table = open_particles_on_tomogram(args, output_folder=False)
    reference = open_reference(args.reference, frame.voxel_size)
    cut = None if args.cut == "none" else args.cut
    scored, suggestion = run_with_bar(
        rescore_job(volume, frame, table, reference, settings, args.output, cut,
                    args.overwrite), "matching", "chunk")
    print(f"{len(table)} picks scored against {Path(args.reference).name}; the suggested cut "
          f"(median - 2 MADs) is {suggestion:.3f}"
          + (f"; {len(scored)} kept at or above {suggestion if cut == 'auto' else cut:.3f}"
             if cut is not None else ""))
    print(f"{args.output}: {len(scored)} picks with reference_score "
          "(rlnTomosegReferenceScore in STAR)")
    return 0


def add_parsers(sub) -> None:
    p = sub.add_parser("rescore", help="score picks against a reference (template matching)")
    tilt_series_option(p)
    p.add_argument("tomogram", help="tomogram MRC the particles were picked on")
    p.add_argument("particles", help="particles: .star (RELION 5), .csv, ...")
    p.add_argument("--reference", required=True,
                   help="reference MRC at the tomogram's voxel size, protein bright (an "
                        "average, or a map from EMDB resampled to it), even cubic box")
    p.add_argument("--output", "-o", type=Path, required=True,
                   help="particles with a reference_score column (.star, .csv, ...)")
    p.add_argument("--angular-step", type=number(float, 0.5, inclusive=True, high=180.0),
                   default=20.0, help="degrees between orientations (20: ~1,900)")
    p.add_argument("--max-shift", type=number(int, 0, inclusive=True, high=8), default=2,
                   help="voxels a particle may sit off its pick, each way")
    p.add_argument("--lowpass", type=POSITIVE, default=30.0,
                   help="A: Gaussian low-pass of data and reference")
    p.add_argument("--mask-radius", type=number(float, 3.0, inclusive=True),
                   help="voxels (default the largest the box holds: box / 2 - 1)")
    p.add_argument("--tilt-range", type=float, nargs=2, default=(-60.0, 60.0),
                   metavar=("MIN", "MAX"), help="tilt range about y (missing wedge)")
    p.add_argument("--no-invert", action="store_true",
                   help="protein is already bright in the tomogram")
    p.add_argument("--cut", type=rescore_cut, default="none", metavar="auto|none|SCORE",
                   help="'none' keeps every pick (default), 'auto' drops those below the "
                        "median - 2 MADs, a number drops those below it")
    p.add_argument("--tomo-name", help="keep only this rlnTomoName from a STAR file")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=cmd_rescore)
