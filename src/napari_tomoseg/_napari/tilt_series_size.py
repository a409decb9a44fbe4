"""The tilt-series pixel size of a tomogram layer: RELION's rlnTomoTiltSeriesPixelSize.

It is the pixel size of the original (unbinned) tilt series, not the voxel
size of the tomogram picked on, and no MRC header carries it: the user types
it (section 1 of the TomoSeg widget), the session remembers it, and it
travels in the layer's ``metadata['tomoseg']`` (see ``layer_data``), from
where every STAR written for picks on that tomogram takes it: File > Save,
the Pick widget's export and the Average widget. 0 means unknown: the STAR
writers then warn and write no optics block, never a guessed value.
"""

from __future__ import annotations

from ..errors import TomosegError
from ..io.mrc import VOXEL_SIZE_RANGE, sane_voxel_size
from ..layer_data import clean_tomo_name, frame_from_metadata, geometry_metadata

KEY = "tilt_series_pixel_size"


def tilt_series_pixel_size_of(layer) -> float | None:
    """The layer's tilt-series pixel size in Angstrom; None when unknown."""
    if layer is None:
        return None
    value = (layer.metadata.get("tomoseg") or {}).get(KEY)
    return float(value) if value else None


def _same_tomogram(meta: dict, frame) -> bool:
    return (meta.get("tomo_name") == frame.name
            and tuple(meta.get("shape") or ()) == tuple(frame.shape)
            and float(meta.get("voxel_size") or 0.0) == float(frame.voxel_size))


def apply_tilt_series_pixel_size(layer, value: float, viewer=None) -> None:
    """Give the tomogram ``layer`` the tilt-series pixel size ``value`` (0: unknown).

    A layer that napari-tomoseg did not read gets its geometry written too,
    so that its frame can be found. With ``viewer``, Points layers already
    made on this tomogram (same name, shape and voxel size) get it as well.
    """
    if layer is None:
        return
    size = float(value) if value else None
    if size is not None and not sane_voxel_size(size):
        low, high = VOXEL_SIZE_RANGE
        raise TomosegError(f"the tilt-series pixel size must lie between {low:g} and {high:g} A "
                           "(0: unknown).")
    voxel = float(layer.scale[-1])
    if size is not None and voxel < 0.99 * size:  # refused before the layer holds it
        raise TomosegError(f"the tilt-series pixel size {size:g} A is larger than the "
                           f"tomogram's voxel size {voxel:g} A, and a tomogram is never finer "
                           "than its tilt series: is 'Voxel size (A)' right (IMOD writes 1 A "
                           "when it does not know)?")
    meta = layer.metadata.setdefault("tomoseg", {})
    if meta.get("shape") is None:
        if size is None:
            return
        meta.update(geometry_metadata(clean_tomo_name(layer.name), layer.data.shape,
                                      float(layer.scale[-1]), tuple(layer.translate),
                                      meta.get("path"))["tomoseg"])
    meta[KEY] = size
    frame = frame_from_metadata(layer.metadata)
    if viewer is None or frame is None:
        return
    for other in viewer.layers:
        other_meta = other.metadata.get("tomoseg") or {}
        if other is not layer and other._type_string == "points" and _same_tomogram(other_meta, frame):
            other_meta[KEY] = size
