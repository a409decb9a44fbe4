"""Reader contribution: MRC volumes as Image/Labels, STAR/CSV particles as Points.

STAR particles are placed on the tomogram they name, found beside the
file. Bad files raise a TomosegError whose message napari shows as a
notification; the viewer keeps running.
"""

from __future__ import annotations

from pathlib import Path

from ..io.mrc import COMPRESSED_SUFFIXES, MRC_SUFFIXES
from ..errors import InvalidCoordinatesError
from ..layer_data import frame_for_particles, points_layer, volume_layer

_POINT_SUFFIXES = (".star", ".csv")


def _suffix(path: str) -> str:
    p = Path(path)
    if p.suffix.lower() in COMPRESSED_SUFFIXES:
        return Path(p.stem).suffix.lower()
    return p.suffix.lower()


def get_reader(path):
    """Return a reader for MRC / STAR / CSV paths, or None for anything else."""
    paths = [path] if isinstance(path, str) else list(path)
    if not paths or not all(isinstance(p, str) for p in paths):
        return None
    if all(_suffix(p) in MRC_SUFFIXES + _POINT_SUFFIXES for p in paths):
        return read_files
    return None


def read_files(path) -> list:
    """Layers placed from the files alone, never from what the viewer holds.

    A STAR file's particles are placed on the tomogram its rlnTomoName names,
    found next to it (see ``layer_data.frame_for_particles``).
    """
    paths = [path] if isinstance(path, str) else list(path)
    layers = []
    for p in paths:
        if _suffix(p) in _POINT_SUFFIXES:
            layers.append(_points(p))
        else:
            layers.append(volume_layer(p))
            _say_missing_voxel_size(layers[-1])
    return layers


def _say_missing_voxel_size(layer_data) -> None:
    """A header without a usable voxel size opened silently at 1 A per voxel (a trial)."""
    from napari.utils.notifications import show_warning

    _, kwargs, _ = layer_data
    if kwargs["metadata"]["tomoseg"].get("voxel_size_in_header") is False:
        show_warning(f"{kwargs['name']}: the header has no usable voxel size, so it is shown "
                     "at 1 A per voxel; enter the real one in the TomoSeg dock's 'Voxel size "
                     "(A)' (section 1) before training, picking or averaging.")


def _points(path: str):
    frame = frame_for_particles(path)
    try:
        return points_layer(path, frame=frame)
    except InvalidCoordinatesError as exc:
        if frame is not None or "centred coordinates" not in str(exc):
            raise
        raise InvalidCoordinatesError(
            f"{Path(path).name}: RELION places particles relative to their tomogram's centre, "
            "and the tomogram its rlnTomoName names is not beside the file: put it there "
            "(NAME.mrc or NAME.rec), or convert with 'tomoseg points --tomogram T.mrc "
            f"{Path(path).name} picks.csv'.") from exc
