"""Apply a trained network to slices, slabs and whole tomograms.

Fully convolutional over slices, each with its neighbours as channels for
2.5D networks. A slice is cut into tiles of DEFAULT_TILE pixels, each
computed with a halo as wide as the network's receptive field, so the
result equals the whole-slice forward (no seams) while activations stay
bounded; segmentation runs a frozen copy of the network (fast_forward.py).
The
probability is written slab by slab into an MRC on disk with plain file
writes (not a memory map), so memory stays bounded by one batch whatever
the tomogram's size; the file appears under its final name only when
complete.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..errors import Cancelled, TomosegError  # Cancelled: still importable from here
from ..io.mrc_write import MrcStream
from ..preprocess import PreprocessSettings, Preprocessor, SharedSlices, unbin_slices
from .devices import pick_device
from ..io.probability_header import threshold_label, tomogram_labels
from .model_file import TrainedModel
from .fast_forward import inference_network, receptive_halo, slides_slabs, tiled_forward
from .models import check_rotations, size_multiple


MAX_BATCH_PIXELS = 2 ** 20
DEFAULT_TILE = 512  # 2 cores: 512 slices whole (tiles of 256 cost 1.4x in halos); 1k slices in 4
# (a mirrored side, EDGE_MIRROR, widens a tile by as much: it never adds one)
# planes smaller than this go several per call: one 48 px training tile per call cost 3.7x
# (plain U-Net) to 4.7x (3D stem) of 256^2 pixels per call, 512^2 was no faster on 2 cores
SMALL_PLANE_PIXELS = 256 * 256
# pixels of image mirrored beyond each side of a plane before a network whose ``edge`` is
# "mirror" sees it. With the convolutions' zeros there, ribosomes within 15 px of a
# tomogram's side kept 0-80% of their probability mass and were all 10 misses of the
# realistic benchmark's picks (two cells, one ensemble); with 16 px one network found 8 of
# its 9 misses, and 32 px did no better (docs/engine.md, "Sides of the slice")
EDGE_MIRROR = 16



def stack_context(slab: np.ndarray, context: int) -> np.ndarray:
    """(n + 2c, y, x) slab -> (n, 2c + 1, y, x) per-slice channel stacks."""
    n = slab.shape[0] - 2 * context
    return np.stack([slab[i:i + 2 * context + 1] for i in range(n)])


_stack_context = stack_context  # its old private name; training and inference share it


def _halo(network: torch.nn.Module) -> int | None:
    """The network's receptive halo, or None when it cannot be worked out (then no tiles)."""
    if hasattr(network, "receptive_halo"):  # set by inference_network; None: untraceable
        halo = network.receptive_halo
        return None if halo is None else int(halo)
    try:
        return receptive_halo(network)
    except Exception:  # noqa: BLE001 - an untraceable network runs on whole slices
        return None


def _forward(network: torch.nn.Module, x: torch.Tensor, tile: int | None,
             mirror: int = 0) -> torch.Tensor:
    """``network(x)``, in tiles of ``tile`` pixels where a slice is larger (same numbers).

    ``mirror`` (pixels mirrored beyond each side) is overhead that neither adds a tile (a
    1k slice stays in 2 x 2) nor takes a slice from a sliding stem's batch (4 of 256 px).
    """
    multiple = size_multiple(network)
    whole = max(x.shape[-2:])
    requested = tile
    tile = tile + 2 * mirror if tile else tile
    halo = _halo(network) if tile and whole > tile else None
    if halo is None:
        tile, halo = whole, 0
    tile = multiple * -(-tile // multiple)
    channels_last = x.device.type == "cpu" and getattr(network, "channels_last_on_cpu", False)
    # a sliding 3D stem gains only from several consecutive slices per call: as many as fit
    # in one requested tile's pixels (membranes' U-Net, 256 px slices: 4 at once, 1.5x faster);
    # small planes (held-out tiles, small slices) go several per call for every network
    pixels = requested ** 2 if requested and slides_slabs(network) else SMALL_PLANE_PIXELS
    height, width = x.shape[-2:]
    pixels = pixels * height * width // max((height - 2 * mirror) * (width - 2 * mirror), 1)
    return tiled_forward(network, x, tile, halo, channels_last, min_pixels=pixels)


def _averaged_over_rotations(network: torch.nn.Module, x: torch.Tensor,
                            tile: int | None, rotations: int | None = None,
                            mirror: int = 0) -> torch.Tensor:
    """The probability, averaged over ``network.rotations`` quarter turns of the planes.

    A network trained on randomly rotated tiles still answers a little differently
    for each orientation of the same slice; the mean of 4 quarter turns removed
    false detections in the noise (realistic membranes 5/50: best Dice +0.04-0.08)
    at 4x the work. The threshold stored with a model was chosen on predictions
    made the same way (``training._finish``). ``rotations`` overrides the network's
    (1: a cheaper look while training).
    """
    rotations = getattr(network, "rotations", 1) if rotations is None else check_rotations(rotations)
    total = None
    for turn, back in _orientations(getattr(network, "symmetry", "any"), rotations):
        prob = back(network.probability(_forward(network, turn(x).contiguous(), tile, mirror)))
        total = prob.float() if total is None else total + prob.float()
    return total / rotations


def _orientations(symmetry: str, rotations: int) -> list:
    """(turn, turn back) pairs: quarter turns, or for ``symmetry`` "wedge" and "rewedge" the
    flips that keep the tilt axis (identity, 180 degrees, then the flips of x and y): those
    networks learnt the missing wedge about y (for "rewedge" quarter turns cost microtubules
    0.1-0.14 Dice, docs/engine.md)."""
    if symmetry in ("wedge", "rewedge"):
        axes = [(), (-2, -1), (-1,), (-2,)][:rotations]
        return [(lambda t, a=a: t.flip(a) if a else t,) * 2 for a in axes]
    return [(lambda t, k=k: torch.rot90(t, k, dims=(-2, -1)) if k else t,
             lambda t, k=k: torch.rot90(t, -k, dims=(-2, -1)) if k else t)
            for k in range(0, 4, 4 // rotations)]


@torch.inference_mode()
def predict_planes(network: torch.nn.Module, planes: np.ndarray | torch.Tensor,
                   device: torch.device | None = None, scale: float = 1.0,
                   tile: int | None = DEFAULT_TILE, rotations: int | None = None,
                   mirror: bool = True) -> np.ndarray:
    """Probabilities (n, y, x) for (n, channels, y, x) preprocessed planes.

    ``network`` must be in eval mode: small planes go several per call, and BatchNorm in
    training mode would pool its statistics over them.

    ``scale`` resamples the planes first (model voxel size / tomogram voxel
    size) and the result back, for a model trained at another voxel size.
    ``tile`` (pixels; None: whole slices) bounds the activations. ``rotations``:
    quarter turns averaged (None: the network's own, as segmentation uses). ``mirror``
    False: the network's zeros beyond the planes' sides even where its ``edge`` is "mirror"
    (EDGE_MIRROR pixels mirrored), for planes whose sides are margin, not data.
    """
    device = device or next(network.parameters()).device
    x = torch.as_tensor(np.ascontiguousarray(planes), dtype=torch.float32, device=device)
    height, width = x.shape[-2:]
    if abs(scale - 1.0) > 1e-3:
        x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
    size = tuple(x.shape[-2:])  # the (resampled) planes, unpadded
    stride = getattr(network, "output_stride", 1)
    mirrored = mirror and getattr(network, "edge", "zeros") == "mirror"
    margin = _mirror_width(size, stride) if mirrored else 0
    if margin:
        x = F.pad(x, (margin,) * 4, mode="reflect")
    multiple = size_multiple(network)
    pad_y = (-x.shape[-2]) % multiple
    pad_x = (-x.shape[-1]) % multiple
    if pad_y or pad_x:
        x = F.pad(x, (0, pad_x, 0, pad_y), mode="reflect" if min(x.shape[-2:]) > max(pad_x, pad_y) else "constant")
    prob = _averaged_over_rotations(network, x, tile, rotations, margin)
    prob = prob[..., margin // stride:, margin // stride:]
    prob = _back_on_grid(prob, stride, size, scale, (height, width))
    return prob[:, 0].float().cpu().numpy()


def _mirror_width(size: tuple[int, int], stride: int) -> int:
    """EDGE_MIRROR in whole output pixels of the network, and less than the plane (reflection
    cannot reach further)."""
    width = min(EDGE_MIRROR, min(size) - 1)
    return max(width // stride * stride, 0)


def _back_on_grid(prob: torch.Tensor, stride: int, size: tuple[int, int], scale: float,
                  shape: tuple[int, int]) -> torch.Tensor:
    """The network's output back on the planes' pixels, each value where it was computed.

    Output pixel j of a stride-s network sits at input (j + 1/2) s - 1/2, and resampled
    pixel k at original (k + 1/2) scale - 1/2: upsampling by exactly s and by exactly
    ``scale`` keeps both, where one resize to the final size had stretched the map towards
    the origin (2.5 px at the far edge of a 1000 px slice, for stride 2 and rescaling)."""
    if stride > 1:
        valid = (-(-size[0] // stride), -(-size[1] // stride))
        prob = F.interpolate(prob[..., :valid[0], :valid[1]], scale_factor=float(stride),
                             mode="bilinear", align_corners=False)
    prob = prob[..., :size[0], :size[1]]
    if abs(scale - 1.0) > 1e-3:
        prob = F.interpolate(prob, scale_factor=float(scale), mode="bilinear",
                             align_corners=False)
    prob = prob[..., :shape[0], :shape[1]]
    pad_y, pad_x = shape[0] - prob.shape[-2], shape[1] - prob.shape[-1]
    return F.pad(prob, (0, pad_x, 0, pad_y), mode="replicate") if pad_y or pad_x else prob


@dataclass
class SegmentProgress:
    done: int  # output slices written
    total: int
    z0: int  # slices z0..z1 of the output just finished
    z1: int
    probability: np.ndarray  # those slices, float32 in [0, 1]
    path: Path | None = None  # set on the last update


MAX_RESCALE = 4.0  # beyond this a resampled tomogram costs too much or loses the feature


def _voxel_scale(model: TrainedModel, voxel_size: float, rescale: bool) -> float:
    """model / tomogram voxel size: ``predict_planes`` resamples the planes by its inverse."""
    ratio = voxel_size / model.voxel_size
    if abs(ratio - 1.0) <= 0.05:
        return 1.0
    if rescale and not 1 / MAX_RESCALE <= ratio <= MAX_RESCALE:
        raise TomosegError(
            f"the '{model.feature}' model was trained at {model.voxel_size:g} A/voxel but this "
            f"tomogram has {voxel_size:g} A/voxel, a factor {max(ratio, 1 / ratio):.3g} apart "
            f"(at most {MAX_RESCALE:g} is rescaled); check the voxel size (--voxel-size) or bin "
            "the tomogram to match.")
    if not rescale:
        raise TomosegError(
            f"the '{model.feature}' model was trained at {model.voxel_size:g} A/voxel but this "
            f"tomogram has {voxel_size:g} A/voxel; allow rescaling or bin the tomogram to match.")
    return 1.0 / ratio  # model / tomogram


class ZUpsampler:
    """Binned slices back onto the tomogram's slices, linearly in z, slab by slab.

    Binned slice i averages slices i*b..i*b+b-1 (the last one fewer when b does
    not divide nz), so its value belongs at their centre; each full slice is
    interpolated between the two binned slices around it (as y and x are,
    bilinearly), not repeated, which would make steps of b slices. A slice past
    the last binned centre seen must wait for the next slab, so each push
    returns (z0, z1, slices) of what is finished; the last push finishes all.
    """

    def __init__(self, binning: int, nz: int, nz_binned: int):
        self.b, self.nz, self.nzb = binning, nz, nz_binned
        starts = np.arange(nz_binned) * binning
        self.centres = (starts + np.minimum(starts + binning, nz) - 1) / 2
        self.done = 0
        self.carry: np.ndarray | None = None  # the previous slab's last binned slice

    def push(self, zb0: int, slab: np.ndarray) -> tuple[int, int, np.ndarray]:
        zb1 = zb0 + len(slab)
        if self.b == 1:
            self.done = min(zb1, self.nz)
            return zb0, self.done, slab[: self.done - zb0]
        known = slab if self.carry is None else np.concatenate([self.carry[None], slab])
        first = zb0 - (0 if self.carry is None else 1)  # binned index of known[0]
        # full slices at or before the last binned centre known (all of them at the end)
        end = self.nz if zb1 >= self.nzb else int(np.floor(self.centres[zb1 - 1])) + 1
        z = np.arange(self.done, end)
        u = np.interp(z, self.centres, np.arange(self.nzb)) - first  # clamped at both ends
        i0 = np.clip(np.floor(u).astype(int), 0, len(known) - 1)
        i1 = np.minimum(i0 + 1, len(known) - 1)
        w = (u - i0).astype(np.float32)[:, None, None]
        out = known[i0] * (1 - w)
        out += known[i1] * w
        z0, self.done, self.carry = self.done, end, slab[-1]
        return z0, end, out.astype(np.float32, copy=False)


def capped_batch(batch_slices: int, binned_shape: tuple[int, int, int]) -> int:
    """Slices per batch: activations scale with pixels per batch, so ~1 Mpixel at most."""
    return max(1, min(batch_slices, MAX_BATCH_PIXELS // (binned_shape[1] * binned_shape[2])))


def working_preprocess(model: TrainedModel, voxel_size: float,
                       rescale: bool = True) -> tuple[PreprocessSettings, float]:
    """(preprocessing, the planes' remaining resampling) for a tomogram of ``voxel_size``.

    A tomogram finer than the model's by a whole factor k (10 A for a model of 20 A) is
    binned k times more, so its filters, normalisation and z context are the ones the
    network was trained on; resampling the planes after preprocessing at the tomogram's
    pixels gave them 23% less contrast, twice the power near Nyquist, and z context at
    half the spacing. Other factors are still resampled."""
    scale = _voxel_scale(model, voxel_size, rescale)
    factor = round(scale)
    if scale != 1.0 and factor >= 2 and abs(scale - factor) <= 0.05 * factor:
        return replace(model.preprocess, binning=model.preprocess.binning * factor), 1.0
    return model.preprocess, scale


def _preprocessor_for(model: TrainedModel, settings: PreprocessSettings, volume: np.ndarray,
                      shared: Preprocessor | SharedSlices | None):
    if shared is not None and shared.settings != settings:
        raise TomosegError(f"the '{model.feature}' model needs its own preprocessing "
                           "(a shared preprocessor has other settings).")
    return shared or Preprocessor(volume, settings)


def _to_output(prob: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "uint8":
        return np.round(prob * 255).astype(np.uint8)
    return prob.astype(np.float16 if dtype == "float16" else np.float32)


def iter_segment(volume: np.ndarray, model: TrainedModel, voxel_size: float,
                 output: str | os.PathLike | None = None, origin=(0.0, 0.0, 0.0),
                 batch_slices: int = 4, roi: tuple[slice, slice, slice] | None = None,
                 dtype: str = "float16", device: str | None = "auto", rescale: bool = True,
                 stop: threading.Event | None = None, overwrite: bool = False,
                 preprocessor: Preprocessor | SharedSlices | None = None,
                 tile: int | None = DEFAULT_TILE,
                 precision: str = "auto", tomogram: str | None = None
                 ) -> Iterator[SegmentProgress]:
    """Segment a tomogram slab by slab, yielding each finished slab.

    With ``output`` the probabilities stream into that MRC (float16, float32,
    or uint8 scaled 0-255); uint8 has no mode in MRC, so it is stored as
    uint16 0-255. ``roi`` (z, y, x slices) restricts the work to a
    region, for previews. Setting ``stop`` or closing the generator cancels:
    the partial file is removed. ``tile``: see ``predict_planes``. The
    network runs as a frozen copy; ``model`` is left as it was. ``precision``:
    "auto" uses bfloat16 where the CPU has it (``fast_forward.inference_network``;
    Dice on the realistic benchmark moved by at most 0.0015), "float32" for
    bit-for-bit reproducible maps across machines. ``tomogram``: its name, written into
    the map's header so that picks from the map name it (rlnTomoName) whatever the file's name.
    """
    torch_device = pick_device(device)
    network = inference_network(model.network, torch_device, precision)
    settings, scale = working_preprocess(model, voxel_size, rescale)
    binning = settings.binning
    context = getattr(network, "context", 0)
    if roi is not None:
        volume = volume[roi]
        origin = tuple(o + s.start * voxel_size if s.start else o for o, s in zip(origin, roi))
    pre = _preprocessor_for(model, settings, volume, preprocessor)
    nz, ny, nx = volume.shape
    batch_slices = capped_batch(batch_slices, pre.shape)
    stream = None
    if output is not None:
        store = np.uint16 if dtype == "uint8" else (np.float16 if dtype == "float16" else np.float32)
        labels = (threshold_label(model.feature, model.threshold), *tomogram_labels(tomogram or ""))
        stream = MrcStream(Path(output), volume.shape, store, voxel_size, origin, overwrite,
                           labels=labels)
    try:
        done = 0
        upsample = ZUpsampler(binning, nz, pre.shape[0])
        for zb0 in range(0, pre.shape[0], batch_slices):
            if stop is not None and stop.is_set():
                raise Cancelled("segmentation cancelled; no output was kept.")
            zb1 = min(zb0 + batch_slices, pre.shape[0])
            planes = stack_context(pre.slab(zb0 - context, zb1 + context), context)
            prob = predict_planes(network, planes, torch_device, scale=scale, tile=tile)
            z0, z1, prob = upsample.push(zb0, unbin_slices(prob, binning, ny, nx))
            prob = np.clip(prob, 0.0, 1.0)
            if stream is not None:
                stream.write(z0, _to_output(prob, dtype).astype(stream.dtype))
            done = z1
            last = done >= nz
            path = stream.finish() if (stream is not None and last) else None
            yield SegmentProgress(done=done, total=nz, z0=z0, z1=z1, probability=prob, path=path)
    except BaseException:
        if stream is not None:
            stream.abort()
        raise


def segment(volume: np.ndarray, model: TrainedModel, voxel_size: float, **kwargs) -> np.ndarray:
    """Whole probability volume in memory (small tomograms, tests, previews)."""
    kwargs.pop("output", None)
    parts = [p.probability for p in iter_segment(volume, model, voxel_size, **kwargs)]
    return np.concatenate(parts, axis=0)
