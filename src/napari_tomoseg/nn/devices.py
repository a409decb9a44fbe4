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
