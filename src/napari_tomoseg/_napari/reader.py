"""Reader contribution: MRC volumes as Image/Labels, STAR/CSV particles as Points.

Bad files raise a TomosegError whose message napari shows as a
notification; the viewer keeps running.
"""

from __future__ import annotations

from pathlib import Path

from ..io.mrc import COMPRESSED_SUFFIXES, MRC_SUFFIXES
from ..layer_data import frame_from_metadata, points_layer, volume_layer

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
    paths = [path] if isinstance(path, str) else list(path)
    layers = []
    for p in paths:
        if _suffix(p) in _POINT_SUFFIXES:
            layers.append(points_layer(p, frame=_open_tomogram_frame(p)))
        else:
            layers.append(volume_layer(p))
    return layers


def _open_tomogram_frame(path: str):
    """The geometry of the tomogram open in the current viewer these points belong to."""
    try:
        import napari

        viewer = napari.current_viewer()
    except Exception:  # no Qt application: reading headless
        return None
    if viewer is None:
        return None
    frames = [frame_from_metadata(layer.metadata) for layer in viewer.layers
              if layer._type_string == "image"]
    frames = [f for f in frames if f is not None]
    if not frames:
        return None
    if Path(path).suffix.lower() == ".star":
        import starfile

        try:
            particles = starfile.read(path, always_dict=True).get("particles")
            names = set(particles["rlnTomoName"].astype(str)) if "rlnTomoName" in particles else set()
        except Exception:
            names = set()
        for frame in frames:
            if frame.name in names:
                return frame
    return frames[-1]
