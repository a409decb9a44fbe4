"""Networks, selectable by name, each a binary per-feature segmenter.

``eman2``  the EMAN2 tomoseg network exactly (Chen et al. 2017): 40 15x15
           filters, 2x2 max-pool, 40 15x15, 1 15x15; 378,081 parameters;
           output at half resolution, linear, trained against labels in [0, 1].
``unet``   a small 2.5D U-Net: neighbouring slices as input channels, 3x3
           convolutions, three resolution levels; outputs logits at full
           resolution.

Every network exposes ``output_stride`` (2 for eman2, 1 for the U-Net),
``context`` (slices on each side it reads) and ``probability(output)``
so training and inference need no per-architecture code paths.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..features import feature_default
from ..errors import InvalidSettingsError


ROTATIONS = (1, 2, 4)
# "any": trained on tiles turned by any angle, averaged over quarter turns; "wedge": only the
# turns that keep a y tilt axis where it is (flips of x and y, 180 degrees, small angles), so
# the missing wedge's anisotropy stays as the tomogram holds it; "rewedge": slabs turned by
# any angle and given the tilt series' missing wedge again, so a filament of any direction is
# shown as the tomogram would hold it (both averaged over the flips; docs/engine.md)
SYMMETRIES = ("any", "wedge", "rewedge")
# What a network sees beyond a slice's sides when it segments (``inference.predict_planes``):
# its convolutions' zeros, or EDGE_MIRROR pixels of the slice mirrored. Mirroring found the
# ribosomes the zeros hid there; it made microtubule networks draw the mirror's seam as a
# filament (docs/engine.md, "Sides of the slice"). Model files without it mean "zeros".
EDGES = ("zeros", "mirror")


def check_symmetry(symmetry: str) -> str:
    """The in-plane orientations a network is trained and averaged on (``SYMMETRIES``)."""
    if symmetry not in SYMMETRIES:
        raise InvalidSettingsError(f"symmetry must be one of {SYMMETRIES}, not {symmetry!r}.")
    return symmetry


def check_edge(edge: str) -> str:
    """What a network sees beyond a slice's sides (``EDGES``)."""
    if edge not in EDGES:
        raise InvalidSettingsError(f"edge must be one of {EDGES}, not {edge!r}.")
    return edge


def check_rotations(rotations: int) -> int:
    """How many in-plane quarter turns a prediction averages (``inference.predict_planes``)."""
    if rotations not in ROTATIONS:
        raise InvalidSettingsError(f"rotations must be one of {ROTATIONS}, not {rotations!r}.")
    return int(rotations)


class EMAN2Net(nn.Module):
    """EMAN2's tomoseg CNN; probability = clip(output, 0, 1)."""

    output_stride = 2
    channels_last_on_cpu = True  # 15x15 kernels: ~2x faster in this layout on CPU

    def __init__(self, filters: int = 40, kernel: int = 15, context: int = 0, rotations: int = 1,
                 symmetry: str = "any", edge: str = "zeros"):
        super().__init__()
        self.context = context
        self.rotations = check_rotations(rotations)
        self.symmetry = check_symmetry(symmetry)
        self.edge = check_edge(edge)
        channels = 2 * context + 1
        pad = kernel // 2
        self.conv1 = nn.Conv2d(channels, filters, kernel, padding=pad)
        self.conv2 = nn.Conv2d(filters, filters, kernel, padding=pad)
        self.conv3 = nn.Conv2d(filters, 1, kernel, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.relu(self.conv2(x))
        return self.conv3(x)

    @staticmethod
    def probability(output: torch.Tensor) -> torch.Tensor:
        return output.clamp(0.0, 1.0)

    @staticmethod
    def loss(output: torch.Tensor, label: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        """EMAN2's log of the mean squared error against labels mean-shrunk by 2.

        ``weight`` (0/1 at full resolution) leaves out pixels whose label is unknown.
        """
        target = F.avg_pool2d(label, 2)
        error = (target - torch.clamp(output, max=1.0)) ** 2
        if weight is None:
            return torch.log(torch.mean(error) + 1e-8)
        known = -F.max_pool2d(-weight, 2)  # an output pixel counts only if all 4 inputs do
        return torch.log((error * known).sum() / known.sum().clamp(min=1.0) + 1e-8)


def _block(cin: int, cout: int, norm: str = "batch") -> nn.Sequential:
    # Never Group/InstanceNorm: they normalise over the image, so a network trained
    # on 64 px tiles behaves differently on a whole 1k slice (membrane Dice 0.50 -> 0.001).
    layers: list[nn.Module] = []
    for i in range(2):
        layers.append(nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=norm == "none"))
        if norm == "batch":
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _stem3d(context: int, width: int, norm: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 1
    for _ in range(context):
        layers.append(nn.Conv3d(cin, width, 3, padding=(0, 1, 1), bias=norm != "batch"))
        if norm == "batch":
            layers.append(nn.BatchNorm3d(width))
        layers.append(nn.ReLU(inplace=True))
        cin = width
    return nn.Sequential(*layers)


class UNet25D(nn.Module):
    """Small U-Net over 2k+1 neighbouring slices; probability = sigmoid(logits)."""

    output_stride = 1
    channels_last_on_cpu = False  # 3x3 kernels gain nothing; the layout costs memory

    def __init__(self, context: int = 2, base: int = 16, levels: int = 3, norm: str = "batch",
                 stem3d: int = 0, rotations: int = 1, symmetry: str = "any",
                 edge: str = "zeros"):
        super().__init__()
        if norm not in ("batch", "none"):
            raise ValueError(f"norm must be 'batch' or 'none', not {norm!r}")
        self.context = context
        self.rotations = check_rotations(rotations)
        self.symmetry = check_symmetry(symmetry)
        self.edge = check_edge(edge)
        self.levels = levels
        widths = [base * 2 ** i for i in range(levels + 1)]
        self.down = nn.ModuleList()
        cin = 2 * context + 1
        # optional (on by default for membranes, FEATURE_PARAMETERS): 3D convolutions over the
        # context slices first, each shrinking z by 2, so a filter sees an oblique membrane
        # at every depth
        self.stem = _stem3d(context, stem3d, norm) if stem3d and context else None
        cin = stem3d if self.stem is not None else cin
        for width in widths[:-1]:
            self.down.append(_block(cin, width, norm))
            cin = width
        self.bottom = _block(widths[-2], widths[-1], norm)
        self.up = nn.ModuleList()
        self.merge = nn.ModuleList()
        for i in range(levels - 1, -1, -1):
            self.up.append(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2))
            self.merge.append(_block(2 * widths[i], widths[i], norm))
        self.head = nn.Conv2d(widths[0], 1, 1)

    @property
    def size_multiple(self) -> int:
        return 2 ** self.levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stem is not None:
            x = self.stem(x.unsqueeze(1)).squeeze(2)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottom(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)

    @staticmethod
    def probability(output: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(output)

    @staticmethod
    def loss(output: torch.Tensor, label: torch.Tensor,
             weight: torch.Tensor | None = None) -> torch.Tensor:
        """Class-balanced binary cross-entropy plus soft Dice over the batch.

        Feature pixels are rare (a membrane is ~10% of a positive tile, 0% of a
        negative one); plain BCE then calibrates to that prior and thin features
        stay below 0.5. Weighting positives by sqrt(negatives / positives) moves
        the decision boundary back towards 0.5 without bloating the masks.
        ``weight`` (0/1) leaves out pixels whose label is unknown.
        """
        known = torch.ones_like(label) if weight is None else weight
        positives = (label * known).sum()
        negatives = known.sum() - positives
        balance = torch.sqrt(negatives / positives.clamp(min=1.0)).clamp(1.0, 10.0).detach()
        bce = F.binary_cross_entropy_with_logits(output, label, pos_weight=balance,
                                                 reduction="none")
        bce = (bce * known).sum() / known.sum().clamp(min=1.0)
        prob = torch.sigmoid(output) * known
        intersection = (prob * label).sum()
        dice = 1 - (2 * intersection + 1.0) / (prob.sum() + (label * known).sum() + 1.0)
        return bce + dice


ARCHITECTURES = {"eman2": EMAN2Net, "unet": UNet25D}
DEFAULT_PARAMETERS = {"eman2": {"filters": 40, "kernel": 15, "context": 0, "symmetry": "any"},
                      "unet": {"context": 2, "base": 16, "levels": 3, "rotations": 4,
                               "symmetry": "any", "edge": "mirror"}}
# Per feature, where the realistic benchmark measured better (docs/engine.md): membranes
# gain from 3D convolutions over +-4 slices (best Dice +0.03-0.05, at the stored threshold
# +0.02-0.11, for ~3x the training time); microtubules and ribosomes do not. Microtubules
# gain from turned slabs given the missing wedge again ("rewedge": from 5 boxes Dice 0.58 /
# 0.03 -> 0.60 / 0.23 on the training / another cell over six seeds, from 10 boxes 0.77 /
# 0.09 -> 0.57 / 0.30); ribosomes (reuse F1 -0.06) and membranes (no change) do not. Orientations that keep
# the tilt axis ("wedge") gave no feature a gain beyond the seed spread.
STEM3D = {"stem3d": 16, "context": 4}
FEATURE_PARAMETERS = {"unet": {"membrane": STEM3D, "microtubule": {"symmetry": "rewedge"}}}
# Mirrored sides (EDGES) lost microtubules Dice 0.09 / 0.03 at the stored threshold (one
# ensemble, training / other cell): the seam drawn as a filament. On the real M. pneumoniae
# cell (six membrane trainings, each segmented both ways, benchmarks/bench_mpneumoniae.py)
# the mirror drew false membrane along the sides: agreement with a by-eye trace 0.31
# mirrored, 0.35 with zeros (5 of 6 better); synthetic membranes 0.65 / 0.71 -> 0.67 / 0.72.
# Apart from FEATURE_PARAMETERS: orientations set by hand must not bring the mirror back.
FEATURE_EDGES = {"unet": {"microtubule": "zeros", "membrane": "zeros"}}
# (networks, patience of each) trained and averaged by default (TrainingSettings.members,
# .patience): three U-Nets for ribosomes, each stopped after 5 checks without gain, raised
# 5-box picks from F1 0.86 / 0.89 (six single networks, training / other cell) to 0.90 /
# 0.93 (two ensembles) and took the luck of the seed out (singles 0.75-0.90), at about twice
# the training time (docs/engine.md, "Ensembles"); microtubules (rewedge) gained Dice 0.07 /
# 0.04 (two ensembles against six singles). Membranes lost Dice with patience 5 and would
# take 6-8 minutes with 10; other numbers of networks keep patience 10. With mirrored slice
# sides (EDGES) single ribosome networks rose to 0.88 (0.84-0.91) / 0.92, in 48 s, against
# 0.885 / 0.94 for the ensembles: kept for steadier reuse, one network is now a fair choice
FEATURE_ENSEMBLES = {"unet": {"ribosome": (3, 5), "microtubule": (3, 5)}}
STEM_CHOICES = ("auto", "on", "off")
MAX_MEMBERS = 8  # networks in an ensemble (parameter "members"; 1: a single network)


def stem_parameters(architecture: str, choice: str) -> dict:
    """Parameters for a user's 3D-stem choice: ``auto`` (the feature's default), ``on``, ``off``."""
    if choice not in STEM_CHOICES:
        raise InvalidSettingsError(f"the 3D stem is one of {', '.join(STEM_CHOICES)}, not {choice!r}.")
    if choice == "auto":
        return {}
    if architecture != "unet":
        if choice == "on":
            raise InvalidSettingsError("the 3D stem is a U-Net option; the eman2 network is 2D.")
        return {}
    if choice == "on":
        return dict(STEM3D)
    return {"stem3d": 0, "context": DEFAULT_PARAMETERS["unet"]["context"]}


def default_parameters(architecture: str, feature: str | None = None,
                       overrides: dict | None = None) -> dict:
    """The network's parameters for ``feature``: the architecture's defaults, the feature's
    own (whole, and only where ``overrides`` sets none of their keys), its ``edge``
    (FEATURE_EDGES, whatever else is overridden), then ``overrides``.

    A feature matches by the last word of its name ("membranes", "plasma membrane",
    not "membrane-bound vesicle").
    """
    if architecture not in ARCHITECTURES:
        build_model(architecture)  # the clear error for an unknown name
    overrides = dict(overrides or {})
    feature_own = feature_default(FEATURE_PARAMETERS.get(architecture, {}), feature, {})
    if overrides.keys() & feature_own.keys():  # e.g. an explicit context: no stem added to it
        feature_own = {}
    edge = feature_default(FEATURE_EDGES.get(architecture, {}), feature, None)
    feature_own = {**feature_own, **({"edge": edge} if edge else {})}
    return {**DEFAULT_PARAMETERS[architecture], **feature_own, **overrides}


def default_ensemble(architecture: str, feature: str | None) -> tuple[int, int] | None:
    """(networks, patience of each) ``feature`` trains unless the user says (FEATURE_ENSEMBLES),
    or None: one network."""
    return feature_default(FEATURE_ENSEMBLES.get(architecture, {}), feature, None)


def build_model(name: str, parameters: dict | None = None) -> nn.Module:
    if name not in ARCHITECTURES:
        raise InvalidSettingsError(
            f"unknown network '{name}'; choose one of {', '.join(ARCHITECTURES)}.")
    merged = {**DEFAULT_PARAMETERS[name], **(parameters or {})}
    members = merged.pop("members", 1)
    if isinstance(members, bool) or not isinstance(members, int) \
            or not 1 <= members <= MAX_MEMBERS:
        raise InvalidSettingsError(f"an ensemble has 1 to {MAX_MEMBERS} networks, not {members!r}.")
    try:
        if members > 1:  # networks trained apart, averaged (nn.ensemble)
            from .ensemble import Ensemble
            return Ensemble([ARCHITECTURES[name](**merged) for _ in range(members)])
        return ARCHITECTURES[name](**merged)
    except TypeError as exc:
        raise InvalidSettingsError(f"bad parameters for network '{name}': {exc}") from exc


def size_multiple(model: nn.Module) -> int:
    """Input sizes must be multiples of this for the output to align with the input."""
    return getattr(model, "size_multiple", getattr(model, "output_stride", 1))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
