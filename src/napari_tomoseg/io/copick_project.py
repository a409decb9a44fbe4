"""Tomograms in, picks and segmentations out: a local copick project.

copick (github.com/copick/copick) is the CZ cryo-ET community's project
format. A filesystem project is a JSON config naming a read-only
``static_root`` and a writable ``overlay_root``; each run holds
``VoxelSpacing{vs:.3f}/{tomo_type}.zarr`` (OME-Zarr, z y x, scale in
Angstrom), ``Picks/{user}_{session}_{object}.json`` and
``Segmentations/{vs:.3f}_{user}_{session}_{object}.zarr``. We go through
copick's own library (the ``copick`` extra) so that overlay/static lookup,
name rules and the OME-Zarr layout are exactly what copick reads.

Conventions (copick 1.31, ``copick/models.py`` CopickPoint and
``copick/util/relion.py`` relion_rows_to_poses, ``copick/util/formats.py``):

* A point's ``location`` is x y z in Angstrom from the corner of the
  tomogram: voxel index i sits at i * voxel size (our pixel coordinates
  times the voxel size; the MRC header origin plays no part).
* ``transformation`` maps the particle (object) frame into the tomogram:
  its rotation block is RELION's A = Euler_angles2matrix(rot, tilt, psi)
  (relion src/euler.cpp), so a point u of the particle sits at
  location + A u. Its translation is a shift added to the location; we
  write 0.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CopickError, TomosegError  # CopickError: still importable from here
from .atomic import kept_until_written
from .mrc import VolumeInfo
from .particles import ANGLE_COLUMNS, AXES, TomogramFrame


@dataclass(frozen=True)
class CopickSource:
    """Where a tomogram lives in a copick project, and under which name our results go."""

    config: str
    run: str | None = None
    voxel_spacing: float = 10.0  # Angstrom
    tomo_type: str = "wbp"
    user_id: str = "tomoseg"
    session_id: str = "0"  # copick: "0" marks results written by a tool
    # (feature, object) pairs: results of a feature go under another object name (a model's
    # 'ribosome' as the project's 'ribosome-70s'); a feature not named keeps its own name
    objects: tuple[tuple[str, str], ...] = ()

    def at_run(self, run: str) -> "CopickSource":
        return replace(self, run=run)

    def object_for(self, feature: str) -> str:
        return dict(self.objects).get(feature, feature)


def _copick():
    try:
        import copick
    except ImportError as exc:
        raise CopickError("copick projects need the copick package: "
                          "pip install 'napari-tomoseg[copick]'") from exc
    return copick


def open_project(config: str | os.PathLike):
    """The copick root of a project config file (filesystem projects only)."""
    path = Path(config)
    if not path.is_file():
        raise CopickError(f"copick config {path} does not exist.")
    try:
        kind = json.loads(path.read_text()).get("config_type", "filesystem")
    except (json.JSONDecodeError, AttributeError) as exc:
        raise CopickError(f"{path} is not a copick config (not a JSON object).") from exc
    if kind != "filesystem":
        raise CopickError(f"{path} is a '{kind}' copick project; only local filesystem "
                          "projects are supported.")
    try:
        return _copick().from_file(str(path))
    except ValueError as exc:  # pydantic validation of the config
        raise CopickError(f"{path} is not a valid copick config: {exc}") from exc


def run_names(config: str | os.PathLike) -> list[str]:
    """Every run of the project, sorted."""
    return sorted(run.name for run in open_project(config).runs)


def _run(source: CopickSource, root=None):
    root = root or open_project(source.config)
    if not source.run:
        raise CopickError("name the copick run (--run).")
    run = root.get_run(source.run)
    if run is None:
        known = ", ".join(sorted(r.name for r in root.runs)[:10]) or "none"
        raise CopickError(f"copick run '{source.run}' is not in {source.config} (runs: {known}).")
    return run


def _tomogram(source: CopickSource):
    run = _run(source)
    spacing = run.get_voxel_spacing(source.voxel_spacing)
    if spacing is None:
        known = ", ".join(f"{v.voxel_size:g}" for v in run.voxel_spacings) or "none"
        raise CopickError(f"run '{source.run}' has no voxel spacing {source.voxel_spacing:g} A "
                          f"(it has: {known}).")
    found = spacing.get_tomograms(source.tomo_type)
    if not found:
        known = ", ".join(t.tomo_type for t in spacing.tomograms) or "none"
        raise CopickError(f"run '{source.run}' has no '{source.tomo_type}' tomogram at "
                          f"{source.voxel_spacing:g} A (it has: {known}).")
    return found[0]


def _zarr_voxel_size(group) -> float | None:
    """Voxel size of the first OME-Zarr level in Angstrom (copick writes unit 'angstrom')."""
    try:
        multiscale = group.attrs["multiscales"][0]
        scale = [t for t in multiscale["datasets"][0]["coordinateTransformations"]
                 if t["type"] == "scale"][0]["scale"]
    except (KeyError, IndexError, TypeError):
        return None
    units = {a.get("unit") for a in multiscale.get("axes", []) if a.get("type") == "space"}
    factor = {"nanometer": 10.0, "micrometer": 1e4}.get(units.pop() if len(units) == 1 else "", 1.0)
    return float(scale[-1]) * factor


def open_tomogram(source: CopickSource) -> tuple[np.ndarray, VolumeInfo]:
    """A run's tomogram, read whole into memory, in (z, y, x) order, with its geometry."""
    import zarr

    tomogram = _tomogram(source)
    group = zarr.open(tomogram.zarr(), mode="r")
    voxel = _zarr_voxel_size(group) or float(source.voxel_spacing)
    if abs(voxel - source.voxel_spacing) > 0.01:
        raise CopickError(f"the '{source.tomo_type}' tomogram of '{source.run}' declares "
                          f"{voxel:g} A voxels in its OME-Zarr, not {source.voxel_spacing:g}.")
    data = np.asarray(group["0"][:])
    if data.ndim != 3:
        raise CopickError(f"the copick tomogram of '{source.run}' is {data.ndim}D, not 3D.")
    info = VolumeInfo(shape=tuple(int(n) for n in data.shape), voxel_size=(voxel,) * 3,
                      origin=(0.0, 0.0, 0.0), dtype=data.dtype.name)
    return data, info


def tomogram_shape(source: CopickSource) -> tuple[int, int, int] | None:
    """(z, y, x) shape of the run's tomogram, or None when the run has none at that spacing."""
    import zarr

    try:
        tomogram = _tomogram(source)
    except CopickError:
        return None
    return tuple(int(n) for n in zarr.open(tomogram.zarr(), mode="r")["0"].shape)


def fingerprint(source: CopickSource) -> str:
    """Cheap identity of a copick tomogram (its array metadata and first chunk), for resumes."""
    import zarr

    array = zarr.open(_tomogram(source).zarr(), mode="r")["0"]
    digest = hashlib.sha1(json.dumps([source.run, source.voxel_spacing, source.tomo_type,
                                      list(array.shape), str(array.dtype)]).encode())
    first = tuple(slice(0, min(c, n)) for c, n in zip(array.chunks, array.shape))
    digest.update(np.ascontiguousarray(array[first]).tobytes())
    return digest.hexdigest()


def frame_of(source: CopickSource, info: VolumeInfo) -> TomogramFrame:
    """Our tomogram frame for a copick run: named after the run, corner origin."""
    return TomogramFrame(name=str(source.run), shape=info.shape,
                         voxel_size=info.isotropic_voxel_size, origin=(0.0, 0.0, 0.0))


def _object_name(root, source: CopickSource, feature: str) -> str:
    """The copick object for one of our features; it must be declared in the config."""
    names = {o.name: o for o in root.config.pickable_objects}
    name = source.object_for(feature)
    if name not in names:
        hint = " (copick names allow no '_' or spaces)" if any(c in name for c in "_ ") else ""
        raise CopickError(f"'{name}' is not a pickable object of this copick project"
                          f"{hint}; declared: {', '.join(sorted(names)) or 'none'}. Add it to "
                          f"the config's pickable_objects or give --copick-object {feature}=OBJECT.")
    return name


def check_result_objects(source: CopickSource, features) -> None:
    """Before any work: every feature is an object of the project, every --copick-object
    names a feature of the run, and our ids are valid (these were found only after whole
    tomograms had been segmented)."""
    root = open_project(source.config)
    _check_ids(source)
    unknown = sorted(set(dict(source.objects)) - set(features))
    if unknown:
        raise CopickError(f"--copick-object {unknown[0]}=...: '{unknown[0]}' is not a feature of "
                          f"this run (its features: {', '.join(features) or 'none'}).")
    names = [_object_name(root, source, feature) for feature in features]
    shared = sorted({n for n in names if names.count(n) > 1})
    if shared:  # the second would replace the first's results
        both = [f for f, n in zip(features, names) if n == shared[0]]
        raise CopickError(f"{' and '.join(both)} would both be filed as copick object "
                          f"'{shared[0]}'; give each feature its own object (--copick-object).")


def _check_ids(source: CopickSource) -> None:
    from copick.util.escape import sanitize_name

    for what, value in (("user id", source.user_id), ("session id", source.session_id)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ok = bool(value) and sanitize_name(value, suppress_warnings=True) == value
        if not ok:
            raise CopickError(f"copick {what} '{value}' may not contain '_', spaces or "
                              "any of <>:\"/\\|?*.")


def relion_matrix(rot: float, tilt: float, psi: float) -> np.ndarray:
    """RELION's A = Euler_angles2matrix(rot, tilt, psi), degrees (relion src/euler.cpp)."""
    from scipy.spatial.transform import Rotation

    # RELION's matrix rotates the axes (passive): it is the transpose of scipy's intrinsic ZYZ
    return Rotation.from_euler("ZYZ", [rot, tilt, psi], degrees=True).as_matrix().T


def relion_angles(matrix: np.ndarray) -> tuple[float, float, float]:
    """(rot, tilt, psi) in degrees whose RELION matrix is ``matrix``."""
    from scipy.spatial.transform import Rotation

    with warnings.catch_warnings():  # gimbal lock at tilt 0/180 is harmless here
        warnings.simplefilter("ignore")
        angles = Rotation.from_matrix(np.asarray(matrix).T).as_euler("ZYZ", degrees=True)
    return tuple(float(a) for a in angles)


def table_to_points(table: pd.DataFrame, frame: TomogramFrame) -> tuple[np.ndarray, np.ndarray]:
    """Copick locations (N, 3: x y z Angstrom) and transforms (N, 4, 4) of our pick table."""
    zyx = table[list(AXES)].to_numpy(dtype=float)
    locations = zyx[:, ::-1] * frame.voxel_size
    transforms = np.tile(np.eye(4), (len(table), 1, 1))
    if set(ANGLE_COLUMNS).issubset(table.columns):
        for i, angles in enumerate(table[list(ANGLE_COLUMNS)].to_numpy(dtype=float)):
            transforms[i, :3, :3] = relion_matrix(*angles)
    return locations, transforms


def _writable_run(source: CopickSource, feature: str):
    """(run, object name) to write results of ``feature`` into, ids and object checked."""
    root = open_project(source.config)
    _check_ids(source)
    return _run(source, root), _object_name(root, source, feature)


def write_picks(source: CopickSource, table: pd.DataFrame, frame: TomogramFrame,
                feature: str, overwrite: bool = False) -> str:
    """Store picks as copick points of object ``feature``; returns the file copick wrote."""
    run, name = _writable_run(source, feature)
    existing = run.get_picks(object_name=name, user_id=source.user_id,
                             session_id=source.session_id)
    if existing and not overwrite:
        raise CopickError(f"run '{source.run}' already has '{name}' picks by "
                          f"{source.user_id}/{source.session_id}; use --overwrite or another "
                          "--session-id.")
    picks = run.new_picks(name, source.session_id, user_id=source.user_id, exist_ok=True)
    locations, transforms = table_to_points(table, frame)
    picks.meta.trust_orientation = set(ANGLE_COLUMNS).issubset(table.columns)
    picks.meta.voxel_spacing = float(frame.voxel_size)
    scores = None
    if "score" in table.columns:
        scores = np.nan_to_num(table["score"].to_numpy(dtype=float), nan=1.0)
    # copick truncates the file, then writes it: the earlier picks wait aside until it is done
    with kept_until_written(picks.fs, picks.path, CopickError):
        picks.from_numpy(locations, transforms, scores=scores)
    return str(picks.path)


def read_picks(source: CopickSource, feature: str, voxel_size: float) -> pd.DataFrame:
    """Copick points as our table (pixels at ``voxel_size``, RELION angles, score)."""
    run = _run(source)
    name = source.object_for(feature)
    found = run.get_picks(object_name=name, user_id=source.user_id,
                          session_id=source.session_id)
    if not found:
        raise CopickError(f"run '{source.run}' has no '{name}' picks by "
                          f"{source.user_id}/{source.session_id}.")
    picks = found[0]
    locations, transforms = picks.numpy()
    centres = (locations + transforms[:, :3, 3]).reshape(-1, 3)  # copick: centre = location + shift
    table = pd.DataFrame(centres[:, ::-1] / voxel_size, columns=list(AXES))
    if picks.trust_orientation:
        angles = [relion_angles(t[:3, :3]) for t in transforms]
        table[list(ANGLE_COLUMNS)] = np.asarray(angles).reshape(-1, 3)
    table["score"] = picks.scores()
    return table


def write_segmentation(source: CopickSource, mask: np.ndarray, feature: str,
                       voxel_size: float, overwrite: bool = False) -> str:
    """Store a 0/1 mask as copick's binary segmentation of object ``feature`` (OME-Zarr).

    Filed under the run's voxel spacing the tomogram was found at: copick compares
    spacings with ==, so the OME-Zarr's float32 13.479999542 for 13.48 missed the
    existing segmentation (and replaced it unasked), and a --voxel-size given besides
    filed a mask of the tomogram's shape under another spacing."""
    spacing = float(source.voxel_spacing)
    if abs(float(voxel_size) - spacing) > 0.005 * spacing:
        raise CopickError(f"the segmentation has {float(voxel_size):g} A voxels but the run's "
                          f"tomogram is at voxel spacing {spacing:g} A: leave --voxel-size out "
                          "with --copick (the project's spacing is the voxel size).")
    run, name = _writable_run(source, feature)
    if run.get_voxel_spacing(spacing) is None:
        run.new_voxel_spacing(spacing)
    query = dict(name=name, user_id=source.user_id, session_id=source.session_id,
                 voxel_size=spacing, is_multilabel=False)
    if run.get_segmentations(**query) and not overwrite:
        raise CopickError(f"run '{source.run}' already has a '{name}' segmentation by "
                          f"{source.user_id}/{source.session_id}; use --overwrite or another "
                          "--session-id.")
    segmentation = run.new_segmentation(spacing, name, source.session_id, False,
                                        user_id=source.user_id, exist_ok=True)
    with kept_until_written(segmentation.fs, segmentation.path, CopickError):  # chunk by chunk
        segmentation.from_numpy((np.asarray(mask) > 0).astype(np.uint8))
    return str(segmentation.path)


def read_segmentation(source: CopickSource, feature: str, user_id: str | None = None,
                      session_id: str | None = None) -> tuple[np.ndarray, VolumeInfo]:
    """A binary copick segmentation (ours or anyone's, by ``user_id``/``session_id``,
    default the source's) as a 0/1 float mask with its geometry.

    Any value above 0 is the object: other tools store the object's label (4, say), which
    read as a 0-255 probability map stayed under every threshold and gave no picks."""
    import zarr

    run = _run(source)
    user_id, session_id = user_id or source.user_id, session_id or source.session_id
    name = source.object_for(feature)
    found = run.get_segmentations(name=name, user_id=user_id, session_id=session_id,
                                  voxel_size=source.voxel_spacing, is_multilabel=False)
    if not found:
        raise CopickError(f"run '{source.run}' has no '{name}' segmentation by "
                          f"{user_id}/{session_id} at {source.voxel_spacing:g} A.")
    group = zarr.open(found[0].zarr(), mode="r")
    data = np.asarray(group["0"][:])
    if np.issubdtype(data.dtype, np.integer) or data.dtype == bool:
        data = (data > 0).astype(np.float32)
    voxel = _zarr_voxel_size(group) or float(source.voxel_spacing)
    return data, VolumeInfo(shape=tuple(int(n) for n in data.shape), voxel_size=(voxel,) * 3,
                            origin=(0.0, 0.0, 0.0), dtype=data.dtype.name)


def check_extent(source: CopickSource, shape: tuple[int, int, int], voxel_size: float) -> None:
    """Refuse results whose volume does not cover the run's tomogram (picks would misplace)."""
    tomo = tomogram_shape(source)
    if tomo is None:
        return
    ours = np.asarray(shape) * voxel_size
    theirs = np.asarray(tomo) * source.voxel_spacing
    if np.any(np.abs(ours - theirs) > max(voxel_size, source.voxel_spacing)):
        raise CopickError(f"the volume ({' x '.join(map(str, shape))} voxels of {voxel_size:g} A) "
                          f"does not span the '{source.tomo_type}' tomogram of '{source.run}' "
                          f"({' x '.join(map(str, tomo))} voxels of {source.voxel_spacing:g} A).")
