"""The realistic yardstick: hard synthetic cells, user-like boxes, and how results are scored.

Cells are 256x256x96 at 10 A (the short mode: 192x192x64) between 12 nm (8 nm) of
empty ice above and below, as a reconstruction holds its specimen, with a crowded
cytoplasm, ribosome-sized distractor complexes (barrels and dumb-bells),
imaged at SNR 0.1 per tilt with a 4 um CTF, phase-flipped, -60..+60 in 3
degree steps and reconstructed by WBP. Seed 0 is the training cell, seed 1
the cell a trained model is reused on. Simulated cells are cached on disk
(``TOMOSEG_BENCH_CACHE``, default ~/.cache/tomoseg-bench) because they take
a minute each.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from napari_tomoseg.annotations import boxes_from_truth, training_mask_volume
from napari_tomoseg.metrics import dice
from napari_tomoseg.picking import match_picks
from napari_tomoseg.synthetic import CellSpec, simulate
from napari_tomoseg.synthetic.cell import ice_margin_slices
from napari_tomoseg.synthetic.simulate import ImagingSpec

IMAGING = ImagingSpec(snr=0.1, defocus_um=4.0, phase_flip=True)
RIBOSOME_DIAMETER_A = 250.0
# membranes lying in the slice plane are invisible (missing wedge); users box where they see them
MAX_FRACTION = {"membrane": 0.3}


# the cell (64 or 96 nm thick) lies between this much empty ice above and below, as a
# reconstruction holds its specimen; without it most ribosomes were cut by the volume's faces
ICE_MARGIN_NM = {True: 8.0, False: 12.0}


def cell_spec(short: bool) -> CellSpec:
    spec = CellSpec(shape=(64, 192, 192) if short else (96, 256, 256), voxel_size=10.0,
                    n_vesicles=3, n_microtubules=2, n_actin=6, crowding=1.5,
                    ribosome_density_per_um3=20000.0, distractor_density_per_um3=10000.0,
                    ice_margin_nm=ICE_MARGIN_NM[short])
    margin = ice_margin_slices(spec)  # the cell keeps its thickness; the volume grows
    return replace(spec, shape=(spec.shape[0] + 2 * margin, *spec.shape[1:]))


def cell_slices(cell: dict) -> np.ndarray:
    """The slices that hold the cell (not the ice around it): where a user boxes."""
    filled = np.flatnonzero(np.any([v.any(axis=(1, 2)) for v in cell["labels"].values()], axis=0))
    return np.arange(filled.min(), filled.max() + 1) if len(filled) else np.arange(0)


def load_cell(seed: int, short: bool) -> dict:
    """{'tomogram', 'labels': {feature: volume}, 'particles'} for a seed, cached on disk."""
    spec = cell_spec(short)
    key = hashlib.sha1(json.dumps([asdict(spec), asdict(IMAGING), seed, generator_digest()],
                                  default=str).encode()).hexdigest()[:12]
    cache = Path(os.environ.get("TOMOSEG_BENCH_CACHE", Path.home() / ".cache/tomoseg-bench"))
    path = cache / f"cell_{key}.npz"
    if not path.exists():
        result = simulate(spec, IMAGING, seed=seed)
        cache.mkdir(parents=True, exist_ok=True)
        labels = {f"label_{k}": v for k, v in result.cell.labels.items()}
        partial = path.with_suffix(".partial.npz")
        np.savez_compressed(partial, tomogram=result.tomogram, particles=result.cell.particles,
                            **labels)
        os.replace(partial, path)
    data = np.load(path)
    return {"tomogram": data["tomogram"], "particles": data["particles"],
            "labels": {k[6:]: data[k] for k in data.files if k.startswith("label_")}}


def generator_digest() -> str:
    """A hash of the simulator's source: a cached cell made by other code is made anew (the
    key was a number bumped by hand, and a changed generator kept its old cells)."""
    import ast

    import napari_tomoseg.synthetic as synthetic

    digest = hashlib.sha1()  # of the code's syntax tree: comments and layout do not count
    for source in sorted(Path(synthetic.__file__).parent.glob("*.py")):
        digest.update(ast.dump(ast.parse(source.read_text())).encode())
    return digest.hexdigest()[:12]


def painted_particles(cell: dict, boxes, radius: float) -> np.ndarray:
    """Which particles a positive box's mask touches (within ``radius`` pixels of the
    centre): on the training cell these were painted by the user, so finding them again
    says little (Dice leaves the painted voxels out; picks counted them)."""
    centres = np.asarray(cell["particles"], float).reshape(-1, 3)
    painted = np.zeros(len(centres), bool)
    for box in boxes:
        if not box.positive or box.mask is None:
            continue
        y0, x0 = box.corner()
        ys, xs = np.nonzero(box.mask)
        voxels = np.column_stack([np.full(len(ys), box.z), ys + y0, xs + x0]).astype(float)
        if len(voxels):
            near = np.linalg.norm(centres[:, None] - voxels[None], axis=-1).min(axis=1)
            painted |= near <= radius
    return painted


def unpainted_pick_scores(picks, cell: dict, boxes, voxel_size: float = 10.0) -> dict:
    """``pick_scores`` against the particles no box painted; picks on painted ones are
    left out (neither right nor wrong)."""
    radius = RIBOSOME_DIAMETER_A / 2 / voxel_size
    painted = painted_particles(cell, boxes, radius)
    centres = np.asarray(cell["particles"], float).reshape(-1, 3)
    picks = _away_from(np.asarray(picks, float).reshape(-1, 3), centres[painted], radius)
    # rejected places were taught as "not this one": finding them again says little
    picks = _away_from(picks, rejected_places(boxes), radius)
    scores = match_picks(picks, centres[~painted], radius)
    return {**scores, "painted": int(painted.sum())}


def _away_from(picks: np.ndarray, places: np.ndarray, radius: float) -> np.ndarray:
    """The picks farther than ``radius`` from every place."""
    if len(places) == 0 or len(picks) == 0:
        return picks
    return picks[np.linalg.norm(picks[:, None] - places[None], axis=-1).min(axis=1) > radius]


def rejected_places(boxes) -> np.ndarray:
    """(z, y, x) of the rejected picks among ``boxes``."""
    places = [[b.z, b.y, b.x] for b in boxes  # rejected boxes are centred on their picks
              if not b.positive and b.known is not None and np.any(b.known)]
    return np.asarray(places, float).reshape(-1, 3)


# negatives anywhere (the ice around the cell too, as a user who sees a model fire there
# boxes it), or
# only in the cell's slices (bench_realistic.py --negatives-in-cell)
NEGATIVES_IN_CELL = False


def user_boxes(cell: dict, feature: str, n_pos: int, n_neg: int, seed: int = 1):
    return boxes_from_truth(cell["labels"][feature], feature, n_pos, n_neg, size=64, seed=seed,
                            max_fraction=MAX_FRACTION.get(feature, 1.0),
                            negative_slices=cell_slices(cell) if NEGATIVES_IN_CELL else None)


def dice_scores(prob: np.ndarray, truth: np.ndarray, where=None, threshold: float = 0.5) -> dict:
    """Dice at 0.5, at a given (stored) threshold, and the best over thresholds 0.05..0.95."""
    thresholds = np.round(np.arange(0.05, 0.96, 0.05), 2)
    scores = [dice(prob > t, truth, where) for t in thresholds]
    best = int(np.argmax(scores))
    return {"dice_05": dice(prob > 0.5, truth, where),
            "dice_stored": dice(prob > threshold, truth, where),
            "best": scores[best], "best_threshold": float(thresholds[best])}


def spread(runs: list[dict], key: str, digits: int = 2) -> str:
    """Mean over seeds, with the range when there are several."""
    values = np.array([r[key] for r in runs], float)
    text = f"{values.mean():.{digits}f}"
    return text if len(values) == 1 else f"{text} ({values.min():.{digits}f}-{values.max():.{digits}f})"


def emit(lines: list[str], out: Path | None) -> None:
    """A result table printed, and written to ``out`` when given."""
    text = "\n".join(lines) + "\n"
    print(text)
    if out:
        Path(out).write_text(text)


def pick_scores(picks, cell: dict, voxel_size: float = 10.0) -> dict:
    radius = RIBOSOME_DIAMETER_A / 2 / voxel_size
    return match_picks(np.asarray(picks, float).reshape(-1, 3), cell["particles"], radius)


def held_out(boxes, shape) -> np.ndarray:
    return ~training_mask_volume(boxes, shape)


def provenance() -> str:
    """Commit, library versions and machine, for the head of every result file."""
    import napari_tomoseg
    import numpy
    import torch

    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=root).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, cwd=root).stdout.strip()
    except OSError:
        commit, dirty = "unknown", ""
    try:
        from importlib.metadata import version
        napari_version = version("napari")
    except Exception:  # noqa: BLE001 - napari is optional for core benchmarks
        napari_version = "not installed"
    return (f"commit {commit}{' (+uncommitted src changes)' if dirty else ''}; "
            f"napari-tomoseg {napari_tomoseg.__version__}; torch {torch.__version__} "
            f"({torch.get_num_threads()} threads); numpy {numpy.__version__}; "
            f"napari {napari_version}; {platform.platform()}; {platform.processor() or ''} "
            f"{os.cpu_count()} CPUs")


def seen_in_slices(truth: np.ndarray, feature: str) -> np.ndarray:
    """The voxels of ``truth`` a user can see as the feature in a slice view.

    A membrane whose plane is within 30 degrees of the slice (its normal within 60 degrees
    of z) is smeared across the slice or lost in the missing wedge: no user would box it as
    "missed membrane". Other features are seen wherever they are.
    """
    if feature != "membrane":
        return truth > 0
    from scipy import ndimage

    smooth = ndimage.gaussian_filter((truth > 0).astype(np.float32), 2.0)
    gz, gy, gx = np.gradient(smooth)
    steep = np.abs(gz) < 0.5 * np.sqrt(gz ** 2 + gy ** 2 + gx ** 2)  # |normal_z| < 0.5
    return (truth > 0) & steep


def correction_boxes(prob: np.ndarray, truth: np.ndarray, feature: str, boxes: list,
                     threshold: float, n_pos: int = 5, n_neg: int = 10, size: int = 64,
                     seed: int = 2) -> list:
    """A user's second round: negatives on the largest false detections, positives (with
    masks) on the largest missed stretches of the feature, in the training cell.

    This is the loop the widget is built for (train, look at the preview, box its
    mistakes, continue); the truth stands in for the user's eye, so missed stretches are
    only those a user sees (``seen_in_slices``: an earlier version boxed membranes lying
    in the slice plane, invisible there, as missed).
    """
    from scipy import ndimage

    from napari_tomoseg.annotations import Box, crop_slice

    rng = np.random.default_rng(seed)
    nz, ny, nx = truth.shape
    half = size // 2
    added: list = []

    def free(box) -> bool:
        return not any(b.z == box.z and abs(b.y - box.y) < half and abs(b.x - box.x) < half
                       for b in boxes + added)

    def largest(mask: np.ndarray):
        labels, n = ndimage.label(mask)
        sizes = np.bincount(labels.ravel())[1:]
        return labels, np.argsort(sizes)[::-1] + 1

    labels, order = largest((prob > threshold) & (truth == 0))
    for component in order:
        if sum(not b.positive for b in added) >= n_neg:
            break
        voxels = np.argwhere(labels == component)
        z, y, x = voxels[rng.integers(len(voxels))]
        y, x = float(np.clip(y, half, ny - half)), float(np.clip(x, half, nx - half))
        box = Box(feature, int(z), y, x, size, False)
        if free(box) and not np.any(crop_slice(truth[z], box.corner(), size)):
            added.append(box)
    labels, order = largest((prob <= threshold) & seen_in_slices(truth, feature))
    for component in order:
        if sum(b.positive for b in added) >= n_pos:
            break
        voxels = np.argwhere(labels == component)
        z, y, x = voxels[rng.integers(len(voxels))]
        y, x = float(np.clip(y, half, ny - half)), float(np.clip(x, half, nx - half))
        box = Box(feature, int(z), y, x, size, True)
        mask = crop_slice(truth[z], box.corner(), size)
        if free(box) and 0.02 <= mask.mean() <= MAX_FRACTION.get(feature, 1.0):
            box.mask = (mask > 0).astype(np.uint8)
            added.append(box)
    return added


def rejection_boxes(prob: np.ndarray, cell: dict, boxes: list, threshold: float,
                    n_neg: int = 10, size: int = 64, voxel_size: float = 10.0) -> list:
    """A user's second round in the Pick widget: the best-scored false picks rejected.

    Each becomes a negative box centred on the pick and known only on a disc of 0.8
    particle radii there (``Box.known``; cut by the slice's edge, so no padding is taught):
    the user says "not this one", nothing about its neighbours, which may be true
    particles. Rejections of the same place on a slice count once. The truth stands in for
    the user's eye. Measured and not adopted as a widget action (docs/engine.md).
    """
    from napari_tomoseg.annotations import Box
    from napari_tomoseg.picking import PickSettings, pick_particles

    radius = RIBOSOME_DIAMETER_A / 2 / voxel_size
    picks = pick_particles(prob, voxel_size, PickSettings(diameter=RIBOSOME_DIAMETER_A,
                                                           threshold=threshold))
    zyx = picks[["z", "y", "x"]].to_numpy()
    centres = np.asarray(cell["particles"], float).reshape(-1, 3)
    far = np.linalg.norm(zyx[:, None] - centres[None], axis=-1).min(axis=1) > radius
    nz, ny, nx = prob.shape
    yy, xx = np.mgrid[:size, :size]
    added: list = []
    for z, y, x in zyx[far]:  # best score first
        z, y, x = int(round(z)), float(round(y)), float(round(x))
        if len(added) >= n_neg or any(b.z == z and np.hypot(b.y - y, b.x - x) < radius
                                      for b in added):
            continue
        box = Box("ribosome", z, y, x, size, False)
        y0, x0 = box.corner()
        gy, gx = yy + y0, xx + x0
        disc = (gy - y) ** 2 + (gx - x) ** 2 <= (0.8 * radius) ** 2
        box.known = (disc & (gy >= 0) & (gy < ny) & (gx >= 0) & (gx < nx)).astype(np.uint8)
        added.append(box)
    return added
