"""A visual check on real data: membranes of M. pneumoniae (EMPIAR-10499) from 5 boxes.

    python docs/make_mpneumoniae_membrane_check.py   (1.5-6 min on 2 CPU cores)

Five positive boxes on slice 64, their masks drawn as 3-px lines along the two
membranes as a user's brush would, 25 negative boxes in the cytoplasm and
outside; default training; the segmentation above the stored threshold is
shown in red on slices 40, 64 (the boxes' slice) and 90 of a 7-slice average.
There is no ground truth: this is what a user would see.
"""

import sys
import time
from pathlib import Path

import numpy as np
from skimage.io import imsave

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from mpneumoniae import membrane_boxes  # noqa: E402 - the boxes the benchmark uses too

from napari_tomoseg.sample_files import sample_path, MYCOPLASMA  # noqa: E402
from napari_tomoseg.io.mrc import open_volume  # noqa: E402
from napari_tomoseg.nn.training import TrainingSettings, train  # noqa: E402
from napari_tomoseg.nn.inference import segment  # noqa: E402

v, info = open_volume(sample_path(MYCOPLASMA)); vol = np.asarray(v, np.float32)
# 5 positives on slice 64 with 3-px lines along the membranes, 25 negatives (mpneumoniae.py)
boxes = membrane_boxes(vol.shape)
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
