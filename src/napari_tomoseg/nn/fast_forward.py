"""Inference-only forward passes: same numbers as the eager network, less time and memory.

``inference_network`` makes a frozen copy for segmentation (the model that
training continues from is never touched): BatchNorm folded into the
preceding convolution, big kernels (the eman2 network's 15x15) evaluated by
FFT overlap-save, and the channels_last layout on the CPU. ``tiled_forward``
runs a network over a slice in tiles with a halo of ``receptive_halo``
pixels, so activations stay bounded whatever the slice size; the result
equals the whole-slice forward to float rounding, at tile borders too.
Measured on 2 cores in benchmarks/bench_inference.py.
"""

from __future__ import annotations

import copy
import math
import operator
from fractions import Fraction

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .ensemble import Ensemble, members_of
from .models import size_multiple

FFT_MIN_KERNEL = 7  # smaller kernels are faster direct (oneDNN); 15x15 is ~10x faster by FFT
FFT_SIZES = (32, 48, 64, 96, 128, 192, 256)  # overlap-save block sizes tried
FFT_SPECTRUM_BYTES = 32 * 2 ** 20  # 40x40 channels: blocks of 64; 1x40: up to 256


def fold_batchnorm(network: nn.Module) -> nn.Module:
    """A copy in eval mode with every Conv -> BatchNorm pair (2D or 3D) in a Sequential fused.

    In eval mode BatchNorm is an affine map per channel, so it folds into the
    convolution's weights and bias: one pass over the activations fewer.
    """
    folded = copy.deepcopy(network).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            conv, norm = module[i], module[i + 1]
            if isinstance(conv, (nn.Conv2d, nn.Conv3d)) and isinstance(
                    norm, (nn.BatchNorm2d, nn.BatchNorm3d)):
                module[i] = fuse_conv_bn_eval(conv, norm)
                module[i + 1] = nn.Identity()
    return folded


class SlidingStem(nn.Module):
    """A 3D stem (``UNet25D.stem``) run once over a slab instead of once per slice.

    Segmentation feeds consecutive slices, each with its +-c neighbours, so
    slice i's window is slice i+1's shifted by one: the stem's z-valid 3D
    convolutions over the slab they come from give every slice's output at
    once: for four layers over +-4 slices, 28 slice-convolutions instead of 64 for
    a batch of 4 (up to 4x fewer for long batches). Any other batch (training tiles)
    goes window by window, as the stem itself would.
    """

    def __init__(self, stem: nn.Module):
        super().__init__()
        self.stem = stem

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, 1, 2c + 1, y, x)
        if x.shape[0] > 1 and torch.equal(x[1:, 0, :-1], x[:-1, 0, 1:]):
            slab = torch.cat([x[0, 0], x[1:, 0, -1]])  # (n + 2c, y, x)
            out = self.stem(slab[None, None])  # (1, channels, n, y, x)
            return out[0].transpose(0, 1).unsqueeze(2).contiguous()
        return self.stem(x)


class FFTConv2d(nn.Module):
    """A stride-1, 'same'-padded Conv2d by FFT overlap-save: the same output, fewer flops.

    A 15x15 kernel costs 225 multiply-adds per pixel and channel pair directly;
    in FFT blocks it costs a few complex ones, so the time goes from compute
    to memory traffic. The block size is chosen per input size, among those
    whose kernel spectrum fits FFT_SPECTRUM_BYTES, for the least padded data.
    """

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.kernel, self.pad = conv.kernel_size[0], conv.kernel_size[0] // 2
        self.register_buffer("weight", conv.weight.detach().float().clone())
        bias = conv.bias.detach().float() if conv.bias is not None else torch.zeros(conv.out_channels)
        self.register_buffer("bias", bias.view(1, -1, 1, 1).clone())
        self._spectra: dict[int, torch.Tensor] = {}

    @staticmethod
    def applies(module: nn.Module) -> bool:
        return (type(module) is nn.Conv2d
                and module.kernel_size[0] == module.kernel_size[1] >= FFT_MIN_KERNEL
                and module.kernel_size[0] % 2 == 1 and module.stride == (1, 1)
                and module.dilation == (1, 1) and module.groups == 1
                and module.padding == (module.kernel_size[0] // 2,) * 2
                and module.padding_mode == "zeros")

    def _block(self, h: int, w: int) -> int:
        """The FFT size with the least padded data whose spectrum fits the budget."""
        cout, cin = self.weight.shape[:2]
        fits = [L for L in FFT_SIZES if L >= 2 * self.kernel
                and cin * cout * L * (L // 2 + 1) * 8 <= FFT_SPECTRUM_BYTES] or [2 * self.kernel]
        blocks = (lambda L: -(-h // (L - self.kernel + 1)) * -(-w // (L - self.kernel + 1)))
        return min(fits, key=lambda L: (blocks(L) * L * L, L))

    def _spectrum(self, L: int) -> torch.Tensor:
        """(frequencies, in, out) conjugate kernel spectrum: correlation, as Conv2d computes."""
        if L not in self._spectra:
            spectrum = torch.fft.rfft2(self.weight, s=(L, L)).conj_physical()
            self._spectra[L] = spectrum.flatten(2).permute(2, 1, 0).contiguous()
        return self._spectra[L]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, cin, h, w = x.shape
        L = self._block(h, w)
        B, p = L - self.kernel + 1, self.pad
        by, bx = -(-h // B), -(-w // B)
        x = F.pad(x.float(), (p, bx * B + L - B - w - p, p, by * B + L - B - h - p))
        blocks = x.unfold(2, L, B).unfold(3, L, B)  # (n, cin, by, bx, L, L)
        spec = torch.fft.rfft2(blocks)  # (n, cin, by, bx, L, L//2+1)
        spec = spec.permute(4, 5, 0, 2, 3, 1).reshape(-1, n * by * bx, cin)
        out = torch.bmm(spec, self._spectrum(L))  # (frequencies, blocks, out)
        cout = out.shape[-1]
        # one transposing copy: an FFT over strided frequencies is several times slower
        out = out.reshape(L, L // 2 + 1, n, by, bx, cout).permute(2, 5, 3, 4, 0, 1).contiguous()
        out = torch.fft.irfft2(out, s=(L, L))[..., :B, :B]  # (n, cout, by, bx, B, B)
        out = out.permute(0, 1, 2, 4, 3, 5).reshape(n, cout, by * B, bx * B)
        return out[:, :, :h, :w] + self.bias


def _swap_fft_convs(network: nn.Module) -> int:
    """Replace big-kernel convolutions by FFTConv2d in place; how many were replaced."""
    swapped = 0
    for name, child in list(network.named_children()):
        if FFTConv2d.applies(child):
            setattr(network, name, FFTConv2d(child))
            swapped += 1
        else:
            swapped += _swap_fft_convs(child)
    return swapped


PRECISIONS = ("auto", "float32", "bfloat16")


def bfloat16_pays(device: torch.device) -> bool:
    """True on CPUs with native bfloat16 arithmetic (avx512_bf16 or AMX), where oneDNN runs
    bfloat16 convolutions faster; elsewhere it is emulated and slower. oneDNN's own check
    accepts any AVX-512 CPU, so the CPU's flags are read (Linux; other systems: float32)."""
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def inference_network(network: nn.Module, device: torch.device,
                      precision: str = "float32") -> nn.Module:
    """A frozen copy of ``network`` for segmentation on ``device``; the original is untouched.

    Receptive field and output stride are those of the original (measured on
    it), so tiling stays exact. A network without convolutions or BatchNorm
    (a test double) has nothing to gain and is used itself, in eval mode.
    ``precision`` "auto" computes in bfloat16 on CPUs where that pays (``bfloat16_pays``)
    for networks of small convolutions (not the FFT ones); the map is float32 either way.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}.")
    members = members_of(network)
    if members:  # an ensemble: each member its own fast copy, averaged as before
        return Ensemble([inference_network(m, device, precision) for m in members]).eval()
    if not any(isinstance(m, (nn.Conv2d, nn.BatchNorm2d)) for m in network.modules()):
        return network.to(device).eval()
    fast = fold_batchnorm(network).to(device)
    stem = getattr(fast, "stem", None)
    if isinstance(stem, nn.Module) and any(isinstance(m, nn.Conv3d) for m in stem.modules()):
        # a z-valid 3D stem (UNet25D); the halo is traced on `network`, never on the wrapper
        fast.stem = SlidingStem(fast.stem)
    if device.type == "cpu":  # FFT and layout choices measured on CPU only
        swapped = _swap_fft_convs(fast)
        # folded 3x3 convolutions run ~1.7x faster channels_last in oneDNN
        fast.channels_last_on_cpu = swapped == 0 and not any(
            isinstance(m, nn.Conv3d) for m in fast.modules())  # 5D weights have no such layout
        if fast.channels_last_on_cpu:
            fast = fast.to(memory_format=torch.channels_last)
        wanted = precision == "bfloat16" or (precision == "auto" and bfloat16_pays(device))
        if wanted and swapped == 0:
            fast = fast.to(torch.bfloat16)
    for parameter in fast.parameters():
        parameter.requires_grad_(False)
    try:
        fast.receptive_halo = receptive_halo(network)
    except Exception:  # noqa: BLE001 - untraceable (data-dependent control flow): whole slices
        fast.receptive_halo = None
    return fast


_POINTWISE_MODULES = (nn.BatchNorm2d, nn.BatchNorm3d, nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Identity, nn.Dropout,
                      nn.Dropout2d, nn.GELU, nn.SiLU, nn.Tanh)
_POINTWISE_FUNCTIONS = {F.relu, F.leaky_relu, torch.relu, torch.sigmoid, torch.tanh, torch.cat,
                        torch.add, torch.mul, operator.add, operator.mul, operator.getitem}


def _window(kernel, stride, padding, dilation=1) -> tuple[int, int, int, int]:
    """The x axis of a layer as (kernel, stride, padding, dilation).

    Square in y and x throughout; a 3D layer's (z, y, x) gives its in-plane
    window, which is what tiles of a slice depend on.
    """
    x_axis = (lambda v: v[-1] if isinstance(v, (tuple, list)) else v)
    stride = kernel if stride is None else stride
    return x_axis(kernel), x_axis(stride), x_axis(padding), x_axis(dilation)


def _propagate(extent: tuple, layer: tuple[int, int, int, int], transposed: bool) -> tuple:
    """(jump, before, after) of a node after one conv/pool layer along one axis.

    Pixel i of a node with (jump j, before a, after b) reads input pixels
    j*i - a .. j*i + b; a layer widens that by its window in input pixels.
    """
    jump, before, after = extent
    k, s, p, d = layer
    if transposed:  # output o reads inputs (o + p - d(k-1))/s .. (o + p)/s
        jump = jump / s
        return jump, before + jump * (d * (k - 1) - p), after + jump * p
    return jump * s, before + jump * p, after + jump * (d * (k - 1) - p)


def _layer_of(node, modules: dict) -> tuple[tuple[int, int, int, int], bool] | None:
    """The spatial window of an fx node, or None for pointwise ones; raises if unknown."""
    if node.op == "call_module":
        m = modules[node.target]
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)):
            return _window(m.kernel_size, m.stride, m.padding, m.dilation), isinstance(
                m, nn.ConvTranspose2d)
        if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
            return _window(m.kernel_size, m.stride, m.padding, getattr(m, "dilation", 1)), False
        if isinstance(m, _POINTWISE_MODULES):
            return None
        raise ValueError(f"receptive field of {type(m).__name__} is unknown")
    if node.op == "call_function" and node.target in (F.max_pool2d, F.avg_pool2d):
        args = dict(zip(("input", "kernel_size", "stride", "padding"), node.args), **node.kwargs)
        return _window(args["kernel_size"], args.get("stride"), args.get("padding", 0),
                       args.get("dilation", 1)), False
    if node.op in ("call_function", "call_method") and not (
            node.op == "call_method" or node.target in _POINTWISE_FUNCTIONS):
        raise ValueError(f"receptive field of {node.target} is unknown")
    return None


def receptive_halo(network: nn.Module) -> int:
    """Input pixels on each side that one output pixel depends on, from the traced layers.

    Traces the forward pass (torch.fx) and follows every path from input to
    output through convolutions, transposed convolutions and pooling, so a
    U-Net's deepest path counts. Rounded up to a multiple of
    ``size_multiple(network)``, so tiles cut at that offset keep the pooling
    grid. Raises ValueError for a layer it cannot account for.
    """
    members = members_of(network)
    if members:
        return max(receptive_halo(m) for m in members)
    graph = torch.fx.symbolic_trace(network).graph
    modules = dict(network.named_modules())
    extents: dict = {}
    for node in graph.nodes:
        inputs = [extents[a] for a in node.all_input_nodes if a in extents]
        if node.op == "placeholder":
            extents[node] = (Fraction(1), Fraction(0), Fraction(0))
            continue
        if not inputs:
            continue
        merged = (inputs[0][0], max(e[1] for e in inputs), max(e[2] for e in inputs))
        if any(e[0] != merged[0] for e in inputs):
            raise ValueError(f"{node.name} joins maps of different resolutions")
        layer = _layer_of(node, modules) if node.op != "output" else None
        extents[node] = merged if layer is None else _propagate(merged, *layer)
    jump, before, after = extents[next(n for n in graph.nodes if n.op == "output")]
    multiple = size_multiple(network)
    return multiple * math.ceil(math.ceil(max(before, after, 0)) / multiple)


def _spans(size: int, tile: int, halo: int) -> list[tuple[int, int, int, int]]:
    """(core start, core end, window start, window end) along one axis.

    A size that fits in one window is one span: no halo recomputed for nothing.
    """
    if size <= tile + 2 * halo:
        return [(0, size, 0, size)]
    return [(a, min(a + tile, size), max(a - halo, 0), min(a + tile + halo, size))
            for a in range(0, size, tile)]


def slides_slabs(network: nn.Module) -> bool:
    """True for a frozen network whose 3D stem runs over slabs (several slices per call pay)."""
    members = members_of(network)
    if members:
        return all(slides_slabs(m) for m in members)
    return isinstance(getattr(network, "stem", None), SlidingStem)


def tiled_forward(network: nn.Module, x: torch.Tensor, tile: int, halo: int,
                  channels_last: bool = False, min_pixels: int = 0) -> torch.Tensor:
    """``network(x)`` computed in windows of (tile + 2 halo)^2 pixels and slices in chunks.

    ``x`` is already padded to ``size_multiple``; ``tile`` and ``halo`` are
    multiples of it, so every window starts on the pooling grid and sees
    the same zero padding as the whole slice where it meets the slice edge.
    Planes go several per call when ``min_pixels`` (or one window) holds several: small
    planes always (``inference.SMALL_PLANE_PIXELS``), a sliding stem's slices by its tile.
    """
    n, _, height, width = x.shape
    stride = getattr(network, "output_stride", 1)
    dtype = next((p.dtype for p in network.parameters()), torch.float32)  # bfloat16 or float32
    chunk = max(1, max((tile + 2 * halo) ** 2, min_pixels) // (height * width))
    out = None
    for s0 in range(0, n, chunk):
        for y0, y1, wy0, wy1 in _spans(height, tile, halo):
            for x0, x1, wx0, wx1 in _spans(width, tile, halo):
                window = x[s0:s0 + chunk, :, wy0:wy1, wx0:wx1].to(dtype)
                if channels_last:
                    window = window.contiguous(memory_format=torch.channels_last)
                result = network(window).float()
                if out is None:
                    out = result.new_empty((n, result.shape[1], height // stride, width // stride))
                out[s0:s0 + chunk, :, y0 // stride:y1 // stride, x0 // stride:x1 // stride] = \
                    result[:, :, (y0 - wy0) // stride:(y1 - wy0) // stride,
                           (x0 - wx0) // stride:(x1 - wx0) // stride]
    return out
