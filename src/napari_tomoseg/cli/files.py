"""Commands about files: synth, info, clean, points, boxes."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import InvalidSettingsError, TomosegError
from .arguments import (COUNT, POSITIVE_INT, VOXEL_SIZE, feature_name, number, tilt_series_option,
                        voxel_checked, voxel_size_option)
from .progress import progress_bar


def cmd_synth(args: argparse.Namespace) -> int:
    from ..io.paths import check_writable, checked_name
    from ..synthetic import CellSpec, ImagingSpec, simulate, write_synthetic
    from ..synthetic.simulate import check_synthetic_outputs

    spec = CellSpec(shape=tuple(args.shape), voxel_size=args.voxel_size,
                    n_vesicles=args.vesicles, n_microtubules=args.microtubules,
                    n_actin=args.actin, carbon_edge=not args.no_carbon)
    imaging = ImagingSpec(tilt_min=args.tilt_range[0], tilt_max=args.tilt_range[1],
                          tilt_step=args.tilt_range[2], snr=args.snr, defocus_um=args.defocus)
    checked_name(args.name, "synthetic")
    check_writable(args.output)
    if not args.overwrite:  # say so before minutes of simulation (the reference once made)
        check_synthetic_outputs(args.output, args.name, spec.voxel_size, args.compact)
    start = time.perf_counter()
    with progress_bar("synthetic cell") as show:
        result = simulate(spec, imaging, seed=args.seed, progress=show)
    files = write_synthetic(result, args.output, name=args.name, origin=tuple(args.origin),
                            overwrite=args.overwrite, compact=args.compact)
    print(f"synthetic cell {spec.shape} at {spec.voxel_size} A/voxel, seed {args.seed}, "
          f"{len(result.cell.particles)} ribosomes, {time.perf_counter() - start:.1f} s")
    for key, path in files.items():
        print(f"  {key:12s} {path}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..io.mrc import open_volume

    failed = 0
    for path in args.files:  # every file: the first bad one hid the rest
        try:
            data, info = open_volume(path, check_finite=False)
        except (TomosegError, OSError) as exc:
            print(f"tomoseg: error: {exc}", file=sys.stderr)  # the message names the file
            failed += 1
            continue
        z, y, x = info.shape
        if info.voxel_size_in_header:
            voxel = (f"voxel {info.voxel_size[2]:g} x {info.voxel_size[1]:g} x "
                     f"{info.voxel_size[0]:g} A")
        else:  # the header's value is not believed: never print a stand-in as the voxel size
            given = info.header_voxel_size
            voxel = (f"no usable voxel size (header: {given:g} A; give one with --voxel-size)"
                     if given is not None else "no voxel size in the header")
        print(f"{path}: {x} x {y} x {z} voxels (x y z), {info.dtype}, {voxel}, "
              f"origin {info.origin[2]:g} {info.origin[1]:g} {info.origin[0]:g} A")
    return 2 if failed else 0


def cmd_clean(args: argparse.Namespace) -> int:
    from ..io.mrc import replace_nonfinite
    from ..io.paths import check_writable

    check_writable(Path(args.output).parent)
    replaced = replace_nonfinite(args.input, args.output, overwrite=args.overwrite)
    print(f"{args.output}: replaced {replaced:,} NaN/Inf voxels with the mean; axes in "
          "standard order (mapc, mapr, maps = 1, 2, 3)")
    return 0


def cmd_points(args: argparse.Namespace) -> int:
    """Convert particle files between STAR, CSV and EMAN2 JSON, placing them on a tomogram."""
    from ..io.mrc import read_header
    from ..io.particle_files import check_particle_output, read_particles, write_particles
    from ..tomogram import tomogram_name, volume_frame

    check_particle_output(args.output, (args.input, args.tomogram), args.overwrite)
    _, info = read_header(args.tomogram)
    info = voxel_checked(info, args.tomogram, args)
    frame = volume_frame(info, args.tomo_name or tomogram_name(args.tomogram),
                         args.tilt_series_pixel_size)
    table, frame = read_particles(args.input, frame)
    _say_pixel_size_conflict(args, frame.name)
    table = table.drop(columns=["tomo_name"], errors="ignore")
    write_particles(args.output, table, frame, overwrite=args.overwrite)
    print(f"{args.output}: {len(table)} particles")
    return 0


def _say_pixel_size_conflict(args: argparse.Namespace, name: str) -> None:
    """A STAR input's own tilt-series pixel size reads its coordinates; one given that differs
    is what the output is written with, and one of the two is wrong: say so."""
    from ..io.particle_files import particle_format
    from ..io.particles import star_tilt_series_pixel_size

    given = args.tilt_series_pixel_size
    if not given or particle_format(args.input) != "star":
        return
    own = star_tilt_series_pixel_size(args.input, name)
    if own and abs(own - given) > 1e-3 * own:
        print(f"tomoseg: warning: {Path(args.input).name} says the tilt-series pixel size is "
              f"{own:g} A (its coordinates were read with it), --tilt-series-pixel-size says "
              f"{given:g} A (the output is written with it); check which is right.",
              file=sys.stderr)


MASK_VALUES = 16  # a label volume has a few integer values; a tomogram or a map many


def _require_mask(truth, path, label: int | None = None) -> list[int]:
    """The slices holding mask (value ``label`` when given); refuses a tomogram or
    probability map given as the mask (it made boxes of every voxel > 0), and a label
    volume of several features without ``label`` (every label became this feature).

    Masks of 0/1 or 0/255 pass (every value above 0 is mask).
    """
    import numpy as np

    values: set = set()
    painted = []
    for z in range(truth.shape[0]):  # slice by slice: a memory-mapped volume stays on disk
        plane = np.asarray(truth[z])
        found = np.unique(plane)
        if (found[-1] > 0) if label is None else bool(np.any(found == label)):
            painted.append(z)
        values.update(found[:MASK_VALUES + 1].tolist())
        if len(values) > MASK_VALUES or not np.all(np.mod(found, 1) == 0):
            raise TomosegError(f"{path} is not a mask (slice {z} holds {plane.min():g} .. "
                               f"{plane.max():g} in {len(found)} values): give the feature's "
                               "mask (0 outside, above 0 inside, e.g. from tomoseg synth), not a "
                               "tomogram or a probability map.")
    inside = sorted(int(v) for v in values if v > 0)
    if label is None and len(inside) > 1:
        raise TomosegError(f"{path} holds {len(inside)} labels ({', '.join(map(str, inside))}): "
                           "give --label N for the feature's value (every label would become "
                           "this feature).")
    if label is not None and label not in inside:
        raise TomosegError(f"{path} has no voxel of label {label} (it holds "
                           f"{', '.join(map(str, inside)) or 'none'}).")
    return painted


def _slice_ranges(slices: list[int]) -> str:
    """'z 3-5, 9' for [3, 4, 5, 9]."""
    runs: list[list[int]] = []
    for z in slices:
        if runs and z == runs[-1][1] + 1:
            runs[-1][1] = z
        else:
            runs.append([z, z])
    text = ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs[:6])
    return "z " + text + (", ..." if len(runs) > 6 else "")


def cmd_boxes(args: argparse.Namespace) -> int:
    """Boxes from a ground-truth mask, placed as a user would (for tests and benchmarks)."""
    import numpy as np

    from ..annotations import boxes_from_truth, has_boxes, load_boxes, save_boxes
    from ..box_grid import check_box_grid
    from ..io.mrc import open_volume
    from ..io.paths import check_writable
    from ..session_store import is_session

    if is_session(args.output):  # its boxes.json was read by nothing: train used session.json
        raise TomosegError(f"{args.output} is an annotation session, whose boxes live in its "
                           "session.json: write the boxes to a folder of their own (train "
                           "--boxes takes either). Nothing was written.")
    truth, _ = open_volume(args.truth)
    painted = _require_mask(truth, args.truth, args.label)
    if args.label is not None:  # this feature's value only: the others are not it
        truth = np.asarray(truth) == args.label
    check_writable(args.output)
    if 0 < len(painted) < truth.shape[0]:
        print(f"tomoseg: {args.truth} holds '{args.feature}' on {len(painted)} of "
              f"{truth.shape[0]} slices ({_slice_ranges(painted)}); negative boxes are placed "
              "on those slices only, since an unpainted slice is not known to be free of it",
              file=sys.stderr)
    boxes = boxes_from_truth(truth, args.feature, args.positives, args.negatives, args.size,
                             args.seed, negative_slices=painted if len(painted) else None)
    if args.positives and not any(b.positive for b in boxes):
        raise TomosegError(f"{args.truth} has no place for a {args.size}-pixel positive box of "
                           f"'{args.feature}' (is the mask empty?); nothing was written.")
    n_neg = sum(not b.positive for b in boxes)
    if n_neg < args.negatives:
        print(f"tomoseg: only {n_neg} of {args.negatives} negative boxes found a "
              f"{args.size}-pixel square free of '{args.feature}'", file=sys.stderr)
    existing = load_boxes(args.output) if has_boxes(args.output) else []  # or its backup
    own = sum(b.feature == args.feature for b in existing)
    if own and not args.replace:
        raise TomosegError(f"{args.output} already holds {own} boxes of '{args.feature}' "
                           "(perhaps drawn by hand); add --replace to replace them, or choose "
                           "another folder. Nothing was written.")
    kept = [b for b in existing if b.feature != args.feature]
    grid = getattr(existing, "grid", None)
    if kept:  # one folder, one grid; the kept boxes' grid is unknown in older files
        check_box_grid(existing, truth.shape, args.output)
    save_boxes(args.output, kept + boxes, grid=truth.shape if grid or not kept else None)
    n_pos = sum(b.positive for b in boxes)
    print(f"{args.output}: {n_pos} positive and {len(boxes) - n_pos} negative boxes "
          f"for '{args.feature}'")
    return 0


def _synth_parser(sub) -> None:
    synth = sub.add_parser("synth", help="make a synthetic cellular tomogram with ground truth")
    synth.add_argument("output", type=Path, help="folder for the files")
    synth.add_argument("--name", default="synthetic")
    synth.add_argument("--shape", type=POSITIVE_INT, nargs=3, default=(128, 512, 512), metavar=("Z", "Y", "X"))
    synth.add_argument("--voxel-size", type=VOXEL_SIZE, default=10.0, help="Angstrom (default 10)")
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


def add_parsers(sub) -> None:
    _synth_parser(sub)

    info = sub.add_parser("info", help="print the geometry of MRC files")
    info.add_argument("files", nargs="+")
    info.set_defaults(func=cmd_info)

    clean = sub.add_parser("clean", help="copy an MRC file with NaN/Inf voxels replaced and its "
                           "axes in standard order (as IMOD, RELION and EMAN2 read them)")
    clean.add_argument("input")
    clean.add_argument("output")
    clean.add_argument("--overwrite", action="store_true", help="replace an existing output")
    clean.set_defaults(func=cmd_clean)

    points = sub.add_parser("points", help="convert particles between STAR and CSV")
    points.add_argument("input")
    points.add_argument("output")
    points.add_argument("--tomogram", required=True, help="the MRC the particles belong to")
    points.add_argument("--tomo-name", help="rlnTomoName (default: the tomogram's file name)")
    tilt_series_option(points)
    voxel_size_option(points, "a tomogram whose")
    points.add_argument("--overwrite", action="store_true", help="replace an existing output")
    points.set_defaults(func=cmd_points)

    boxes = sub.add_parser("boxes", help="place training boxes from a ground-truth mask")
    boxes.add_argument("truth", help="mask MRC of the feature: 0 outside, above 0 inside (e.g. "
                                     "from tomoseg synth); negatives go on slices that hold "
                                     "mask (paint every instance on the slices you paint)")
    boxes.add_argument("output", type=Path, help="box folder (boxes.json: boxes and masks, with a backup)")
    boxes.add_argument("--feature", required=True, type=feature_name)
    boxes.add_argument("--positives", type=COUNT, default=10)
    boxes.add_argument("--negatives", type=COUNT, default=50)
    boxes.add_argument("--size", type=number(int, 8, inclusive=True), default=64,
                       help="box size in pixels (at least 8)")
    boxes.add_argument("--seed", type=int, default=0)
    boxes.add_argument("--replace", action="store_true",
                       help="replace the boxes of --feature already in the folder")
    boxes.add_argument("--label", type=COUNT, metavar="N",
                       help="the feature's value in a label volume of several features "
                            "(required then; a 0/1 or 0/255 mask needs none)")
    boxes.set_defaults(func=cmd_boxes)
