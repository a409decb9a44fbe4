"""A visual check on real data: membranes of M. pneumoniae (EMPIAR-10499) from 5 boxes.

    python docs/make_mpneumoniae_membrane_check.py   (about 2 min on 2 CPU cores)

Five positive boxes on slice 64, their masks drawn as 3-px lines along the two
membranes as a user's brush would, 25 negative boxes in the cytoplasm and
outside; default training; the segmentation above the stored threshold is
shown in red on slices 40, 64 (the boxes' slice) and 90 of a 7-slice average.
There is no ground truth: this is what a user would see.
"""

from pathlib import Path

import numpy as np, time
from skimage.draw import line
from scipy import ndimage
from skimage.io import imsave
from napari_tomoseg.sample_files import sample_path, MYCOPLASMA
from napari_tomoseg.io.mrc import open_volume
from napari_tomoseg.annotations import Box, crop_slice
from napari_tomoseg.nn.training import TrainingSettings, train
from napari_tomoseg.nn.inference import segment
v, info = open_volume(sample_path(MYCOPLASMA)); vol = np.asarray(v, np.float32)
nz, ny, nx = vol.shape
# the membranes as seen on slice 64 (x, y in pixels), drawn 3 px wide, as a user's brush would
left = [(20, 50), (50, 150), (80, 215), (115, 300)]
right = [(240, 15), (280, 100), (310, 185)]
plane = np.zeros((ny, nx), np.uint8)
for pts in (left, right):
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        rr, cc = line(y0, x0, y1, x1); plane[rr.clip(0, ny-1), cc.clip(0, nx-1)] = 1
plane = ndimage.binary_dilation(plane, iterations=1).astype(np.uint8)
boxes = []
for (x, y) in [(35, 100), (65, 183), (98, 258), (260, 58), (295, 143)]:
    b = Box("membrane", 64, float(y), float(x), 64, True)
    b.mask = (crop_slice(plane.astype(np.float32), b.corner(), 64) > 0).astype(np.uint8)
    boxes.append(b)
rng = np.random.default_rng(0)
# negatives inside the cell (cytoplasm) and outside, away from the drawn membranes
far = ndimage.distance_transform_edt(1 - plane) > 40
cands = np.argwhere(far[32:ny-32, 32:nx-32]) + 32
for k in rng.choice(len(cands), 25, replace=False):
    y, x = cands[k]; boxes.append(Box("membrane", int(rng.integers(40, 90)), float(y), float(x), 64, False))
t = time.perf_counter()
model = train(vol, boxes, 20.0, TrainingSettings(), feature="membrane")
print("trained", len(model.history), "steps", round(time.perf_counter() - t), "s, threshold", model.threshold, model.info.get("held_out"))
prob = segment(vol, model, 20.0)
panels = []
for z in (40, 64, 90):
    s = vol[z-3:z+4].mean(0); lo, hi = np.percentile(s, [1, 99]); g = np.clip((s-lo)/(hi-lo), 0, 1)
    rgb = np.stack([g, g, g], -1)
    above = prob[z] > model.threshold
    rgb[above] = [1.0, 0.1, 0.4]
    panels.append(np.pad(rgb, ((0, 0), (0, 8), (0, 0)), constant_values=1.0))
out = Path(__file__).resolve().parent / "images" / "mpneumoniae_membrane_check.png"
imsave(out, (np.concatenate(panels, axis=1) * 255).astype(np.uint8), check_contrast=False)
print("fraction above threshold", float((prob > model.threshold).mean()), "->", out)
