"""The classical baseline: the ilastik recipe (multiscale filters + a random forest).

Trained on exactly the pixels the boxes label (positive masks and negative
boxes), applied slice by slice. Needs scikit-learn (``pip install .[bench]``).
"""

from __future__ import annotations

import numpy as np
from skimage.feature import multiscale_basic_features

from napari_tomoseg.annotations import Box
from napari_tomoseg.preprocess import Preprocessor


def _features(image: np.ndarray) -> np.ndarray:
    return multiscale_basic_features(image, intensity=True, edges=True, texture=True,
                                     sigma_min=1, sigma_max=16, num_sigma=5)


def train_forest(pre: Preprocessor, boxes: list[Box], seed: int = 0, per_box: int = 1500):
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError as error:  # not in the test setup (scripts/setup.sh): say how
        raise SystemExit("the forest baseline needs scikit-learn: .venv/bin/python -m pip "
                         "install -e '.[bench]' (or leave 'forest' out of --methods)") from error

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    by_slice: dict[int, list[Box]] = {}
    for box in boxes:
        by_slice.setdefault(box.z, []).append(box)
    for z, group in by_slice.items():
        features = _features(pre.slab(z, z + 1)[0])
        for box in group:
            y0, x0 = box.corner()
            label = box.label()
            yy, xx = np.mgrid[0:box.size, 0:box.size]
            inside = ((yy + y0 >= 0) & (yy + y0 < features.shape[0]) &
                      (xx + x0 >= 0) & (xx + x0 < features.shape[1]))
            idx = np.flatnonzero(inside.ravel())
            idx = rng.choice(idx, min(per_box, len(idx)), replace=False)
            yy, xx = yy.ravel()[idx], xx.ravel()[idx]
            xs.append(features[yy + y0, xx + x0])
            ys.append(label[yy, xx] > 0.5)
    forest = RandomForestClassifier(n_estimators=100, max_depth=16, n_jobs=-1, random_state=seed,
                                    class_weight="balanced")
    forest.fit(np.concatenate(xs), np.concatenate(ys))
    return forest


def apply_forest(forest, pre: Preprocessor) -> np.ndarray:
    out = np.zeros(pre.shape, np.float32)
    for z in range(pre.shape[0]):
        features = _features(pre.slab(z, z + 1)[0])
        out[z] = forest.predict_proba(features.reshape(-1, features.shape[-1]))[:, 1].reshape(
            features.shape[:2])
    return out
