"""``tomoseg batch``: segment, merge, pick and trace many tomograms on dask (see
``napari_tomoseg.batch``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InvalidSettingsError, TomosegError
from . import arguments
from .arguments import POSITIVE, POSITIVE_INT, copick_options, copick_source, tilt_series_option
from .arguments import voxel_size_option
from .progress import progress_bar
from .rescore import rescore_cut


def _tomograms(args: argparse.Namespace, copick) -> list[str]:
    from ..batch_inputs import expand_inputs

    if copick is not None and args.tomograms:
        raise TomosegError("give tomogram files or --copick, not both.")
    if copick is not None:
        from ..io.copick_project import run_names

        return args.run or run_names(copick.config)
    return expand_inputs(args.tomograms)


def _print_summary(rows: list[dict], pick: tuple[str, ...], output,
                   trace: tuple[str, ...] = ()) -> int:
    header = ["tomogram", "status", *(f"{f} picks" for f in pick),
              *(f"{f} filaments" for f in trace), "s", "note"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))  # as many cells as rows
    for row in rows:
        note = ((row.get("error") or "").splitlines()[0] if row.get("error")
                else "probability maps of the last run reused" if row.get("reused_maps") else "")
        cells = [row["name"], row["status"], *(str(row.get("picks", {}).get(f, "")) for f in pick),
                 *(str(row.get("filaments", {}).get(f, "")) for f in trace),
                 f"{row.get('seconds', 0):.1f}", note]  # a cell per column, empty or not
        print("| " + " | ".join(cells) + " |")
    for row in rows:  # what the workers warned of, one line each (not from earlier runs)
        for message in row.get("warnings", []) if row["status"] != "skipped" else []:
            print(f"tomoseg: warning: {row['name']}: {message}", file=sys.stderr)
    failed = sum(r["status"] == "failed" for r in rows)
    print(f"{len(rows) - failed} of {len(rows)} tomograms finished; outputs in {output}")
    return 1 if failed else 0


def _model_features(args: argparse.Namespace, traced: dict[str, float]) -> list[str]:
    """The models' features, checked against --pick and --trace before any tomogram is
    segmented."""
    from ..nn.model_file import load_model

    features = [load_model(path).feature for path in args.model]
    for option, wanted in (("--pick", args.pick or ()), ("--trace", traced)):
        missing = [f for f in wanted if f not in features]
        if missing:
            raise InvalidSettingsError(f"{option} {', '.join(missing)}: no model of that "
                                       f"feature (the models are of {', '.join(features)}).")
    return features


def _traced(args: argparse.Namespace) -> dict[str, float]:
    """--trace FEATURE[=DIAMETER] as {feature: diameter (A)}, checked before any work."""
    from ..features import FILAMENT_DIAMETERS
    from ..filaments import FilamentSettings

    traced = {}
    for given in args.trace or ():
        feature, equals, diameter = (part.strip() for part in given.partition("="))
        if not feature or (equals and not diameter):
            raise InvalidSettingsError(f"--trace {given!r}: give FEATURE or FEATURE=DIAMETER "
                                       "(A), e.g. --trace microtubule or --trace actin=70.")
        if feature in traced:
            raise InvalidSettingsError(f"--trace {feature} is given twice.")
        if not diameter and feature not in FILAMENT_DIAMETERS:
            raise InvalidSettingsError(f"--trace {feature}: give its diameter, e.g. "
                                       f"--trace {feature}=250 (A); tomoseg knows it for "
                                       f"{', '.join(FILAMENT_DIAMETERS)}.")
        try:
            value = float(diameter) if diameter else FILAMENT_DIAMETERS[feature]
            FilamentSettings(diameter=value)  # a finite, positive number
            if value < 10:
                raise ValueError(value)
        except (ValueError, InvalidSettingsError):
            raise InvalidSettingsError(f"--trace {given}: the diameter must be a number of "
                                       "Angstrom, at least 10.") from None
        traced[feature] = value
    return traced


def _rescored(args: argparse.Namespace) -> tuple[dict[str, str], float | str | None]:
    """--rescore FEATURE=REFERENCE as {feature: reference path}, and --rescore-cut; checked
    (the reference read) before any tomogram is segmented."""
    from ..averaging.template_scores import TemplateSettings, checked_reference
    from ..io.mrc import open_volume

    references: dict[str, str] = {}
    for given in args.rescore or ():
        feature, equals, path = (part.strip() for part in given.partition("="))
        if not feature or not equals or not path:
            raise InvalidSettingsError(f"--rescore {given!r}: give FEATURE=REFERENCE.mrc, e.g. "
                                       "--rescore ribosome=average.mrc.")
        if feature not in (args.pick or ()):
            raise InvalidSettingsError(f"--rescore {feature}: rescoring scores picks; add "
                                       f"--pick {feature}.")
        if feature in references:
            raise InvalidSettingsError(f"--rescore {feature} is given twice.")
        checked_reference(open_volume(path)[0])  # a cube of 12-96 voxels, finite, not flat
        references[feature] = str(Path(path).resolve())
    if args.rescore_cut != "none" and not references:
        raise InvalidSettingsError("--rescore-cut cuts rescored picks: add --rescore "
                                   "FEATURE=REFERENCE.mrc.")
    if args.tilt_range is not None:
        if not references:
            raise InvalidSettingsError("--tilt-range gives rescoring's reference the missing "
                                       "wedge: add --rescore FEATURE=REFERENCE.mrc.")
        TemplateSettings(tilt_min=args.tilt_range[0], tilt_max=args.tilt_range[1])  # checked
    return references, None if args.rescore_cut == "none" else args.rescore_cut


def _check_references_fit(references: dict[str, str], tomograms: list[str],
                          voxel_size: float | None) -> None:
    """A reference at another voxel size than the tomograms' is refused before any tomogram is
    segmented: it failed each one after its segmentation."""
    from ..averaging.files import open_reference
    from ..io.mrc_header import read_header, sane_voxel_size

    sizes = set()
    for path in tomograms:
        try:
            size = voxel_size or read_header(path)[1].isotropic_voxel_size
        except (TomosegError, ValueError):  # a bad file becomes a failed row of its own
            continue
        if sane_voxel_size(size):  # none in the header: that tomogram's row says so
            sizes.add(round(size, 3))
    for reference in references.values():
        for size in sorted(sizes):
            open_reference(reference, size)


def cmd_batch(args: argparse.Namespace) -> int:
    from .. import batch  # looked up at call time: tests replace batch.make_client
    from .. import batch_inputs
    from ..io.paths import check_writable

    copick = copick_source(args)
    if copick is not None and args.trace:
        raise TomosegError("--trace writes files into --output; it does not write into a "
                           "copick project yet: leave --copick out, or --trace.")
    tomograms = _tomograms(args, copick)
    traced = _traced(args)  # before the models are read: a typo costs nothing
    features = _model_features(args, traced)
    rescore, rescore_cut = _rescored(args)
    if copick is None:
        _check_references_fit(rescore, tomograms, args.voxel_size)
    settings = batch.BatchSettings(
        copick=copick, models=tuple(str(Path(m).resolve()) for m in args.model),
        output=str(args.output), thresholds=arguments.thresholds(args.threshold, features),
        artifacts=arguments.artifacts(args.artifact),
        min_sizes=arguments.min_sizes(args.min_size, features), pick=tuple(args.pick or ()),
        diameter=args.diameter, trace=traced, dtype=args.dtype, device=args.device,
        precision=args.precision,
        tilt_series_pixel_size=args.tilt_series_pixel_size, voxel_size=args.voxel_size,
        rescore=rescore, rescore_cut=rescore_cut,
        tilt_range=tuple(args.tilt_range or batch.DEFAULT_TILT_RANGE))
    for feature in settings.trace:  # a cut at 0 takes every voxel for a filament's axis
        if settings.thresholds.get(feature, 0.5) <= 0:
            raise InvalidSettingsError(f"--threshold {feature}=0: tracing needs a threshold "
                                       "above 0.")
    check_writable(args.output)
    tomograms, skipped = batch_inputs.split_own_outputs(tomograms, settings)
    if skipped:  # a rerun with -o the input folder: the first run's maps match the glob
        print(batch_inputs.skipped_message(skipped), file=sys.stderr)
    client = batch.make_client(args.workers, args.scheduler, args.jobqueue)
    print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
    counts = {"done": 0, "failed": 0, "skipped": 0}
    with progress_bar("tomograms", unit="tomo") as show:
        def progress(row, done, total):
            counts[row["status"]] = counts.get(row["status"], 0) + 1
            show(done, total, ", ".join(f"{k}={v}" for k, v in counts.items()))
        try:
            rows = batch.run_batch(tomograms, settings, client=client, progress=progress,
                                   overwrite=args.overwrite)
        finally:
            client.close()
    return _print_summary(rows, settings.pick, args.output, tuple(settings.trace))


def add_parsers(sub) -> None:
    p = sub.add_parser("batch", help="segment, merge, pick and trace many tomograms (dask)")
    p.add_argument("tomograms", nargs="*", help="paths or globs (quote them), or --copick")
    p.add_argument("--model", "-m", action="append", required=True)
    p.add_argument("--output", "-o", type=Path, required=True)
    p.add_argument("--threshold", action="append", metavar="FEATURE=VALUE")
    p.add_argument("--min-size", action="append", metavar="FEATURE=NM3",
                   help="drop the feature's connected pieces smaller than this volume in nm^3 "
                        "from the label volume (default 0: keep all; see tomoseg merge)")
    p.add_argument("--artifact", action="append", metavar="ARTIFACT[=FEATURE[,FEATURE]]",
                   help="remove the artifact's voxels from these features (default: from every "
                        "other feature)")
    p.add_argument("--pick", action="append", metavar="FEATURE", help="features to pick")
    p.add_argument("--diameter", type=POSITIVE, default=250.0, help="particle diameter (A)")
    p.add_argument("--rescore", action="append", metavar="FEATURE=REFERENCE",
                   help="score the feature's picks against this map (tomoseg rescore: an "
                        "average of good picks, or an EMDB map at the tomograms' voxel size); "
                        "the STAR gets rlnTomosegReferenceScore")
    p.add_argument("--rescore-cut", type=rescore_cut, default="none",
                   help="drop rescored picks below: auto (each tomogram's median - 2 MADs), "
                        "a score, or none (default: keep all)")
    p.add_argument("--tilt-range", type=float, nargs=2, metavar=("MIN", "MAX"),
                   help="the tilt series' range about y in degrees, for rescoring's missing "
                        "wedge (default: -60 60)")
    p.add_argument("--trace", action="append", metavar="FEATURE[=DIAMETER]",
                   help="trace the feature's filaments (tomoseg trace): NAME_FEATURE_filaments"
                        ".star and NAME_FEATURE_tubes.mrc; diameter in A (default: microtubule "
                        "250, actin 70)")
    tilt_series_option(p)
    voxel_size_option(p, "tomograms whose")
    p.add_argument("--workers", type=POSITIVE_INT,
                   help="local workers (default: GPUs, else <= 4 cores)")
    p.add_argument("--scheduler", help="address of a running dask scheduler")
    p.add_argument("--jobqueue", choices=("slurm",), help="start workers through SLURM")
    p.add_argument("--device", default="auto")
    p.add_argument("--overwrite", action="store_true",
                   help="replace files in --output that no batch there wrote")
    arguments.dtype_option(p)
    arguments.precision_option(p)
    copick_options(p, several_runs=True)
    p.set_defaults(func=cmd_batch)
