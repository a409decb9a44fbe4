"""Tomogram identity: the name RELION knows a tomogram by, and its coordinate frame.

Kept in one small module so the CLI, batch and the readers name a tomogram
and build its ``TomogramFrame`` the same way, instead of each by hand.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from .io.particles import TomogramFrame

if TYPE_CHECKING:
    from .io.mrc import VolumeInfo


def tomogram_name(path: str | os.PathLike) -> str:
    """The tomogram's name (rlnTomoName): the file stem, compression suffix dropped."""
    name = Path(path).name
    for suffix in (".gz", ".bz2"):
        name = name.removesuffix(suffix)
    return Path(name).stem


def volume_frame(info: VolumeInfo, name: str,
                 tilt_series_pixel_size: float | None = None) -> TomogramFrame:
    """The frame of a tomogram read from a file: its header's shape, voxel and origin.

    The tilt-series pixel size is not in the header; only the user can give it.
    """
    return TomogramFrame(name=name, shape=info.shape, voxel_size=info.isotropic_voxel_size,
                         origin=info.origin,
                         tilt_series_pixel_size=tilt_series_pixel_size)
