"""Several networks trained apart on the same boxes, their probabilities averaged.

From five boxes, what a network learns depends on its seed (initial weights, the
order of its batches): on the realistic benchmark one seed's ribosome picks scored
F1 0.75 and another's 0.90 on the same boxes (docs/engine.md). The mean of the maps
of networks trained with other seeds evens that out. An ensemble is stored as one
model (parameter ``members``), so segmenting, merging and picking treat it like any
other; each member keeps its own fast inference path.
"""

from __future__ import annotations

import torch
from torch import nn

# attributes the training and inference code read from a network; all members share them
SHARED = ("context", "rotations", "symmetry", "edge", "output_stride", "size_multiple")


class Ensemble(nn.Module):
    """The mean probability of its members; ``probability`` passes it through."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError("an ensemble has at least two members")
        self.members = nn.ModuleList(members)
        for name in SHARED:
            if hasattr(members[0], name):
                setattr(self, name, getattr(members[0], name))
        halos = [getattr(m, "receptive_halo", False) for m in members]
        if all(h is not False for h in halos):  # frozen inference copies know theirs
            self.receptive_halo = None if None in halos else max(halos)
        self.channels_last_on_cpu = all(getattr(m, "channels_last_on_cpu", False)
                                        for m in members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for member in self.members:
            prob = member.probability(member(x)).float()
            total = prob if total is None else total + prob
        return total / len(self.members)

    @staticmethod
    def probability(output: torch.Tensor) -> torch.Tensor:
        return output


def members_of(network: nn.Module) -> list[nn.Module] | None:
    """The members of an ensemble, None for a single network."""
    return list(network.members) if isinstance(network, Ensemble) else None
