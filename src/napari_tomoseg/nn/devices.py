"""Pick where torch runs: CUDA, Apple MPS or CPU, auto-detected unless told."""

from __future__ import annotations

import torch

from ..errors import InvalidSettingsError


def pick_device(preferred: str | None = "auto") -> torch.device:
    choice = (preferred or "auto").lower()
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidSettingsError("CUDA was asked for but torch sees no CUDA GPU here.")
    if choice == "mps" and not (getattr(torch.backends, "mps", None)
                                and torch.backends.mps.is_available()):
        raise InvalidSettingsError("Apple MPS was asked for but is not available here.")
    try:
        return torch.device(choice)
    except RuntimeError as exc:
        raise InvalidSettingsError(f"unknown device '{preferred}' (use auto, cpu, cuda, mps).") from exc


def channels_last_weights(network: torch.nn.Module) -> torch.nn.Module:
    """Convolution weights channels-last (3D ones channels_last_3d), for training on a CPU.

    oneDNN's kernels take this layout natively: a training step (batch 16 of 32 px tiles,
    2 cores) took 28 instead of 33 ms for the U-Net, 68 instead of 85 ms with the 3D stem,
    and 0.53 instead of 0.82 s for the eman2 network. Values are unchanged; only strides.
    """
    for module in network.modules():
        if isinstance(module, torch.nn.Conv3d):
            module.to(memory_format=torch.channels_last_3d)
        elif isinstance(module, torch.nn.Conv2d):
            module.to(memory_format=torch.channels_last)
    return network


def contiguous_weights(network: torch.nn.Module) -> torch.nn.Module:
    """The default layout again: a trained model then segments exactly as its saved file does."""
    for parameter in network.parameters():  # clone: a size-1 axis leaves "contiguous" strides
        parameter.data = parameter.data.clone(memory_format=torch.contiguous_format)
    return network
