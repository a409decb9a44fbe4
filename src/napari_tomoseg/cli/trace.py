"""``tomoseg trace``: filaments (microtubules, actin) from a probability map."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import TomosegError
from .arguments import (POSITIVE, PROBABILITY, feature_name, number, tilt_series_option,
                        voxel_checked, voxel_size_option)
from .engine import map_threshold
from .pick import map_feature
from .progress import run_with_bar


def cmd_trace(args: argparse.Namespace) -> int:
    from ..features import FILAMENT_DIAMETERS
    from ..filaments import FilamentSettings
    from ..io.mrc import MRC_SUFFIXES, check_finite_volume
    from ..io.particle_files import check_particle_output
    from ..io.paths import check_outputs, check_writable
    from ..io.probability_header import map_tomogram_name
    from ..jobs.filaments import trace_job
    from ..probability_maps import open_probability
    from ..tomogram import volume_frame

    if not args.points and not args.tubes:
        raise TomosegError("give a points file (.star, .csv, .json), --tubes TUBES.mrc, or both.")
    if args.points:  # before any work; never onto the map
        check_particle_output(args.points, (args.probability,), args.overwrite)
    if args.tubes:
        if Path(args.tubes).suffix.lower() not in MRC_SUFFIXES:
            raise TomosegError(f"{Path(args.tubes).name}: the tubes are a label volume; name "
                               f"it .mrc.")
        check_outputs([Path(args.tubes)], [args.probability],
                      args.overwrite, option="--tubes")
    for out in (args.points, args.tubes):
        if out:
            check_writable(Path(out).parent)
    feature = map_feature(args, default="microtubule")
    diameter = args.diameter or FILAMENT_DIAMETERS.get(feature)
    if diameter is None:
        raise TomosegError(f"give the filament's --diameter (A): tomoseg knows it for "
                           f"{', '.join(FILAMENT_DIAMETERS)}, not for '{feature}'.")
    probability, info = open_probability(args.probability)
    info = voxel_checked(info, args.probability, args)
    check_finite_volume(probability, args.probability)
    threshold = map_threshold(args.threshold, args.probability, feature)
    settings = FilamentSettings(diameter=diameter, threshold=threshold, stretch=args.stretch,
                                contrast=args.contrast, min_length=args.min_length,
                                spacing=args.spacing)
    name = args.tomo_name or map_tomogram_name(args.probability, feature)
    frame = volume_frame(info, name, args.tilt_series_pixel_size)
    filaments = run_with_bar(trace_job(probability, frame, settings, feature, args.points,
                                       args.tubes, args.overwrite), "tracing")
    lengths = filaments.lengths(frame.voxel_size)
    said = ", ".join(f"{length / 10:.0f}" for length in lengths[:10])
    print(f"{len(lengths)} {feature} filaments of tomogram '{name}'"
          + (f", nm long: {said}{' ...' if len(lengths) > 10 else ''}" if lengths else ""))
    for out, what in ((args.points, "points along them"), (args.tubes, "their tubes, numbered")):
        if out:
            print(f"{out}: {what}")
    return 0


def add_parsers(sub) -> None:
    trace = sub.add_parser("trace", help="filaments (centre lines and tubes) from a "
                                         "probability map")
    trace.add_argument("probability", help="probability MRC from tomoseg segment")
    trace.add_argument("points", nargs="?",
                       help=".star (RELION 5, with rlnHelicalTubeID, rlnHelicalTrackLengthAngst "
                            "and tilt/psi priors), .csv or .json (EMAN2 info)")
    trace.add_argument("--tubes", help="label MRC: each filament's tube, numbered as in the "
                                       "points (the map's grid)")
    trace.add_argument("--feature", type=feature_name,
                       help="the feature traced (default: the one the map's header names, "
                            "else microtubule)")
    trace.add_argument("--diameter", type=POSITIVE,
                       help="outer diameter, A (default: microtubule 250, actin 70)")
    trace.add_argument("--threshold", type=PROBABILITY,
                       help="default: the model's (stored in the map's header), else 0.5")
    trace.add_argument("--stretch", type=number(float, 0.5, inclusive=True, high=20.0),
                       default=3.0, help="straight stretch compared, in diameters (default 3; "
                                         "less for curved filaments)")
    trace.add_argument("--contrast", type=number(float, 0.05, inclusive=True, high=2.0),
                       default=0.5, help="an axis where the tube's mean beats its sleeve's by "
                                         "this times the threshold (default 0.5; lower finds "
                                         "fainter filaments and more false ones)")
    trace.add_argument("--min-length", type=POSITIVE,
                       help="drop filaments shorter than this, A (default: one stretch)")
    trace.add_argument("--spacing", type=POSITIVE,
                       help="A between points along a filament (default: the radius)")
    voxel_size_option(trace, "a map whose")
    tilt_series_option(trace)
    trace.add_argument("--tomo-name", help="rlnTomoName (default: the map's file name "
                                           "without the _FEATURE that segment adds)")
    trace.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    trace.set_defaults(func=cmd_trace)
