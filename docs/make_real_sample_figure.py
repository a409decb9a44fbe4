"""Membrane segmentation of the real M. pneumoniae sample from a handful of boxes.

    python docs/make_real_sample_figure.py

The annotation is what a user would draw: the two cell-envelope traces
were read by eye off slice 64 (a 7-slice average; the envelope runs
through the slab nearly perpendicular to it at mid-depth, so slices
62-66 share it), painted 4 px wide inside 6 positive boxes; 12 negative
boxes sit in the cytoplasm and in the ice outside. A U-Net is trained
(400 steps), the whole tomogram is segmented, and a slice with the
overlay is written to docs/images/mpneumoniae_membrane.png.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from skimage.draw import line
from skimage.io import imsave
from skimage.morphology import dilation, disk

from napari_tomoseg.annotations import Box, crop_slice
from napari_tomoseg.io.mrc import open_volume
from napari_tomoseg.nn.inference import segment
from napari_tomoseg.nn.training import TrainingSettings, train
from napari_tomoseg.sample_files import MYCOPLASMA, sample_path

IMAGES = Path(__file__).resolve().parent / "images"
BOX = 48
# envelope traces on slice 64, (x, y) in pixels of the 20 A tomogram, read by eye
LEFT = [(25, 60), (43, 100), (63, 150), (83, 200), (102, 250), (123, 310)]
RIGHT = [(247, 7), (265, 50), (283, 100), (300, 140), (313, 167)]
POSITIVES = [(64, 100, 43), (64, 200, 83), (62, 150, 63), (66, 250, 102), (64, 60, 266),
             (62, 120, 291)]  # (z, y, x)
NEGATIVES = [(64, 100, 160), (64, 200, 180), (64, 60, 200), (64, 250, 150), (64, 150, 210),
             (62, 280, 230), (66, 120, 130), (66, 40, 120), (64, 30, 305), (62, 20, 300),
             (66, 170, 230), (62, 220, 200)]


def envelope_mask(shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for trace in (LEFT, RIGHT):
        for (x0, y0), (x1, y1) in zip(trace[:-1], trace[1:]):
            rr, cc = line(y0, x0, y1, x1)
            keep = (rr < shape[0]) & (cc < shape[1])
            mask[rr[keep], cc[keep]] = True
    return dilation(mask, disk(2))


def main() -> None:
    volume, info = open_volume(sample_path(MYCOPLASMA))
    drawn = envelope_mask(volume.shape[1:])
    boxes = []
    for z, y, x in POSITIVES:
        box = Box("membrane", z, y, x, BOX, True)
        box.mask = crop_slice(drawn.astype(np.float32), box.corner(), BOX).astype(np.uint8)
        boxes.append(box)
    boxes += [Box("membrane", z, y, x, BOX, False) for z, y, x in NEGATIVES]
    start = time.perf_counter()
    model = train(volume, boxes, info.isotropic_voxel_size, TrainingSettings(steps=400))
    trained = time.perf_counter() - start
    start = time.perf_counter()
    prob = segment(volume, model, info.isotropic_voxel_size)
    segmented = time.perf_counter() - start
    z = 64
    image = np.asarray(volume[z - 3:z + 4], np.float32).mean(axis=0)
    lo, hi = np.percentile(image, [1, 99])
    grey = (np.clip((image - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)
    rgb = np.repeat(grey[..., None], 3, axis=-1).astype(np.float32)
    on = prob[z] > 0.5
    rgb[on] = 0.5 * rgb[on] + 0.5 * np.array([242, 201, 76])
    IMAGES.mkdir(exist_ok=True)
    imsave(IMAGES / "mpneumoniae_membrane.png",
           np.concatenate([np.repeat(grey[..., None], 3, -1), rgb.astype(np.uint8)], axis=1),
           check_contrast=False)
    near = dilation(drawn, disk(4))
    print(f"trained in {trained:.0f} s, segmented {volume.shape} in {segmented:.0f} s; on slice {z}: "
          f"{100 * (on & near).sum() / max(on.sum(), 1):.0f}% of membrane voxels lie on the drawn "
          f"envelope, {100 * (on & drawn).sum() / drawn.sum():.0f}% of the drawn envelope is found")


if __name__ == "__main__":
    main()
