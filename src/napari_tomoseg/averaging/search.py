"""Particles on the device and the orientation search shared by refinement and classification.

``PreparedParticles`` keeps the (contrast-flipped) boxes once and a Fourier-cropped
copy per working box, so searches at low resolution run on small boxes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import InvalidAlignmentError
from .align import Aligner, Alignment, fourier_crop
from .reconstruct import Reconstruction
from .rotations import local_rotations, uniform_rotations
from .volumes import centre_of_mass_shift, soft_sphere, transform_volumes
from .wedge import wedge_mask

if TYPE_CHECKING:
    from .refine import AverageSettings


def _working_box(box: int, cutoff: float) -> int:
    """Smallest even box that still holds ``cutoff`` (cycles/voxel) with some margin."""
    needed = int(np.ceil(2 * cutoff * box * 1.3))
    return int(min(box, max(16, needed + needed % 2)))


class PreparedParticles:
    """Particles on the device, with down-sampled copies cached per working box."""

    def __init__(self, data: np.ndarray, settings: AverageSettings, device: torch.device):
        self.settings = settings
        self.device = device
        self.full = torch.as_tensor(np.ascontiguousarray(data, dtype=np.float32), device=device)
        if settings.invert:
            self.full = -self.full
        self.box = self.full.shape[-1]
        self._aligners: dict[tuple[int, float], Aligner] = {}

    def aligner(self, cutoff: float, highpass: float = 4.0) -> tuple[Aligner, float]:
        small = _working_box(self.box, cutoff)
        scale = small / self.box
        key = (small, round(cutoff, 4), highpass)
        if key not in self._aligners:
            self._aligners.clear()  # one set of spectra at a time keeps memory flat
            s = self.settings
            data = fourier_crop(self.full, small)
            mask = soft_sphere(small, s.radius * scale, 2.0, self.device)
            wedge = wedge_mask(small, s.tilt_min, s.tilt_max, device=self.device)
            self._aligners[key] = Aligner(data, wedge, min(0.5, cutoff / scale),
                                          s.shift_limit * scale, mask, highpass)
        return self._aligners[key], scale

    def reconstruct(self, indices: np.ndarray, alignment: Alignment) -> Reconstruction:
        s = self.settings
        rec = Reconstruction(self.box, s.tilt_min, s.tilt_max, self.device)
        rec.add(self.full[torch.as_tensor(indices, device=self.device)],
                alignment.matrices[indices], alignment.shifts[indices])
        return rec


def recentre(volume: torch.Tensor) -> torch.Tensor:
    """``volume`` shifted so its centre of mass is at the box centre."""
    shift = centre_of_mass_shift(volume)
    eye = torch.eye(3, device=volume.device)[None]
    return transform_volumes(volume, eye, shift[None])[0]


def crop_centred(volume: torch.Tensor | None, box: int) -> torch.Tensor | None:
    """The central ``box``^3 of a centred Fourier-space map (None stays None)."""
    if volume is None or volume.shape[-1] == box:
        return volume
    lo = volume.shape[-1] // 2 - box // 2
    return volume[..., lo:lo + box, lo:lo + box, lo:lo + box]


def search_orientations(prepared: PreparedParticles, reference: torch.Tensor, cutoff: float,
                        indices: np.ndarray, current: Alignment | None, step: float,
                        search_range: float, should_stop, known: torch.Tensor | None = None,
                        highpass: float = 4.0) -> Alignment:
    """Global search when ``current`` is None, local around it otherwise (full-box shifts).

    ``known``: the reference's measured Fourier voxels (centred), None if all;
    ``highpass``: Fourier shells below this are left out of the score.
    """
    aligner, scale = prepared.aligner(cutoff, highpass)
    small_ref = fourier_crop(reference, aligner.box)
    small_known = crop_centred(known, aligner.box)
    if current is None:
        found = aligner.search_global(small_ref, uniform_rotations(step), indices, should_stop,
                                      small_known)
    else:
        found = aligner.search_local(small_ref, current.matrices[indices],
                                     local_rotations(step, search_range), indices, should_stop,
                                     small_known)
    found.shifts = found.shifts / scale
    if len(found.scores) and not np.isfinite(found.scores).any() \
            and not (should_stop is not None and should_stop()):  # a stop is no failure
        raise InvalidAlignmentError(  # each took the first orientation (an empty band)
            "no particle could be compared with the reference (every score is undefined): "
            "the box is too small for the resolution searched, or the boxes are empty.")
    return found


# the names these had when only refine.py used them; new code uses the public ones
_Prepared, _search, _recentre = PreparedParticles, search_orientations, recentre
