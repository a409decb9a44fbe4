"""The engine's commands: train, segment, merge, pick. Each runs one job with one bar."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import InvalidSettingsError, TomosegError
from . import arguments
from .arguments import (POSITIVE, POSITIVE_INT, PROBABILITY, copick_options, copick_source,
                        key_values, number, tilt_series_option, voxel_checked, voxel_size_option)
from .progress import run_with_bar
from .train_inputs import training_inputs


def cmd_train(args: argparse.Namespace) -> int:
    from ..io.particle_files import SUFFIXES, VOLUME_SUFFIXES
    from ..io.paths import safe_name
    from ..jobs.train import train_feature
    from ..nn.validation import describe_held_out

    output = args.output or Path(f"{safe_name(args.feature)}.tomoseg.pt")  # never ../../x
    if output.suffix.lower() in VOLUME_SUFFIXES + SUFFIXES:  # a model named like a map or picks
        raise InvalidSettingsError(f"{output}: a model file is not a {output.suffix} file; "
                                   "name it .pt.")
    volume, voxel, boxes, start_from, settings, preprocess = training_inputs(args)
    job = train_feature(volume, voxel, boxes, args.feature, settings, preprocess,
                        start_from=start_from, output=output, overwrite=args.overwrite)
    started = time.time()
    try:
        model = run_with_bar(job, f"training {args.feature}")
    except KeyboardInterrupt:  # the job saved the best weights so far: say where
        if output.exists() and output.stat().st_mtime >= started - 1:
            print(f"{output}: the best model so far was saved (interrupted training; "
                  "--resume continues it)", file=sys.stderr)
        raise
    held = model.info.get("held_out")
    described = describe_held_out(held, model.threshold, digits=3)
    quality = (f"{described}, best step {held['step']}" if described
               else f"final loss {model.history[-1][1]:.4f}")
    print(f"{output}: '{args.feature}' {model.architecture} network, "
          f"{model.info['positives']} positive / {model.info['negatives']} negative boxes, "
          f"{len(model.history)} steps, {quality}")
    return 0


def _segment_inputs(args: argparse.Namespace, files: list[tuple[str, str]] | None = None):
    """(name, volume, info, copick source or None) per tomogram, opened one at a time."""
    from ..io.mrc import open_volume

    if args.copick:
        from ..io.copick_project import open_tomogram, run_names

        if args.tomograms:
            raise TomosegError("give tomogram files or --copick, not both.")
        for run in args.run or run_names(args.copick):
            source = copick_source(args, run)
            yield (run, *open_tomogram(source), source)
        return
    for tomogram, name in files if files is not None else _tomogram_files(args):
        yield (name, *open_volume(tomogram), None)


def _tomogram_files(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(path, output name) of each tomogram file given."""
    from ..batch import unique_names

    if not args.tomograms:
        raise TomosegError("give tomogram files, or --copick CONFIG to read a copick project.")
    tomograms = list(dict.fromkeys(str(Path(t).resolve()) for t in args.tomograms))
    tomograms = _without_maps(tomograms)
    return list(zip(tomograms, unique_names(tomograms)))


def _without_maps(tomograms: list[str]) -> list[str]:
    """The inputs that are not our own probability maps or label volumes (a glob rerun into
    the input folder matches the first run's, which would be segmented as tomograms)."""
    from ..io.probability_header import is_marked_labels, stored_probability

    maps = [t for t in tomograms if stored_probability(t) is not None or is_marked_labels(t)]
    if maps:
        print(f"tomoseg: skipped {len(maps)} probability map(s) or label volume(s) given as "
              f"tomograms ({', '.join(Path(m).name for m in maps[:3])}"
              f"{', ...' if len(maps) > 3 else ''})", file=sys.stderr)
    kept = [t for t in tomograms if t not in maps]
    if not kept:
        raise TomosegError("every input is a probability map or label volume from tomoseg: "
                           "give tomograms.")
    return kept


def _to_copick(args: argparse.Namespace, source, model, target: Path, voxel: float) -> None:
    """The map above the model's (or --copick-threshold's) threshold as a copick segmentation."""
    from ..io.copick_project import write_segmentation
    from ..io.mrc import open_volume
    from ..probability_maps import as_probability

    threshold = model.threshold if args.copick_threshold is None else args.copick_threshold
    mask = as_probability(open_volume(target)[0]) > threshold
    print(write_segmentation(source, mask, model.feature, voxel, overwrite=args.overwrite))


def cmd_segment(args: argparse.Namespace) -> int:
    from ..io.atomic import clean_stale_partials
    from ..io.paths import check_outputs, check_writable
    from ..jobs.segment import SegmentOptions, segment_tomogram
    from ..nn.model_file import load_model

    models = [load_model(path) for path in args.model]
    files = None
    if not args.copick:  # every map against every input, before the first is written
        files = _tomogram_files(args)
        check_outputs([args.output_dir / f"{name}_{m.feature}.mrc" for _, name in files
                       for m in models], [path for path, _ in files], args.overwrite,
                      "--output-dir")
    check_writable(args.output_dir)
    clean_stale_partials(args.output_dir)
    options = SegmentOptions(dtype=args.dtype, device=args.device, batch_slices=args.batch,
                             rescale=not args.no_rescale, overwrite=args.overwrite,
                             precision=args.precision)
    for name, volume, info, source in _segment_inputs(args, files):
        info = voxel_checked(info, name, args)
        targets = [args.output_dir / f"{name}_{model.feature}.mrc" for model in models]
        run_with_bar(segment_tomogram(volume, info.isotropic_voxel_size, info.origin, models,
                                      targets, options, tomogram=name), name, unit="slice")
        for model, target in zip(models, targets):
            print(f"{target}")
            if source is not None:
                _to_copick(args, source, model, target, info.isotropic_voxel_size)
    return 0


def map_threshold(given: float | None, path, feature: str) -> float:
    """The user's threshold, else the one stored with the probability map, else 0.5."""
    from ..io.probability_header import stored_threshold

    if given is not None:
        return float(given)
    stored = stored_threshold(path) if path else None
    if stored is not None:
        print(f"{feature}: threshold {stored:.2f} (chosen by its model on held-out pixels)")
        return stored
    return 0.5


def cmd_merge(args: argparse.Namespace) -> int:
    from ..io.mrc import MRC_SUFFIXES, open_volume
    from ..io.paths import check_outputs, check_writable
    from ..jobs.merge import merge_maps
    from ..merge import MergeSettings, artifact_rules

    maps = key_values(args.prob, "--prob")
    if not maps:
        raise TomosegError("give at least one --prob FEATURE=FILE.")
    given = arguments.thresholds(args.threshold, list(maps))
    artifacts = arguments.artifacts(args.artifact)
    check_outputs([args.output], list(maps.values()), args.overwrite)
    if args.output.suffix.lower() not in MRC_SUFFIXES:  # not an MRC file named x.csv
        raise TomosegError(f"{args.output.name}: the label volume is an MRC file; name it .mrc.")
    check_writable(args.output.parent)
    infos = [open_volume(path)[1] for path in maps.values()]  # bad files first, then thresholds
    thresholds = {f: map_threshold(given.get(f), path, f) for f, path in maps.items()}
    settings = MergeSettings(features=list(maps), thresholds=thresholds,
                             artifacts=artifact_rules(artifacts, list(maps)))
    labels = run_with_bar(merge_maps(maps, settings, args.output, infos[0].voxel_size,
                                     infos[0].origin, overwrite=args.overwrite), "merging")
    counts = ", ".join(f"{f}: {int((labels == settings.label_of(f)).sum()):,}" for f in maps)
    print(f"{args.output}: labels {', '.join(f'{i + 1}={f}' for i, f in enumerate(maps))} "
          f"(voxels {counts})")
    return 0


def _pick_map(args: argparse.Namespace, source):
    """(probability map, its info): the file given, else the feature's copick segmentation."""
    from ..io import copick_project
    from ..io.mrc import check_finite_volume, open_volume

    if not args.output and source is None:
        raise TomosegError("give an output file, or --copick CONFIG to write into a copick project.")
    if args.probability:
        probability, info = open_volume(args.probability)
    elif source is not None:  # the feature's segmentation in the project (e.g. from segment)
        probability, info = copick_project.read_segmentation(source, args.feature)
    else:
        raise TomosegError("give a probability MRC (or --copick to read a segmentation).")
    info = voxel_checked(info, args.probability or args.feature, args)
    check_finite_volume(probability, args.probability)  # naming the file, before any work
    return probability, info


def _pick_settings(args: argparse.Namespace, threshold: float):
    from ..picking import PickSettings

    if args.spacing is not None:  # points along a mask: only the threshold matters
        return PickSettings(diameter=args.diameter, threshold=threshold)
    return PickSettings(diameter=args.diameter, threshold=threshold,
                        min_distance=args.min_distance, edge=args.edge,
                        split_touching=args.split, max_picks=args.max_picks,
                        method=args.method, min_size=args.min_size, max_blob=args.max_blob,
                        **({} if args.min_roundness is None
                           else {"min_roundness": args.min_roundness}))


def _excluded(paths: list[str], grid):
    """The union of the artifact maps above their thresholds, or None (no --exclude)."""
    from ..io.mrc import check_finite_volume, open_volume
    from ..picking import artifact_region

    region = None
    for path in paths:
        artifact, _ = open_volume(path)
        check_finite_volume(artifact, path)
        # shapes only: a --voxel-size given for the picked map may override both headers
        above = artifact_region(artifact, map_threshold(None, path, Path(path).stem),
                                grid.shape, name=str(path))
        region = above if region is None else region | above
    return region


def _pick_feature(args: argparse.Namespace) -> str:
    """--feature, else the one the map's header names, else ribosome; never another feature's
    map under this name (its picks and its model's threshold would pass as this feature's)."""
    from ..io.probability_header import stored_probability

    stored = stored_probability(args.probability) if args.probability else None
    if args.feature is None:
        return stored[0] if stored else "ribosome"
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

    args.feature = _pick_feature(args)
    source = copick_source(args)
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
                                  _excluded(args.exclude, info), args.overwrite), "picking")
    if source is not None:
        written = copick_project.write_picks(source, table, frame, args.feature, args.overwrite)
        print(f"{written}: {len(table)} {args.feature} picks (copick)")
    if args.output:
        print(f"{args.output}: {len(table)} {args.feature} picks of tomogram '{name}'"
              f"{'' if args.tomo_name else ' (--tomo-name to change)'}{dropped_note(table)}")
    return 0


def _train_parser(sub) -> None:
    train = sub.add_parser("train", help="train one feature's network from boxes")
    train.add_argument("tomogram")
    train.add_argument("--boxes", type=Path, required=True, help="box folder or session folder")
    train.add_argument("--feature", required=True, type=arguments.feature_name)
    train.add_argument("--arch", choices=("unet", "eman2"),
                       help="network (default unet; a resumed model keeps its own)")
    train.add_argument("--steps", type=POSITIVE_INT,
                       help="at most this many steps (default 1500); training stops earlier when the held-out "
                            "quadrant of each box stops improving")
    train.add_argument("--no-early-stop", action="store_true",
                       help="train on whole boxes for exactly --steps steps (no held-out pixels, "
                            "threshold 0.5)")
    train.add_argument("--rotations", type=int, choices=(1, 2, 4),
                       help="quarter turns of each slice averaged per prediction (default: 4 for "
                            "unet, 1 for eman2); 1 segments about 4x faster, less accurately")
    train.add_argument("--stem3d", choices=("auto", "on", "off"), default="auto",
                       help="unet: 3D convolutions over +-4 slices before the 2D U-Net (auto: on "
                            "for a feature named membrane; better membranes, ~4x the training "
                            "time, ~3x the segmentation time)")
    train.add_argument("--batch-size", type=POSITIVE_INT)
    train.add_argument("--learning-rate", type=number(float, high=1.0))
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    train.add_argument("--binning", type=POSITIVE_INT,
                       help="bin the tomogram by this factor for the network (default: towards "
                            "20 A per voxel, e.g. 2 for a 10 A tomogram)")
    voxel_size_option(train, "a tomogram whose")
    train.add_argument("--invert", action="store_true", help="invert contrast (protein white)")
    train.add_argument("--resume", type=Path, help="continue training this model")
    train.add_argument("--output", "-o", type=Path)
    train.add_argument("--overwrite", action="store_true")
    train.set_defaults(func=cmd_train)


def _segment_parser(sub) -> None:
    segment = sub.add_parser("segment", help="apply trained networks to whole tomograms")
    segment.add_argument("tomograms", nargs="*", help="MRC files (or --copick)")
    segment.add_argument("--model", "-m", action="append", required=True,
                         help="model file (repeat for several features)")
    segment.add_argument("--output-dir", "-o", type=Path, default=Path("."))
    segment.add_argument("--dtype", choices=("float16", "float32", "uint8"), default="float16",
                         help="map values: float16 (default), float32, or uint8 0-255 (MRC has "
                              "no 8-bit unsigned mode: stored as uint16, twice the size)")
    segment.add_argument("--batch", type=POSITIVE_INT, default=4, help="slices per batch")
    segment.add_argument("--device", default="auto")
    arguments.precision_option(segment)
    segment.add_argument("--no-rescale", action="store_true",
                         help="refuse tomograms of another voxel size instead of rescaling")
    segment.add_argument("--overwrite", action="store_true")
    copick_options(segment, several_runs=True)
    voxel_size_option(segment, "tomograms whose")
    segment.add_argument("--copick-threshold", type=PROBABILITY,
                         help="probability above which a voxel joins the copick segmentation "
                              "(default: the model's calibrated threshold)")
    segment.set_defaults(func=cmd_segment)


def _merge_parser(sub) -> None:
    merge = sub.add_parser("merge", help="merge per-feature probabilities into one label volume")
    merge.add_argument("--prob", action="append", metavar="FEATURE=FILE")
    merge.add_argument("--threshold", action="append", metavar="FEATURE=VALUE")
    merge.add_argument("--artifact", action="append", metavar="ARTIFACT[=FEATURE[,FEATURE]]",
                       help="remove the artifact's voxels from these features (default: from "
                            "every other feature)")
    merge.add_argument("--output", "-o", type=Path, required=True)
    merge.add_argument("--overwrite", action="store_true")
    merge.set_defaults(func=cmd_merge)


def _pick_parser(sub) -> None:
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
    pick.add_argument("--overwrite", action="store_true",
                      help="replace an existing output file, or copick picks of the same "
                           "user and session")
    pick.set_defaults(func=cmd_pick)


def add_parsers(sub) -> None:
    _train_parser(sub)
    _segment_parser(sub)
    _merge_parser(sub)
    _pick_parser(sub)
