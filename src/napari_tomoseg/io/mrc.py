"""MRC volumes: validated, memory-mapped reading and atomic writing.

The work is split by purpose; this module gathers the public names so
callers import them from one place:

- :mod:`.mrc_header`: parse and validate a header, voxel-size rules;
- :mod:`.mrc_read`: memory-mapped reading in (z, y, x), NaN/Inf checks;
- :mod:`.mrc_write`: atomic whole-volume and slice-by-slice writing.
"""

from __future__ import annotations

from .mrc_header import (COMPRESSED_SUFFIXES, HEADER_BYTES, MRC_SUFFIXES, VOXEL_SIZE_RANGE,
                         VolumeInfo, read_header, require_voxel_size, sane_voxel_size)
from .mrc_read import (check_finite_slab, check_finite_volume, count_nonfinite_sample,
                       open_volume, read_slices, robust_contrast_limits)
from .mrc_write import MrcStream, quantise_int8, replace_nonfinite, write_volume

__all__ = [
    "COMPRESSED_SUFFIXES", "HEADER_BYTES", "MRC_SUFFIXES", "VOXEL_SIZE_RANGE", "VolumeInfo",
    "check_finite_slab", "check_finite_volume", "count_nonfinite_sample", "MrcStream",
    "open_volume", "quantise_int8", "read_header", "read_slices", "replace_nonfinite",
    "require_voxel_size", "robust_contrast_limits", "sane_voxel_size", "write_volume",
]
