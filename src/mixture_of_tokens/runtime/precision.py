"""Numeric precision of a training run.

fp32        everything in float32 (the default on CPU, where bf16 matmuls are several times slower)
bf16-mixed  bf16 autocast for the forward, float32 master weights and optimizer state (default on CUDA)
bf16-pure   parameters and optimizer state in bf16 (the paper's "bf16-only"), LayerNorms kept in float32;
            routing softmaxes and their statistics are computed in float32 by the layers themselves
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from ..config import PRECISIONS


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; allowed values: {', '.join(PRECISIONS)}.")
    if precision == "auto":
        return "bf16-mixed" if device.type == "cuda" else "fp32"
    return precision


def prepare_model(model: nn.Module, precision: str) -> nn.Module:
    """Cast parameters for bf16-pure (LayerNorms stay float32); other modes keep float32 weights."""
    if precision == "bf16-pure":
        model.to(torch.bfloat16)
        for module in model.modules():
            if isinstance(module, nn.LayerNorm):
                module.float()
    return model


@contextlib.contextmanager
def autocast(precision: str, device: torch.device) -> Iterator[None]:
    """bf16 autocast for bf16-mixed; nothing otherwise."""
    if precision == "bf16-mixed":
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def bytes_per_parameter(precision: str) -> int:
    return 2 if precision == "bf16-pure" else 4
