"""Render the figures of docs/ from the shipped samples (no viewer needed).

    python docs/make_figures.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from skimage.io import imsave

from napari_tomoseg.io.mrc import open_volume
from napari_tomoseg.sample_files import MYCOPLASMA, SYNTHETIC, sample_path
from napari_tomoseg.synthetic import FEATURE_COLOURS, FEATURES

IMAGES = Path(__file__).resolve().parent / "images"


def grey(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99])
    return (np.clip((image - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def slab(data: np.ndarray, z: int, half: int) -> np.ndarray:
    return np.asarray(data[z - half:z + half + 1], dtype=np.float32).mean(axis=0)


def overlay(image: np.ndarray, masks: dict[str, np.ndarray], alpha: float = 0.45) -> np.ndarray:
    rgb = np.repeat(grey(image)[..., None], 3, axis=-1).astype(np.float32)
    for feature, mask in masks.items():
        colour = np.array([int(FEATURE_COLOURS[feature][i:i + 2], 16) for i in (1, 3, 5)])
        rgb[mask > 0] = (1 - alpha) * rgb[mask > 0] + alpha * colour
    return rgb.astype(np.uint8)


def main() -> None:
    IMAGES.mkdir(exist_ok=True)
    cell, _ = open_volume(sample_path(MYCOPLASMA))
    z = cell.shape[0] // 2
    panel = np.concatenate([grey(np.asarray(cell[z], np.float32)), grey(slab(cell, z, 3))], axis=1)
    imsave(IMAGES / "mpneumoniae_slice.png", panel, check_contrast=False)
    y = cell.shape[1] // 2
    xz = grey(np.asarray(cell[:, y - 3:y + 4, :], np.float32).mean(axis=1))
    imsave(IMAGES / "mpneumoniae_xz.png", xz, check_contrast=False)

    tomogram_path = sample_path(SYNTHETIC)
    manifest = json.loads(tomogram_path.with_suffix(".json").read_text())
    tomogram, _ = open_volume(tomogram_path)
    z = tomogram.shape[0] // 2
    masks = {f: open_volume(tomogram_path.parent / manifest["features"][f]["file"])[0][z]
             for f in FEATURES}
    image = slab(tomogram, z, 2)
    panel = np.concatenate([np.repeat(grey(image)[..., None], 3, -1), overlay(image, masks)], 1)
    imsave(IMAGES / "synthetic_truth.png", panel, check_contrast=False)
    print("figures written to", IMAGES)


if __name__ == "__main__":
    main()
