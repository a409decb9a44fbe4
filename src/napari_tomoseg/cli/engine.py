"""The engine's commands: train, segment, merge (pick: ``cli.pick``). Each runs one job with one bar."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import InvalidSettingsError, TomosegError
from . import arguments
from .arguments import (POSITIVE_INT, PROBABILITY, copick_options, copick_source, key_values,
                        number, voxel_checked, voxel_size_option)
from .progress import run_with_bar
from .train_inputs import training_inputs


def cmd_train(args: argparse.Namespace) -> int:
    from ..io.particle_files import SUFFIXES, VOLUME_SUFFIXES
    from ..io.paths import safe_name
    from ..feature_files import stopped_model_file
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
        stopped = stopped_model_file(output)
        if stopped.exists() and stopped.stat().st_mtime >= started - 1:
            print(f"{output}: unchanged; the training was interrupted before its first "
                  f"held-out check, so its model was saved as {stopped} instead",
                  file=sys.stderr)
        elif output.exists() and output.stat().st_mtime >= started - 1:
            print(f"{output}: the best model so far was saved (interrupted training; "
                  "--resume continues it)", file=sys.stderr)
        raise
    held = model.info.get("held_out")
    described = describe_held_out(held, model.threshold, digits=3)
    best = f", best step {held['step']}" if held and held.get("step") is not None else ""
    quality = (f"{described}{best}" if described
               else f"final loss {model.history[-1][1]:.4f}")
    networks = model.parameters.get("members", 1)
    kind = "network" if networks == 1 else f"ensemble of {networks} networks averaged"
    print(f"{output}: '{args.feature}' {model.architecture} {kind}, "
          f"{model.info['positives']} positive / {model.info['negatives']} negative boxes, "
          f"{len(model.history)} steps, {quality}")
    return 0


def _segment_inputs(args: argparse.Namespace, files: list[tuple[str, str]] | None = None,
                    skipped: list[str] | None = None):
    """(name, volume, info, copick source or None) per tomogram, opened one at a time.

    A copick run without the tomogram asked for is said and skipped (into ``skipped``):
    it stopped the whole project at the first such run.
    """
    from ..io.mrc import open_volume

    if args.copick:
        from ..io.copick_project import open_tomogram, run_names

        if args.tomograms:
            raise TomosegError("give tomogram files or --copick, not both.")
        for run in args.run or run_names(args.copick):
            source = copick_source(args, run)
            try:
                opened = open_tomogram(source)
            except TomosegError as exc:
                print(f"tomoseg: skipped run '{run}': {exc} (--run chooses runs)",
                      file=sys.stderr)
                (skipped if skipped is not None else []).append(run)
                continue
            yield (run, *opened, source)
        return
    for tomogram, name in files if files is not None else _tomogram_files(args):
        yield (name, *open_volume(tomogram), None)


def _tomogram_files(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(path, output name) of each tomogram file given."""
    from ..batch_inputs import unique_names

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
    from ..probability_maps import as_probability, open_probability

    threshold = model.threshold if args.copick_threshold is None else args.copick_threshold
    # by its header: a uint8 map of an absent feature holds 0s and 1s, not a 0/1 mask
    mask = as_probability(open_probability(target)[0]) > threshold
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
    if args.copick:  # objects, ids and the voxel size before any tomogram is segmented
        from ..io.copick_project import check_result_objects

        if getattr(args, "voxel_size", None) is not None:
            raise InvalidSettingsError("--voxel-size does not go with --copick: the run's "
                                       "voxel spacing (--voxel-spacing) is the voxel size.")
        check_result_objects(copick_source(args), [m.feature for m in models])
    skipped: list[str] = []
    for name, volume, info, source in _segment_inputs(args, files, skipped):
        info = voxel_checked(info, name, args)
        targets = [args.output_dir / f"{name}_{model.feature}.mrc" for model in models]
        run_with_bar(segment_tomogram(volume, info.isotropic_voxel_size, info.origin, models,
                                      targets, options, tomogram=name), name, unit="slice")
        for model, target in zip(models, targets):
            print(f"{target}")
            if source is not None:
                _to_copick(args, source, model, target, info.isotropic_voxel_size)
    return 1 if skipped else 0


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
    from ..io.mrc import MRC_SUFFIXES
    from ..io.paths import check_outputs, check_writable
    from ..jobs.merge import map_infos, merge_maps
    from ..merge import MergeSettings, artifact_rules

    maps = key_values(args.prob, "--prob")
    if not maps:
        raise TomosegError("give at least one --prob FEATURE=FILE.")
    given = arguments.thresholds(args.threshold, list(maps))
    min_sizes = arguments.min_sizes(args.min_size, list(maps))
    artifacts = arguments.artifacts(args.artifact)
    check_outputs([args.output], list(maps.values()), args.overwrite)
    if args.output.suffix.lower() not in MRC_SUFFIXES:  # not an MRC file named x.csv
        raise TomosegError(f"{args.output.name}: the label volume is an MRC file; name it .mrc.")
    check_writable(args.output.parent)
    # bad files and voxel sizes first (none in a header was stamped 1 A), then thresholds
    infos = map_infos(maps, args.voxel_size)
    thresholds = {f: map_threshold(given.get(f), path, f) for f, path in maps.items()}
    settings = MergeSettings(features=list(maps), thresholds=thresholds,
                             artifacts=artifact_rules(artifacts, list(maps)), min_sizes=min_sizes)
    first = next(iter(infos.values()))
    labels = run_with_bar(merge_maps(maps, settings, args.output, first.voxel_size, first.origin,
                                     overwrite=args.overwrite, infos=infos), "merging")
    counts = ", ".join(f"{f}: {int((labels == settings.label_of(f)).sum()):,}" for f in maps)
    print(f"{args.output}: labels {', '.join(f'{i + 1}={f}' for i, f in enumerate(maps))} "
          f"(voxels {counts})")
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
    train.add_argument("--orientations", choices=("any", "wedge", "rewedge"),
                       help="in-plane orientations trained on and averaged (default: rewedge "
                            "for a unet of microtubules, else any). "
                            "wedge keeps the tilt axis along y (flips, 180 degrees), so the "
                            "missing wedge looks as the tomogram holds it; rewedge turns slabs "
                            "every way and imposes the missing wedge again: microtubules "
                            "crossing the tilt axis in another tomogram were found 3-10x "
                            "better (docs/engine.md)")
    train.add_argument("--members", type=POSITIVE_INT, default=None,
                       help="networks trained one after another with seeds --seed, --seed + 1, "
                            "..., their maps and thresholds averaged as one model (default: 3 "
                            "for a unet of ribosomes or microtubules, else 1); 3 raised 5-box "
                            "ribosome picks from F1 0.86 / 0.89 to 0.90 / 0.93 (training / "
                            "other tomogram), microtubule Dice by 0.07 / 0.04 and membrane "
                            "Dice by 0.03, for 1.5-3x the training and 3x the segmentation time; "
                            "each network of those defaults stops after 5 checks without "
                            "gain, any other after 10 (docs/engine.md)")
    train.add_argument("--stem3d", choices=("auto", "on", "off"), default="auto",
                       help="unet: 3D convolutions over +-4 slices before the 2D U-Net (auto: on "
                            "for a feature named membrane; better membranes, ~3x the training "
                            "time, 2-3x the segmentation time)")
    train.add_argument("--average", type=number(float, low=0.0, inclusive=True, high=0.999),
                       default=0.0, metavar="DECAY",
                       help="keep a moving average of the weights with this decay, e.g. 0.99 "
                            "(default 0: off); membranes from 5 boxes gained 0.03-0.04 Dice "
                            "for 2-3x the training time (docs/engine.md)")
    train.add_argument("--batch-size", type=POSITIVE_INT)
    train.add_argument("--learning-rate", type=number(float, high=1.0))
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    train.add_argument("--binning", type=POSITIVE_INT,
                       help="bin the tomogram by this factor for the network (default: towards "
                            "20 A per voxel, e.g. 2 for a 10 A tomogram; 10 A for membranes)")
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
    arguments.dtype_option(segment)
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
    merge.add_argument("--min-size", action="append", metavar="FEATURE=NM3",
                       help="drop the feature's connected pieces smaller than this volume in "
                            "nm^3 (default 0: keep all; 2000 for membranes: docs/engine.md)")
    merge.add_argument("--output", "-o", type=Path, required=True)
    merge.add_argument("--overwrite", action="store_true")
    voxel_size_option(merge, "maps whose")
    merge.set_defaults(func=cmd_merge)


def add_parsers(sub) -> None:
    _train_parser(sub)
    _segment_parser(sub)
    _merge_parser(sub)
