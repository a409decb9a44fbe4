"""Segment, merge, pick and trace many tomograms on dask.distributed, resumably.

One dask task per tomogram runs ``process_tomogram``: the same segment,
merge and pick jobs (``napari_tomoseg.jobs``) as the CLI and the widgets,
each writing its files under temporary names renamed when complete. The client records each finished tomogram in
``manifest.json`` (``batch_manifest``), written atomically, so a rerun
skips finished work, reuses the probability maps when only thresholds,
artifacts or picking changed, and a killed run never leaves a half file
that looks finished. A bad tomogram becomes a "failed" row in
the summary; the others go on. A worker that dies mid-task has its
tomogram rerun by dask on another worker.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .batch_combined import write_combined_star
from .batch_inputs import skipped_message, split_own_outputs, unique_names
from .batch_cluster import make_client
from .batch_manifest import Manifest
from .batch_outputs import check_batch_outputs, planned_outputs
from .batch_particles import DEFAULT_TILT_RANGE, pick_and_trace
from .session import fingerprint
from .errors import TomosegError
from .io.atomic import clean_stale_partials
from .io.copick_project import CopickSource
from .io.folder_lock import folder_lock


@dataclass(frozen=True)
class BatchSettings:
    models: tuple[str, ...]
    output: str
    thresholds: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)
    min_sizes: dict = field(default_factory=dict)  # {feature: nm^3}: smaller pieces dropped
    pick: tuple[str, ...] = ()  # features to pick
    diameter: float = 250.0  # Angstrom
    trace: dict = field(default_factory=dict)  # {feature: diameter (A)} traced as filaments
    dtype: str = "float16"
    device: str = "auto"
    precision: str = "auto"  # bfloat16 where the CPU has it natively; float32: reproducible
    copick: CopickSource | None = None  # inputs are then run names of this project
    tilt_series_pixel_size: float | None = None  # Angstrom, RELION's; None = unknown
    voxel_size: float | None = None  # Angstrom, for MRC headers without one (--voxel-size)
    rescore: dict = field(default_factory=dict)  # {feature: reference MRC}: tomoseg rescore
    rescore_cut: float | str | None = None  # "auto", a score, or None: every pick kept
    # degrees about y: the tilt series' range, whose missing wedge rescoring gives the reference
    tilt_range: tuple[float, float] = DEFAULT_TILT_RANGE

    def digest(self) -> str:
        record = asdict(self)
        record["models"] = [fingerprint(m) for m in self.models]
        record.pop("output")
        if record["voxel_size"] is None:  # runs from before the option keep their digest
            record.pop("voxel_size")
        if record["precision"] == "auto":  # likewise
            record.pop("precision")
        for optional in ("trace", "min_sizes"):  # likewise, when not given
            if not record[optional]:
                record.pop(optional)
        if not record["rescore"] or tuple(self.tilt_range) == DEFAULT_TILT_RANGE:
            record.pop("tilt_range")  # likewise; only rescoring reads it
        if not record["rescore"]:  # likewise
            record.pop("rescore"), record.pop("rescore_cut")
        else:  # the reference's content, not its name, decides the scores
            record["rescore"] = {f: fingerprint(r) for f, r in self.rescore.items()}
        if record["copick"] is not None and not record["copick"]["objects"]:  # likewise
            record["copick"].pop("objects")
        # 2: rlnCoordinate* as RELION reads them; 3: picks pass the roundness test. Older redone
        record["star_pixels"] = 3 if self.pick else 2
        return _hash(record)

    def segment_digest(self) -> str:
        """What the probability maps depend on: a rerun that changes only the rest reuses them."""
        return _hash({"models": [fingerprint(m) for m in self.models], "dtype": self.dtype,
                      "precision": self.precision, "voxel_size": self.voxel_size})


def _hash(record: dict) -> str:
    return hashlib.sha1(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def _open_input(path: str, settings: BatchSettings):
    """A tomogram file, or with ``settings.copick`` the tomogram of run ``path``.

    A file whose header has no usable voxel size (0, negative, absurd) is
    refused unless ``settings.voxel_size`` gives one: it is never taken as
    1 A, which would rescale the data to the model's voxel size by a wrong
    factor (silently, when that factor is small).
    """
    from .io import copick_project
    from .io.mrc import open_volume, require_voxel_size

    if settings.copick is not None:
        return copick_project.open_tomogram(settings.copick.at_run(path))
    volume, info = open_volume(path)
    return volume, require_voxel_size(info, path, settings.voxel_size,
                                      hint="give it with tomoseg batch --voxel-size")


def _input_fingerprint(path: str, settings: BatchSettings) -> str:
    from .io import copick_project

    if settings.copick is not None:
        return copick_project.fingerprint(settings.copick.at_run(path))
    return fingerprint(path)


def _to_copick(source: CopickSource, labels, merge, tables: dict, voxel: float) -> list[str]:
    """Each feature's merged mask as a copick segmentation, and the picks as copick points."""
    from .io.copick_project import write_picks, write_segmentation
    from .io.particles import TomogramFrame

    written = [write_segmentation(source, labels == merge.label_of(f), f, voxel, overwrite=True)
               for f in merge.features]
    frame = TomogramFrame(str(source.run), labels.shape, voxel)
    written += [write_picks(source, table, frame, f, overwrite=True) for f, table in tables.items()]
    return written


def _chain_jobs(path: str, settings: BatchSettings, name: str, models: Sequence | None,
                result: dict, ready_maps: dict[str, str] | None = None) -> None:
    """segment -> merge -> pick (and rescore) and trace, the jobs every face runs; outputs listed in
    ``result``.

    ``ready_maps`` ({feature: file name in the output folder}): maps of an
    earlier run with the same input and segmentation settings, used instead
    of segmenting again.
    """
    from .jobs import run_job
    from .jobs.merge import merge_maps
    from .jobs.segment import SegmentOptions, segment_tomogram
    from .merge import MergeSettings, artifact_rules
    from .nn.model_file import load_model
    from .tomogram import volume_frame

    out = Path(settings.output)
    out.mkdir(parents=True, exist_ok=True)
    volume, info = _open_input(path, settings)
    voxel = info.isotropic_voxel_size
    models = models if models is not None else [load_model(p) for p in settings.models]
    thresholds = dict(settings.thresholds)
    for model in models:
        thresholds.setdefault(model.feature, model.threshold)  # calibrated when trained
    if ready_maps:
        maps = {feature: out / file for feature, file in ready_maps.items()}
        result["reused_maps"] = True
    else:
        maps = run_job(segment_tomogram(
            volume, voxel, info.origin, models, [out / f"{name}_{m.feature}.mrc" for m in models],
            SegmentOptions(dtype=settings.dtype, device=settings.device, overwrite=True,
                           precision=settings.precision), tomogram=name))
    result["maps"] = {f: {"file": t.name, "fingerprint": fingerprint(t)} for f, t in maps.items()}
    result["outputs"] += [target.name for target in maps.values()]
    features = list(maps)
    merge = MergeSettings(features=features, thresholds=thresholds, artifacts=artifact_rules(
        {a: list(v) for a, v in settings.artifacts.items()}, features),
        min_sizes=dict(settings.min_sizes))
    labels = run_job(merge_maps(maps, merge, out / f"{name}_labels.mrc", info.voxel_size,
                                info.origin, overwrite=True))
    result["outputs"].append(f"{name}_labels.mrc")
    frame = volume_frame(info, name, settings.tilt_series_pixel_size)
    white = {m.feature: m.preprocess.invert for m in models}  # trained on protein-white data
    tables = pick_and_trace(maps, frame, settings, thresholds, out, name, result, volume, white)
    if settings.copick is not None:
        result["copick"] = _to_copick(settings.copick.at_run(path), labels, merge, tables, voxel)


def process_tomogram(path: str, settings: BatchSettings, name: str | None = None,
                     models: Sequence | None = None, ready_maps: dict[str, str] | None = None
                     ) -> dict:
    """All the work for one tomogram; never raises (failures are reported in the result).

    ``name`` prefixes its outputs (default: the file name; see ``unique_names``).
    ``models`` (``TrainedModel``s) default to ``settings.models``, loaded for this
    call: a dask worker keeps no models between tomograms. ``ready_maps``: see
    ``_chain_jobs``.
    """
    from .tomogram import tomogram_name

    start = time.perf_counter()
    name = name or tomogram_name(path)
    result = {"tomogram": path, "name": name, "status": "failed", "picks": {}, "outputs": [],
              "seconds": 0.0, "error": None, "worker_pid": os.getpid()}
    with warnings.catch_warnings(record=True) as said:  # a worker's warnings went to its
        warnings.simplefilter("always")  # own stderr, several lines each: into the summary
        try:
            _chain_jobs(path, settings, name, models, result, ready_maps)
            result["status"] = "done"
        except TomosegError as exc:
            result["error"] = str(exc)
        except Exception as exc:  # a bug: keep the traceback for the report
            result["error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
    result["warnings"] = list(dict.fromkeys(str(w.message) for w in said
                                            if issubclass(w.category, UserWarning)))
    result["seconds"] = round(time.perf_counter() - start, 2)
    return result


def _begin(manifest: Manifest, todo: list[str], names: dict[str, str], features: list[str],
           settings: BatchSettings, inputs: Sequence[str], overwrite: bool) -> None:
    """Check the outputs (``batch_outputs``), then list the tomograms about to run with their
    planned outputs as running: killed while rewriting them, they are not done, and their
    files stay the batch's own for the rerun."""
    planned = {p: (names[p], planned_outputs(names[p], features, settings.pick, settings.trace)
                   if settings.copick is None else []) for p in todo}
    if settings.copick is None:
        recorded = {o for e in manifest.entries.values() for o in e.get("outputs", [])}
        check_batch_outputs(Path(settings.output), [names[p] for p in todo], features,
                            settings.pick, _protected(inputs, Path(settings.output), recorded),
                            recorded, overwrite, settings.trace)
    manifest.begin(todo, planned)


def _protected(inputs: Sequence[str], out: Path, recorded: set[str]) -> list[str]:
    """The inputs no output may replace, even with --overwrite: every file given, skipped as
    tomoseg's output or not, except the folder's own batch outputs the manifest lists (a
    rerun into the input folder replaces those)."""
    own = {out.resolve() / name for name in recorded}
    return [p for p in inputs if Path(p).resolve() not in own]


def run_batch(tomograms: Sequence[str], settings: BatchSettings, client=None,
              progress: Callable[[dict, int, int], None] | None = None,
              overwrite: bool = False) -> list[dict]:
    """Process every tomogram (skipping finished ones); returns one summary row each. One
    run at a time per output folder (``folder_lock``). Files there that no batch wrote
    are replaced only with ``overwrite`` (see ``batch_outputs``)."""
    with folder_lock(settings.output):
        return _run_batch(tomograms, settings, client, progress, overwrite)


def _run_batch(tomograms: Sequence[str], settings: BatchSettings, client, progress,
               overwrite: bool) -> list[dict]:
    from distributed import as_completed

    from .nn.model_file import load_model

    out = Path(settings.output)
    features = [load_model(p).feature for p in settings.models]
    if settings.copick is not None:  # objects and ids before any tomogram is segmented
        from .io.copick_project import check_result_objects

        check_result_objects(settings.copick, features)
    clean_stale_partials(out)
    inputs = list(tomograms)  # skipped ones too: never written over (``_protected``)
    tomograms, skipped = split_own_outputs(tomograms, settings)
    if skipped:
        warnings.warn(skipped_message(skipped), stacklevel=2)
    manifest = Manifest(out)
    digest, segment_digest = settings.digest(), settings.segment_digest()
    names = manifest.names(tomograms, unique_names(tomograms))
    rows, todo, prints, ready = [], [], {}, {}
    for path in tomograms:
        try:
            prints[path] = _input_fingerprint(path, settings)
        except (OSError, TomosegError) as exc:
            rows.append({"tomogram": path, "name": names[path], "status": "failed",
                         "picks": {}, "seconds": 0.0, "error": str(exc), "outputs": []})
            continue
        if manifest.finished(path, prints[path], digest, names[path]):
            rows.append({**manifest.entries[path], "status": "skipped"})
        else:
            todo.append(path)
            ready[path] = manifest.reusable_maps(path, prints[path], segment_digest, names[path])
    _begin(manifest, todo, names, features, settings, inputs, overwrite)
    own_client = client is None
    client = client or make_client()
    try:
        futures = {client.submit(process_tomogram, path, settings, names[path], None,
                                 ready[path], pure=False, retries=1): path for path in todo}
        done = len(rows)
        for future in as_completed(futures):
            result = future.result()
            manifest.record(result, prints[result["tomogram"]], digest, segment_digest)
            rows.append(result)
            done += 1
            if progress:
                progress(result, done, len(tomograms))
    finally:
        if own_client:
            client.close()
    given = set(tomograms)  # the folder's other tomograms finished with these settings stay
    earlier = [{**entry, "status": "skipped"} for path, entry in manifest.entries.items()
               if path not in given and entry.get("status") == "done"
               and entry.get("settings") == digest]
    write_combined_star(rows + earlier, out, settings)
    order = {p: i for i, p in enumerate(tomograms)}
    return sorted(rows, key=lambda r: order.get(r["tomogram"], 0))

