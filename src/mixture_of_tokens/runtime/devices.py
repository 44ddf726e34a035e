"""The one place a device name (auto | cpu | cuda) becomes a torch.device."""

from __future__ import annotations

import torch

DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """auto: CUDA when present, else CPU; an unknown name or an absent CUDA device is one clear error."""
    if name not in DEVICES:
        raise ValueError(f"device={name!r} is not supported; allowed values: {', '.join(DEVICES)}.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but no CUDA device is available; allowed here: cpu, auto.")
    return torch.device(name)
