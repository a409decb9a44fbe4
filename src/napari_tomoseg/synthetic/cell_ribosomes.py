"""Ribosomes placed in a synthetic cell's free space, spread through its depth."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation
from skimage.measure import block_reduce

from . import ribosome as ribo


def add_ribosomes(canvas, rng: np.random.Generator, inside: np.ndarray):
    """(centres, RELION angles) of ribosomes rendered into ``canvas`` where it is free."""
    spec = canvas.spec
    volume_um3 = np.prod(spec.shape) * (spec.voxel_size * 1e-4) ** 3
    target = int(round(spec.ribosome_density_per_um3 * volume_um3 * inside.mean()))
    radius = ribo.RIBOSOME_DIAMETER_NM / 2 * 10.0 / spec.voxel_size
    margin = radius * 0.6
    stride = max(1, int(radius // 4))
    blocks = block_reduce(canvas.occupied, (stride,) * 3, np.max)  # a block: any voxel
    clearance = ndimage.distance_transform_edt(~blocks, sampling=stride)
    candidates = np.argwhere(clearance > radius * 0.9 + stride) * stride + stride // 2
    candidates = candidates[np.all((candidates >= margin) &
                                   (candidates < np.array(spec.shape) - margin), axis=1)]
    centres: list[np.ndarray] = []
    accepted = np.empty((max(target, 1), 3))
    if len(candidates) and target:
        order = _even_in_depth(rng, candidates[:, 0])[: target * 30]
        for i in order:
            c = candidates[i] + rng.uniform(-0.5 * stride, 0.5 * stride, 3)
            n = len(centres)
            if n == 0 or np.min(np.sum((accepted[:n] - c) ** 2, axis=1)) > (2.05 * radius) ** 2:
                accepted[n] = c
                centres.append(c)
                if len(centres) >= target:
                    break
    angles = Rotation.random(len(centres), random_state=rng).as_euler("ZYZ", degrees=True) \
        if centres else np.zeros((0, 3))
    particle_density = np.zeros(spec.shape, np.float32)
    for centre, euler in zip(centres, angles):
        ribo.render_blobs(spec.shape, centre, spec.voxel_size, tuple(euler), out=particle_density)
    canvas.density += 1.3 * particle_density
    canvas.labels["ribosome"] |= (particle_density > ribo.mask_threshold()).astype(np.uint8)
    canvas.occupied |= particle_density > 0.2 / 1.3  # no crowding inside (as distractors)
    return np.array(centres).reshape(-1, 3), np.asarray(angles).reshape(-1, 3)


def _even_in_depth(rng: np.random.Generator, depth: np.ndarray) -> np.ndarray:
    """A random order of candidates whose depths are drawn evenly: free space is most
    plentiful near the faces, and a plain draw put most ribosomes there (31 of 53 within 15
    nm of a face), unlike a cell, whose ribosomes fill its depth."""
    _, level, per_level = np.unique(depth, return_inverse=True, return_counts=True)
    weight = 1.0 / per_level[level]
    return rng.choice(len(depth), size=len(depth), replace=False, p=weight / weight.sum())
