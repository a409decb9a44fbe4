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

import numpy as np

from . import __version__
from .errors import InvalidSettingsError, TomosegError, user_message


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (exit status 2), like every other error of the CLI."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind: type, low: float = 0.0, inclusive: bool = False, high: float | None = None):
    """An argparse type: a ``kind`` number above ``low`` (or from it), at most ``high``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__} number, not '{text}'")
        if value != value or (value < low if inclusive else value <= low) or (
                high is not None and value > high):
            bound = f"at least {low:g}" if inclusive else f"above {low:g}"
            raise argparse.ArgumentTypeError(
                f"must be {bound}{f' and at most {high:g}' if high is not None else ''}, "
                f"not {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


POSITIVE = _number(float)
POSITIVE_INT = _number(int)
COUNT = _number(int, 0, inclusive=True)


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
    from .io.paths import check_writable

    check_writable(args.output)
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
    from .io.paths import check_writable

    check_writable(Path(args.output).parent)
    replaced = replace_nonfinite(args.input, args.output)
    print(f"{args.output}: replaced {replaced:,} NaN/Inf voxels with the mean")
    return 0


def cmd_points(args: argparse.Namespace) -> int:
    """Convert particle files between STAR and CSV, placing them on a tomogram."""
    from .io.mrc import read_header
    from .io.particles import read_csv, read_star, write_csv, write_star
    from .tomogram import tomogram_name, volume_frame

    _, info = read_header(args.tomogram)
    info = _voxel_checked(info, args.tomogram, args)
    frame = volume_frame(info, args.tomo_name or tomogram_name(args.tomogram),
                         args.tilt_series_pixel_size)
    source = Path(args.input)
    table = read_star(source, frame) if source.suffix.lower() == ".star" else read_csv(source)
    if source.suffix.lower() == ".star" and not frame.tilt_series_pixel_size:
        from dataclasses import replace

        from .io.particles import star_tilt_series_pixel_size

        frame = replace(frame, tilt_series_pixel_size=star_tilt_series_pixel_size(source, frame.name))
    table = table.drop(columns=["tomo_name"], errors="ignore")
    if Path(args.output).suffix.lower() == ".star":
        write_star(args.output, table, frame)
    else:
        write_csv(args.output, table, frame)
    print(f"{args.output}: {len(table)} particles")
    return 0


def _key_values(pairs: list[str] | None, what: str) -> dict[str, str]:
    result = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise TomosegError(f"{what} must be given as NAME=VALUE, not '{pair}'.")
        key, value = pair.split("=", 1)
        if key.strip() in result:
            raise TomosegError(f"{what} names '{key.strip()}' twice; give each once.")
        result[key.strip()] = value.strip()
    return result


def _thresholds(pairs: list[str] | None) -> dict[str, float]:
    """--threshold FEATURE=VALUE pairs, each a number in [0, 1)."""
    result = {}
    for key, value in _key_values(pairs, "--threshold").items():
        try:
            result[key] = float(value)
        except ValueError:
            raise InvalidSettingsError(f"--threshold {key}={value}: the threshold must be a "
                                       "number in [0, 1).") from None
        if not 0 <= result[key] < 1:
            raise InvalidSettingsError(f"--threshold {key}={value}: the threshold must lie in [0, 1).")
    return result


def _voxel_checked(info, path, args: argparse.Namespace):
    """``info`` with the voxel size of --voxel-size, or of a header that has a usable one."""
    from .io.mrc import require_voxel_size

    return require_voxel_size(info, path, getattr(args, "voxel_size", None))


def cmd_boxes(args: argparse.Namespace) -> int:
    """Boxes from a ground-truth mask, placed as a user would (for tests and benchmarks)."""
    from .annotations import boxes_from_truth, has_boxes, load_boxes, save_boxes
    from .io.mrc import open_volume

    from .io.paths import check_writable

    truth, _ = open_volume(args.truth)
    check_writable(args.output)
    boxes = boxes_from_truth(truth, args.feature, args.positives, args.negatives, args.size,
                             args.seed)
    if args.positives and not any(b.positive for b in boxes):
        raise TomosegError(f"{args.truth} has no place for a {args.size}-pixel positive box of "
                           f"'{args.feature}' (is the mask empty?); nothing was written.")
    existing = []
    if has_boxes(args.output):  # boxes.json, or only its backup after a kill mid-save
        existing = [b for b in load_boxes(args.output) if b.feature != args.feature]
    save_boxes(args.output, existing + boxes)
    n_pos = sum(b.positive for b in boxes)
    print(f"{args.output}: {n_pos} positive and {len(boxes) - n_pos} negative boxes "
          f"for '{args.feature}'")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .annotations import load_boxes
    from .io.mrc import open_volume
    from .nn.model_file import load_model
    from .nn.training import TrainingSettings, iter_train
    from .preprocess import PreprocessSettings, default_preprocessing
    from .features import FEATURE_COLOURS

    from .annotations import check_boxes

    from .annotations import check_boxes_fit
    from .io.paths import check_writable
    from .nn.model_file import save_model_or_rescue

    volume, info = open_volume(args.tomogram)
    info = _voxel_checked(info, args.tomogram, args)
    from .session import Session
    from .session_store import is_session

    # a session folder keeps its boxes in session.json; a box folder in boxes.json
    boxes = Session.load(args.boxes).boxes if is_session(args.boxes) else load_boxes(args.boxes)
    check_boxes(boxes, args.feature)
    start_from = load_model(args.resume) if args.resume else None
    settings = TrainingSettings(architecture=args.arch, seed=args.seed, device=args.device,
                                **({"steps": args.steps} if args.steps else {}),
                                batch_size=args.batch_size, learning_rate=args.learning_rate,
                                hold_out=not args.no_early_stop)
    box_size = next(b.size for b in boxes if b.feature == args.feature)
    preprocess = default_preprocessing(info.isotropic_voxel_size, box_size, args.invert, args.arch)
    if args.binning is not None:
        preprocess = PreprocessSettings(binning=args.binning, invert=args.invert,
                                        mode=preprocess.mode)
    if start_from is not None:  # continuing keeps the model's own preprocessing
        preprocess = start_from.preprocess
    check_boxes_fit([b for b in boxes if b.feature == args.feature], volume.shape,
                    preprocess.binning)
    output = args.output or Path(f"{args.feature}.tomoseg.pt")
    if output.exists() and not args.overwrite:
        raise FileExistsError(f"{output} exists; use --overwrite or another --output.")
    check_writable(output.parent)  # before training, not after
    from tqdm import tqdm

    model = None
    with tqdm(total=settings.steps, desc=f"training {args.feature}", unit="step",
              file=sys.stderr) as bar:
        for update in iter_train(volume, boxes, info.isotropic_voxel_size, settings, preprocess,
                                 feature=args.feature,
                                 colour=FEATURE_COLOURS.get(args.feature, "#f2c94c"),
                                 start_from=start_from):
            model = update.model
            bar.update(1)
            if update.held_out is not None:
                held = update.held_out
                bar.set_postfix(loss=f"{update.loss:.4f}", held_out_dice=f"{held.dice:.3f}")
    save_model_or_rescue(model, output)
    held = model.info.get("held_out")
    quality = (f"held-out Dice {held['dice'] or 0:.3f} at threshold {model.threshold:.2f} "
               f"(best step {held['step']})" if held else f"final loss {model.history[-1][1]:.4f}")
    print(f"{output}: '{args.feature}' {model.architecture} network, "
          f"{model.info['positives']} positive / {model.info['negatives']} negative boxes, "
          f"{len(model.history)} steps, {quality}")
    return 0


def _copick_source(args: argparse.Namespace, run: str | None = None):
    """The copick project location named by --copick/--run/... (None without --copick)."""
    if not getattr(args, "copick", None):
        return None
    from .io.copick_project import CopickSource

    if run is None and isinstance(args.run, str):
        run = args.run
    return CopickSource(config=str(args.copick), run=run, voxel_spacing=args.voxel_spacing,
                        tomo_type=args.tomo_type, user_id=args.user_id, session_id=args.session_id)


def _segment_inputs(args: argparse.Namespace):
    """(name, volume, info, copick source or None) per tomogram, opened one at a time."""
    from .batch import unique_names
    from .io.mrc import open_volume

    if args.copick:
        from .io.copick_project import open_tomogram, run_names

        if args.tomograms:
            raise TomosegError("give tomogram files or --copick, not both.")
        for run in args.run or run_names(args.copick):
            source = _copick_source(args, run)
            yield (run, *open_tomogram(source), source)
        return
    if not args.tomograms:
        raise TomosegError("give tomogram files, or --copick CONFIG to read a copick project.")
    tomograms = list(dict.fromkeys(str(Path(t).resolve()) for t in args.tomograms))
    for tomogram, name in zip(tomograms, unique_names(tomograms)):
        yield (name, *open_volume(tomogram), None)


def cmd_segment(args: argparse.Namespace) -> int:
    from .io.mrc import open_volume
    from .nn.inference import iter_segment
    from .nn.model_file import load_model
    from tqdm import tqdm

    from .io.atomic import clean_stale_partials

    from .io.paths import check_writable

    models = [load_model(path) for path in args.model]
    check_writable(args.output_dir)
    clean_stale_partials(args.output_dir)
    for name, volume, info, source in _segment_inputs(args):
        info = _voxel_checked(info, name, args)
        for model in models:
            target = args.output_dir / f"{name}_{model.feature}.mrc"
            with tqdm(total=volume.shape[0], desc=f"{name}: {model.feature}",
                      unit="slice", file=sys.stderr) as bar:
                for update in iter_segment(volume, model, info.isotropic_voxel_size, target,
                                           origin=info.origin, batch_slices=args.batch,
                                           dtype=args.dtype, device=args.device,
                                           rescale=not args.no_rescale, overwrite=args.overwrite):
                    bar.update(update.z1 - update.z0)
            print(f"{target}")
            if source is not None:
                from .io.copick_project import write_segmentation

                from .picking import as_probability

                threshold = (model.threshold if args.copick_threshold is None
                             else args.copick_threshold)
                mask = as_probability(open_volume(target)[0]) > threshold
                print(write_segmentation(source, mask, model.feature, info.isotropic_voxel_size,
                                         overwrite=args.overwrite))
    return 0


def _map_threshold(given: float | None, path, feature: str) -> float:
    """The user's threshold, else the one stored with the probability map, else 0.5."""
    from .io.probability_header import stored_threshold

    if given is not None:
        return float(given)
    stored = stored_threshold(path) if path else None
    if stored is not None:
        print(f"{feature}: threshold {stored:.2f} (chosen by its model on held-out pixels)")
        return stored
    return 0.5


def cmd_merge(args: argparse.Namespace) -> int:
    from .io.mrc import open_volume, write_volume
    from .merge import MergeSettings, merge_volumes

    maps = _key_values(args.prob, "--prob")
    if not maps:
        raise TomosegError("give at least one --prob FEATURE=FILE.")
    from .io.paths import check_writable
    from .merge import check_same_grid

    thresholds = _thresholds(args.threshold)
    artifacts = {k: [f for f in v.split(",") if f]
                 for k, v in _key_values(args.artifact, "--artifact").items()}
    if args.output.exists() and not args.overwrite:
        raise FileExistsError(f"{args.output} exists; use --overwrite or another --output.")
    check_writable(args.output.parent)
    volumes, infos = {}, []
    for feature, path in maps.items():
        volumes[feature], info = open_volume(path)
        infos.append(info)
    check_same_grid({f: (i.isotropic_voxel_size, i.origin) for f, i in zip(maps, infos)})
    thresholds = {f: _map_threshold(thresholds.get(f), path, f) for f, path in maps.items()}
    settings = MergeSettings(features=list(maps), thresholds=thresholds, artifacts=artifacts)
    labels = merge_volumes(volumes, settings)
    write_volume(args.output, labels, infos[0].voxel_size, infos[0].origin,
                 overwrite=args.overwrite)
    counts = ", ".join(f"{f}: {int((labels == settings.label_of(f)).sum()):,}" for f in maps)
    print(f"{args.output}: labels {', '.join(f'{i + 1}={f}' for i, f in enumerate(maps))} "
          f"(voxels {counts})")
    return 0


def cmd_pick(args: argparse.Namespace) -> int:
    from .io import copick_project
    from .io.mrc import open_volume
    from .io.particles import write_csv, write_eman2_json, write_star
    from .picking import PickSettings, as_probability, pick_particles, sample_along
    from .tomogram import tomogram_name, volume_frame

    source = _copick_source(args)
    if not args.output and source is None:
        raise TomosegError("give an output file, or --copick CONFIG to write into a copick project.")
    if args.probability:
        probability, info = open_volume(args.probability)
    elif source is not None:  # the feature's segmentation in the project (e.g. from segment)
        probability, info = copick_project.read_segmentation(source, args.feature)
    else:
        raise TomosegError("give a probability MRC (or --copick to read a segmentation).")
    from .io.mrc import check_finite_volume
    from .io.paths import check_writable

    info = _voxel_checked(info, args.probability or args.feature, args)
    check_finite_volume(probability, args.probability)
    threshold = _map_threshold(args.threshold, args.probability, args.feature)
    if args.output:
        check_writable(Path(args.output).parent)
    voxel = info.isotropic_voxel_size
    if source is not None:
        copick_project.check_extent(source, info.shape, voxel)
    if args.spacing is not None:
        table = sample_along(as_probability(probability) > threshold, args.spacing, voxel)
    else:
        settings = PickSettings(diameter=args.diameter, threshold=threshold,
                                min_distance=args.min_distance, edge=args.edge,
                                split_touching=args.split, max_picks=args.max_picks,
                                method=args.method, min_size=args.min_size)
        table = pick_particles(np.asarray(probability), voxel, settings)
    table["feature"] = args.feature
    name = args.tomo_name or (source.run if source else tomogram_name(args.probability))
    frame = volume_frame(info, name, args.tilt_series_pixel_size)
    if source is not None:
        written = copick_project.write_picks(source, table, frame, args.feature, args.overwrite)
        print(f"{written}: {len(table)} {args.feature} picks (copick)")
    if not args.output:
        return 0
    output = Path(args.output)
    if output.suffix.lower() == ".json":
        write_eman2_json(output, table, frame, box_size=int(round(1.5 * args.diameter / voxel)),
                         feature=args.feature)
    else:
        (write_star if output.suffix.lower() == ".star" else write_csv)(output, table, frame)
    print(f"{output}: {len(table)} {args.feature} picks")
    return 0


def _average_settings(args: argparse.Namespace):
    from .averaging import AverageSettings

    return AverageSettings(box=args.box, iterations=args.iterations, symmetry=args.symmetry,
                           angular_step=args.angular_step, final_step=args.final_step,
                           max_shift=args.max_shift, tilt_min=args.tilt_range[0],
                           tilt_max=args.tilt_range[1], mask_radius=args.mask_radius,
                           start_resolution=args.start_resolution, invert=not args.no_invert,
                           seed=args.seed, device=args.device)


def _check_average_inputs(args: argparse.Namespace) -> None:
    from .io.mrc import read_header, require_voxel_size
    from .io.paths import check_writable

    require_voxel_size(read_header(args.tomogram)[1], args.tomogram,
                       hint="set it in the header (e.g. IMOD alterheader -del)")
    check_writable(args.output)


def cmd_average(args: argparse.Namespace) -> int:
    """Gold-standard subtomogram averaging of picked particles."""
    from .averaging.pipeline import open_tomogram_and_particles, run_average
    from .io.mrc import open_volume

    settings = _average_settings(args)
    _check_average_inputs(args)
    volume, frame, table = open_tomogram_and_particles(args.tomogram, args.particles, args.tomo_name,
                                                       args.tilt_series_pixel_size)
    reference = None
    if args.reference:
        reference = np.asarray(open_volume(args.reference)[0], dtype=np.float32)
    start = time.perf_counter()
    bar, update = _progress_bar("averaging")
    try:
        result, sub, written = run_average(volume, frame, table, settings, args.output, reference,
                                           args.edge, args.name, update)
    finally:
        bar.close()
    nyquist = 2 * frame.voxel_size
    print(f"{len(sub.data)} particles averaged ({sub.skipped} too close to the edge), "
          f"resolution {result.resolution:.1f} A at FSC 0.143 (Nyquist {nyquist:.1f} A), "
          f"{time.perf_counter() - start:.1f} s")
    if result.note:
        print(("" if result.supported else "WARNING: resolution ") + result.note)
    for key, path in written.items():
        print(f"  {key:10s} {path}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    """Split aligned particles into classes."""
    from .averaging import ClassifySettings
    from .averaging.pipeline import open_tomogram_and_particles, run_classify

    averaging = _average_settings(args)
    settings = ClassifySettings(classes=args.classes, iterations=args.iterations,
                                angular_range=args.angular_range, angular_step=args.local_step,
                                resolution=args.resolution, seed=args.seed)
    _check_average_inputs(args)
    volume, frame, table = open_tomogram_and_particles(args.tomogram, args.particles, args.tomo_name,
                                                       args.tilt_series_pixel_size)
    bar, update = _progress_bar("classifying")
    try:
        result, sub, written = run_classify(volume, frame, table, averaging, settings, args.output,
                                            args.edge, args.name, update)
    finally:
        bar.close()
    counts = np.bincount(result.classes, minlength=settings.classes + 1)[1:]
    print(f"{len(sub.data)} particles in {settings.classes} classes: {counts.tolist()}")
    for key, path in written.items():
        print(f"  {key:10s} {path}")
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .batch import BatchSettings, expand_inputs, make_client, run_batch

    copick = _copick_source(args)
    if copick is not None and args.tomograms:
        raise TomosegError("give tomogram files or --copick, not both.")
    if copick is not None:
        from .io.copick_project import run_names

        tomograms = args.run or run_names(copick.config)
    else:
        tomograms = expand_inputs(args.tomograms)
    settings = BatchSettings(copick=copick,
        models=tuple(str(Path(m).resolve()) for m in args.model), output=str(args.output),
        thresholds=_thresholds(args.threshold),
        artifacts={k: tuple(v.split(",")) for k, v in _key_values(args.artifact, "--artifact").items()},
        pick=tuple(args.pick or ()), diameter=args.diameter, device=args.device,
        tilt_series_pixel_size=args.tilt_series_pixel_size, voxel_size=args.voxel_size)
    from .io.paths import check_writable

    check_writable(args.output)
    client = make_client(args.workers, args.scheduler, args.jobqueue)
    print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
    counts = {"done": 0, "failed": 0, "skipped": 0}
    with tqdm(total=len(tomograms), desc="tomograms", unit="tomo", file=sys.stderr) as bar:
        def progress(row, done, total):
            counts[row["status"]] = counts.get(row["status"], 0) + 1
            bar.update(1)
            bar.set_postfix(counts)
        try:
            rows = run_batch(tomograms, settings, client=client, progress=progress)
        finally:
            client.close()
    print(f"| tomogram | status | {' | '.join(f'{f} picks' for f in settings.pick)} | s | note |")
    print("|---|---|" + "---|" * len(settings.pick) + "---|---|")
    for row in rows:
        picks = " | ".join(str(row.get("picks", {}).get(f, "")) for f in settings.pick)
        note = (row.get("error") or "").splitlines()[0] if row.get("error") else ""
        print(f"| {row['name']} | {row['status']} | {picks}{' | ' if picks else ''}"
              f"{row.get('seconds', 0):.1f} | {note} |")
    failed = sum(r["status"] == "failed" for r in rows)
    print(f"{len(rows) - failed} of {len(rows)} tomograms finished; outputs in {args.output}")
    return 1 if failed else 0


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
    from .features import FEATURES
    from .synthetic import CellSpec, simulate, write_synthetic

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


def _copick_options(p: argparse.ArgumentParser, several_runs: bool) -> None:
    group = p.add_argument_group("copick project (pip install 'napari-tomoseg[copick]')")
    group.add_argument("--copick", type=Path, metavar="CONFIG", help="copick project config (JSON)")
    group.add_argument("--run", action="append" if several_runs else "store",
                       help="copick run" + (" (repeat; default: every run)" if several_runs else ""))
    group.add_argument("--voxel-spacing", type=float, default=10.0, help="A (default 10)")
    group.add_argument("--tomo-type", default="wbp", help="tomogram type (default wbp)")
    group.add_argument("--user-id", default="tomoseg", help="copick user id of our results")
    group.add_argument("--session-id", default="0", help="copick session id (default 0: a tool)")


def _tilt_series_option(parser: argparse.ArgumentParser) -> None:
    """RELION's rlnTomoTiltSeriesPixelSize: the tomogram header does not carry it."""
    parser.add_argument("--tilt-series-pixel-size", "--unbinned-voxel-size",
                        dest="tilt_series_pixel_size",
                        type=_number(float, 0.1, inclusive=True, high=1000.0),
                        help="pixel size (A) of the unbinned tilt series the tomogram was "
                             "reconstructed from (RELION's rlnTomoTiltSeriesPixelSize; "
                             "not written when not given)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tomoseg", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"napari-tomoseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="make a synthetic cellular tomogram with ground truth")
    synth.add_argument("output", type=Path, help="folder for the files")
    synth.add_argument("--name", default="synthetic")
    synth.add_argument("--shape", type=POSITIVE_INT, nargs=3, default=(128, 512, 512), metavar=("Z", "Y", "X"))
    synth.add_argument("--voxel-size", type=_number(float, 0.1, inclusive=True, high=1000.0), default=10.0, help="Angstrom (default 10)")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--snr", type=float, default=0.5, help="per-tilt signal-to-noise ratio")
    synth.add_argument("--tilt-range", type=float, nargs=3, default=(-60.0, 60.0, 3.0),
                       metavar=("MIN", "MAX", "STEP"))
    synth.add_argument("--defocus", type=float, default=0.0, help="micrometres; 0 = no CTF")
    synth.add_argument("--origin", type=float, nargs=3, default=(0.0, 0.0, 0.0),
                       metavar=("Z", "Y", "X"), help="header origin in Angstrom")
    synth.add_argument("--vesicles", type=COUNT, default=5)
    synth.add_argument("--microtubules", type=COUNT, default=3)
    synth.add_argument("--actin", type=COUNT, default=8)
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
    _tilt_series_option(points)
    points.add_argument("--voxel-size", type=_number(float, 0.1, inclusive=True, high=1000.0),
                        help="A per voxel, for a tomogram whose header lacks it")
    points.set_defaults(func=cmd_points)

    boxes = sub.add_parser("boxes", help="place training boxes from a ground-truth mask")
    boxes.add_argument("truth", help="0/1 mask MRC of the feature (e.g. from tomoseg synth)")
    boxes.add_argument("output", type=Path, help="box folder (boxes.json: boxes and masks, with a backup)")
    boxes.add_argument("--feature", required=True)
    boxes.add_argument("--positives", type=COUNT, default=10)
    boxes.add_argument("--negatives", type=COUNT, default=50)
    boxes.add_argument("--size", type=_number(int, 8, inclusive=True), default=64,
                       help="box size in pixels (at least 8)")
    boxes.add_argument("--seed", type=int, default=0)
    boxes.set_defaults(func=cmd_boxes)

    train = sub.add_parser("train", help="train one feature's network from boxes")
    train.add_argument("tomogram")
    train.add_argument("--boxes", type=Path, required=True, help="box folder or session folder")
    train.add_argument("--feature", required=True)
    train.add_argument("--arch", default="unet", choices=("unet", "eman2"))
    train.add_argument("--steps", type=POSITIVE_INT,
                       help="at most this many steps (default 1500); training stops earlier when the held-out "
                            "quadrant of each box stops improving")
    train.add_argument("--no-early-stop", action="store_true",
                       help="train on whole boxes for exactly --steps steps (no held-out pixels, "
                            "threshold 0.5)")
    train.add_argument("--batch-size", type=POSITIVE_INT)
    train.add_argument("--learning-rate", type=_number(float, high=1.0))
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    train.add_argument("--binning", type=POSITIVE_INT,
                       help="bin the tomogram by this factor for the network (default: towards "
                            "20 A per voxel, e.g. 2 for a 10 A tomogram)")
    train.add_argument("--voxel-size", type=_number(float, 0.1, inclusive=True, high=1000.0),
                       help="A per voxel, for a tomogram whose header lacks it")
    train.add_argument("--invert", action="store_true", help="invert contrast (protein white)")
    train.add_argument("--resume", type=Path, help="continue training this model")
    train.add_argument("--output", "-o", type=Path)
    train.add_argument("--overwrite", action="store_true")
    train.set_defaults(func=cmd_train)

    segment = sub.add_parser("segment", help="apply trained networks to whole tomograms")
    segment.add_argument("tomograms", nargs="*", help="MRC files (or --copick)")
    segment.add_argument("--model", "-m", action="append", required=True,
                         help="model file (repeat for several features)")
    segment.add_argument("--output-dir", "-o", type=Path, default=Path("."))
    segment.add_argument("--dtype", choices=("float16", "float32", "uint8"), default="float16")
    segment.add_argument("--batch", type=POSITIVE_INT, default=4, help="slices per batch")
    segment.add_argument("--device", default="auto")
    segment.add_argument("--no-rescale", action="store_true",
                         help="refuse tomograms of another voxel size instead of rescaling")
    segment.add_argument("--overwrite", action="store_true")
    _copick_options(segment, several_runs=True)
    segment.add_argument("--voxel-size", type=_number(float, 0.1, inclusive=True, high=1000.0),
                         help="A per voxel, for tomograms whose header lacks it")
    segment.add_argument("--copick-threshold", type=_number(float, 0, inclusive=True, high=0.999),
                         help="probability above which a voxel joins the copick segmentation "
                              "(default: the model's calibrated threshold)")
    segment.set_defaults(func=cmd_segment)

    merge = sub.add_parser("merge", help="merge per-feature probabilities into one label volume")
    merge.add_argument("--prob", action="append", metavar="FEATURE=FILE")
    merge.add_argument("--threshold", action="append", metavar="FEATURE=VALUE")
    merge.add_argument("--artifact", action="append", metavar="ARTIFACT=FEATURE[,FEATURE]",
                       help="remove the artifact's voxels from these features")
    merge.add_argument("--output", "-o", type=Path, required=True)
    merge.add_argument("--overwrite", action="store_true")
    merge.set_defaults(func=cmd_merge)

    pick = sub.add_parser("pick", help="particle coordinates from a probability map")
    pick.add_argument("probability", nargs="?",
                      help="probability MRC from tomoseg segment (with --copick: default the "
                           "feature's copick segmentation)")
    pick.add_argument("output", nargs="?",
                      help=".star (RELION 5), .csv, or .json (EMAN2 info); optional with --copick")
    _tilt_series_option(pick)
    pick.add_argument("--feature", default="ribosome")
    pick.add_argument("--diameter", type=POSITIVE, default=250.0, help="particle diameter (A)")
    pick.add_argument("--threshold", type=_number(float, 0, inclusive=True, high=0.999),
                      help="default: the threshold the model chose on held-out pixels "
                           "(stored in the probability map's header), else 0.5")
    pick.add_argument("--voxel-size", type=_number(float, 0.1, inclusive=True, high=1000.0),
                      help="A per voxel, for a map whose header lacks it")
    pick.add_argument("--min-distance", type=POSITIVE, help="A between picks (default: radius)")
    pick.add_argument("--edge", type=_number(float, 0, inclusive=True),
                      help="drop picks closer than this to the border, A (default: keep all)")
    pick.add_argument("--method", choices=("peaks", "components"), default="peaks",
                      help="peaks: local maxima of the smoothed map (default; keeps touching "
                           "particles apart); components: one pick per blob, as EMAN2")
    pick.add_argument("--min-size", type=POSITIVE_INT,
                      help="voxels above threshold a particle needs (default: 20%% of a sphere "
                           "of --diameter)")
    pick.add_argument("--split", action="store_true",
                      help="components only: split touching particles (watershed)")
    pick.add_argument("--max-picks", type=POSITIVE_INT)
    pick.add_argument("--spacing", type=POSITIVE,
                      help="sample points every SPACING A along filaments/membranes instead")
    pick.add_argument("--tomo-name", help="rlnTomoName (default: the file name)")
    _copick_options(pick, several_runs=False)
    pick.add_argument("--overwrite", action="store_true",
                      help="replace copick picks of the same user and session")
    pick.set_defaults(func=cmd_pick)

    def averaging_options(p, iterations: int) -> None:
        _tilt_series_option(p)
        p.add_argument("tomogram", help="tomogram MRC the particles were picked on")
        p.add_argument("particles", help="particles: .star (RELION 5) or .csv")
        p.add_argument("--output", "-o", type=Path, required=True, help="folder for the results")
        p.add_argument("--box", type=_number(int, 8, inclusive=True), default=32, help="box size in voxels (even)")
        p.add_argument("--iterations", type=POSITIVE_INT, default=iterations)
        p.add_argument("--symmetry", default="C1", help="point group: C1, Cn or Dn")
        p.add_argument("--angular-step", type=POSITIVE, default=20.0,
                       help="global search step of the first iteration (degrees)")
        p.add_argument("--final-step", type=POSITIVE, default=2.0, help="finest local step (degrees)")
        p.add_argument("--max-shift", type=_number(float, 0, inclusive=True), help="voxels from the pick (default box/6)")
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
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto")

    average = sub.add_parser("average", help="subtomogram averaging of picked particles")
    averaging_options(average, 5)
    average.add_argument("--reference", help="starting reference MRC (default: from the data)")
    average.add_argument("--name", default="average", help="prefix of the output files")
    average.set_defaults(func=cmd_average)

    classify = sub.add_parser("classify", help="classify aligned particles (from tomoseg average)")
    averaging_options(classify, 6)
    classify.add_argument("--classes", type=POSITIVE_INT, default=2)
    classify.add_argument("--angular-range", type=POSITIVE, default=10.0,
                          help="local search about each particle's orientation (degrees)")
    classify.add_argument("--local-step", type=POSITIVE, default=5.0)
    classify.add_argument("--resolution", type=POSITIVE, help="A low-pass of the class averages")
    classify.add_argument("--name", default="class", help="prefix of the output files")
    classify.set_defaults(func=cmd_classify)

    batch = sub.add_parser("batch", help="segment, merge and pick many tomograms (dask)")
    batch.add_argument("tomograms", nargs="*", help="paths or globs (quote them), or --copick")
    batch.add_argument("--model", "-m", action="append", required=True)
    batch.add_argument("--output", "-o", type=Path, required=True)
    batch.add_argument("--threshold", action="append", metavar="FEATURE=VALUE")
    batch.add_argument("--artifact", action="append", metavar="ARTIFACT=FEATURE[,FEATURE]")
    batch.add_argument("--pick", action="append", metavar="FEATURE", help="features to pick")
    batch.add_argument("--diameter", type=POSITIVE, default=250.0, help="particle diameter (A)")
    _tilt_series_option(batch)
    batch.add_argument("--voxel-size", type=_number(float, 0.1, inclusive=True, high=1000.0),
                       help="A per voxel, for tomograms whose header lacks it")
    batch.add_argument("--workers", type=POSITIVE_INT, help="local workers (default: GPUs, else <= 4 cores)")
    batch.add_argument("--scheduler", help="address of a running dask scheduler")
    batch.add_argument("--jobqueue", choices=("slurm",), help="start workers through SLURM")
    batch.add_argument("--device", default="auto")
    _copick_options(batch, several_runs=True)
    batch.set_defaults(func=cmd_batch)

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
    except (TomosegError, OSError, MemoryError) as exc:  # the user can act on these: one line
        print(f"tomoseg: error: {user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tomoseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
