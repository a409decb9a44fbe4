"""The voxel size of a tomogram layer: from its header, or typed in by the user.

A header voxel size of 0, a negative or an absurd value is not believed
(the reader marks the layer); every action that needs a voxel size then
asks the user for it instead of silently assuming 1 A, which would
rescale the data by orders of magnitude.
"""

from __future__ import annotations

from ..errors import TomosegError
from ..io.mrc import VOXEL_SIZE_RANGE, sane_voxel_size


def _meta(layer) -> dict:
    return layer.metadata.setdefault("tomoseg", {}) if layer is not None else {}


def voxel_size_of(layer) -> float:
    """The layer's voxel size in Angstrom, or a TomosegError asking for it."""
    if _meta(layer).get("voxel_size_in_header") is False:
        raise TomosegError(f"{layer.name} has no usable voxel size in its header: enter it in "
                           "'Voxel size (A)' (section 1).")
    scale = [float(v) for v in layer.scale[-3:]]
    if max(scale) > 1.01 * min(scale):  # maps and picks would be off by the z/x ratio
        raise TomosegError(f"{layer.name} has voxels of {' x '.join(f'{v:g}' for v in scale[::-1])}"
                           " A (x, y, z), not cubes: resample it, or enter one size in "
                           "'Voxel size (A)' (section 1) to take them as cubes.")
    return float(layer.scale[-1])


def apply_voxel_size(layer, value: float) -> None:
    """Give ``layer`` the voxel size the user typed (0 keeps the header's)."""
    if layer is None or not value:
        return
    if not sane_voxel_size(value):
        low, high = VOXEL_SIZE_RANGE
        raise TomosegError(f"the voxel size must lie between {low:g} and {high:g} A.")
    layer.scale = (float(value),) * layer.ndim
    meta = _meta(layer)
    meta.update(voxel_size=float(value), voxel_size_in_header=True, voxel_size_typed=True)
