"""The one place a device name (auto | cpu | cuda) becomes a torch.device, and the one way a host batch reaches it."""

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


def pins_host_memory(device: torch.device) -> bool:
    """True where a host batch goes to `device` through pinned memory without blocking the host: CUDA. A copy
    from pageable memory makes the host wait for the GPU to finish its queued work (a sync every step)."""
    return device.type == "cuda"


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`tensor` on `device`: a CPU tensor bound for CUDA is pinned and copied with non_blocking=True (ordered on the
    current stream before the kernels that read it; PyTorch keeps the pinned buffer until the copy is done);
    anything else as `tensor.to(device)`, which on the CPU is the tensor itself."""
    if tensor.device.type == "cpu" and pins_host_memory(device):
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
