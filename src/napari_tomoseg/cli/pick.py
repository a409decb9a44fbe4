"""``tomoseg pick``: particles from a probability map (or a copick segmentation)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import InvalidSettingsError, TomosegError
from . import arguments
from .arguments import (POSITIVE, POSITIVE_INT, PROBABILITY, copick_options, copick_source,
                        number, tilt_series_option, voxel_checked, voxel_size_option)
from .engine import map_threshold
from .progress import run_with_bar


def _pick_map(args: argparse.Namespace, source):
    """(probability map, its info): the file given, else the feature's copick segmentation."""
    from ..io import copick_project
    from ..io.mrc import check_finite_volume
    from ..probability_maps import open_probability

    if not args.output and source is None:
        raise TomosegError("give an output file, or --copick CONFIG to write into a copick project.")
    if args.probability:
        probability, info = open_probability(args.probability)
    elif source is not None:  # the feature's segmentation in the project (e.g. from segment)
        probability, info = copick_project.read_segmentation(
            source, args.feature, args.from_user_id, args.from_session_id)
    else:
        raise TomosegError("give a probability MRC (or --copick to read a segmentation).")
    info = voxel_checked(info, args.probability or args.feature, args)
    check_finite_volume(probability, args.probability)  # naming the file, before any work
    return probability, info


def _pick_settings(args: argparse.Namespace, threshold: float):
    from ..picking import PickSettings

    if args.spacing is not None:  # points along a mask: only the threshold matters
        _check_spacing_options(args)
        return PickSettings(diameter=args.diameter, threshold=threshold)
    return PickSettings(diameter=args.diameter, threshold=threshold,
                        min_distance=args.min_distance, z_stretch=args.z_stretch,
                        edge=args.edge,
                        split_touching=args.split, max_picks=args.max_picks,
                        method=args.method, min_size=args.min_size, max_blob=args.max_blob,
                        **({} if args.min_roundness is None
                           else {"min_roundness": args.min_roundness}),
                        **({} if args.relative_roundness is None
                           else {"relative_roundness": args.relative_roundness}))


def _check_spacing_options(args: argparse.Namespace) -> None:
    """--spacing lays points along the mask: particle options given with it were ignored
    without a word (--max-picks 3 still gave every point)."""
    named = ("min_distance", "edge", "min_size", "max_blob", "min_roundness",
             "relative_roundness", "max_picks")
    given = [f"--{n.replace('_', '-')}" for n in named if getattr(args, n) is not None]
    given += ["--split"] * bool(args.split) + ["--method"] * (args.method != "peaks")
    given += ["--z-stretch"] * (args.z_stretch != 2.0)
    if given:
        raise InvalidSettingsError(f"--spacing lays points along the mask; {', '.join(given)} "
                                   "are for particles: leave them out, or pick particles "
                                   "without --spacing.")


def _same_place(artifact, grid, path: str, typed: bool) -> None:
    """An artifact map from another place (origin) or of other voxels, with the picked
    map's shape, excluded the wrong voxels without a word."""
    voxel = np.asarray(grid.voxel_size, float)
    if not typed and not np.allclose(artifact.voxel_size, voxel, rtol=1e-3):
        raise InvalidSettingsError(
            f"{Path(path).name} has voxels of {artifact.isotropic_voxel_size:g} A, the picked "
            f"map {grid.isotropic_voxel_size:g} A: exclude a map of the same tomogram.")
    if not np.allclose(artifact.origin, grid.origin, atol=1e-3 * float(voxel.max())):
        raise InvalidSettingsError(
            f"{Path(path).name} starts at another origin than the picked map "
            f"({' '.join(f'{o:g}' for o in artifact.origin[::-1])} against "
            f"{' '.join(f'{o:g}' for o in grid.origin[::-1])} A, x y z): exclude a map of "
            "the same tomogram.")


def _excluded(paths: list[str], grid, typed: bool = False):
    """The union of the artifact maps above their thresholds, or None (no --exclude)."""
    from ..io.mrc import check_finite_volume
    from ..picking import artifact_region
    from ..probability_maps import open_probability

    region = None
    for path in paths:
        artifact, info = open_probability(path)
        check_finite_volume(artifact, path)
        # voxel sizes compared unless --voxel-size was given (it overrides both headers)
        _same_place(info, grid, path, typed)
        above = artifact_region(artifact, map_threshold(None, path, Path(path).stem),
                                grid.shape, name=str(path))
        region = above if region is None else region | above
    return region


def map_feature(args: argparse.Namespace, default: str = "ribosome") -> str:
    """--feature, else the one the map's header names, else ``default``; never another
    feature's map under this name (its picks and its model's threshold would pass as this
    feature's)."""
    from ..io.probability_header import stored_probability

    stored = stored_probability(args.probability) if args.probability else None
    if args.feature is None:
        return stored[0] if stored else default
    if stored and stored[0] != args.feature[:30]:
        raise InvalidSettingsError(f"{Path(args.probability).name} is the probability map of "
                                   f"'{stored[0]}' (its header), not '{args.feature}': give "
                                   f"that feature's map, or leave --feature out.")
    return args.feature


def cmd_pick(args: argparse.Namespace) -> int:
    from ..io import copick_project
    from ..io.particle_files import check_particle_output
    from ..io.paths import check_writable
    from ..io.probability_header import map_tomogram_name
    from ..jobs.pick import pick_job
    from ..picking import dropped_note
    from ..tomogram import volume_frame

    args.feature = map_feature(args)
    source = copick_source(args)
    if source is not None:  # the object and ids, before any work
        copick_project.check_result_objects(source, [args.feature])
    if args.output:  # before any work; never onto the map, an artifact map or a volume
        check_particle_output(args.output, (args.probability, *args.exclude), args.overwrite)
        check_writable(Path(args.output).parent)
    probability, info = _pick_map(args, source)
    threshold = map_threshold(args.threshold, args.probability, args.feature)
    if source is not None:
        copick_project.check_extent(source, info.shape, info.isotropic_voxel_size)
    name = args.tomo_name or (source.run if source else
                              map_tomogram_name(args.probability, args.feature))
    frame = volume_frame(info, name, args.tilt_series_pixel_size)
    table = run_with_bar(pick_job(probability, frame, _pick_settings(args, threshold),
                                  args.feature, args.output or None, args.spacing,
                                  _excluded(args.exclude, info, args.voxel_size is not None),
                                  args.overwrite), "picking")
    if source is not None:
        written = copick_project.write_picks(source, table, frame, args.feature, args.overwrite)
        print(f"{written}: {len(table)} {args.feature} picks (copick)")
    if args.output:
        print(f"{args.output}: {len(table)} {args.feature} picks of tomogram '{name}'"
              f"{'' if args.tomo_name else ' (--tomo-name to change)'}{dropped_note(table)}")
    return 0


def add_parsers(sub) -> None:
    pick = sub.add_parser("pick", help="particle coordinates from a probability map")
    pick.add_argument("probability", nargs="?",
                      help="probability MRC from tomoseg segment (with --copick: default the "
                           "feature's copick segmentation)")
    pick.add_argument("output", nargs="?",
                      help=".star (RELION 5), .csv, or .json (EMAN2 info); optional with --copick")
    tilt_series_option(pick)
    pick.add_argument("--feature", type=arguments.feature_name, help="the feature picked (default: the one the map's header "
                                        "names, else ribosome)")
    pick.add_argument("--diameter", type=POSITIVE, default=250.0, help="particle diameter (A)")
    pick.add_argument("--threshold", type=PROBABILITY,
                      help="default: the threshold the model chose on held-out pixels "
                           "(stored in the probability map's header), else 0.5")
    voxel_size_option(pick, "a map whose")
    pick.add_argument("--min-distance", type=POSITIVE, help="A between picks (default: radius)")
    pick.add_argument("--z-stretch", type=number(float, 1.0, inclusive=True, high=5.0), default=2.0,
                      help="distances along z count divided by this when picks are kept apart: "
                           "the missing wedge stretches particles along z, and one particle "
                           "gave two picks (default 2; 1: isotropic)")
    pick.add_argument("--edge", type=number(float, 0, inclusive=True),
                      help="drop picks closer than this to the border, A (default: keep all)")
    pick.add_argument("--method", choices=("peaks", "components"), default="peaks",
                      help="peaks: local maxima of the smoothed map (default; keeps touching "
                           "particles apart); components: one pick per blob, as EMAN2")
    pick.add_argument("--min-size", type=POSITIVE_INT,
                      help="voxels above threshold a particle needs (default: 20%% of a sphere "
                           "of --diameter)")
    pick.add_argument("--max-blob", type=POSITIVE, metavar="N",
                      help="drop picks in a blob above threshold larger than N particle "
                           "volumes, e.g. 3 for a carbon edge (default: keep; polysomes and "
                           "touching clusters form large blobs too)")
    pick.add_argument("--min-roundness", type=number(float, 0, inclusive=True, high=1.0),
                      help="peaks only: drop peaks flatter or longer than this, such as a "
                           "carbon edge (smallest over largest curvature: 1 a ball, 0 a sheet; "
                           "a 2:1 particle 0.1-0.35); default 0.15, 0 keeps all")
    pick.add_argument("--relative-roundness", type=number(float, 0, inclusive=True, high=1.0),
                      help="peaks only: also drop peaks less round than this times the picks' "
                           "median roundness (at most 0.25); default 0.5, 0 (or min 0) off")
    pick.add_argument("--split", action="store_true",
                      help="components only: split touching particles (watershed)")
    pick.add_argument("--max-picks", type=POSITIVE_INT)
    pick.add_argument("--spacing", type=POSITIVE,
                      help="sample points every SPACING A along filaments/membranes instead")
    pick.add_argument("--exclude", action="append", default=[], metavar="MAP",
                      help="an artifact's probability MRC (e.g. carbon); no pick where it is "
                           "above its stored threshold (else 0.5; --threshold is for the "
                           "picked map only); same grid as the picked map; repeatable")
    pick.add_argument("--tomo-name", help="rlnTomoName (default: the map's file name "
                                          "without the _FEATURE that segment adds)")
    copick_options(pick, several_runs=False)
    pick.add_argument("--from-user-id", metavar="ID",
                      help="copick user id of the segmentation to pick from, e.g. "
                           "membrain-seg (default: --user-id); the picks go under --user-id")
    pick.add_argument("--from-session-id", metavar="ID",
                      help="copick session id of that segmentation (default: --session-id)")
    pick.add_argument("--overwrite", action="store_true",
                      help="replace an existing output file, or copick picks of the same "
                           "user and session")
    pick.set_defaults(func=cmd_pick)
