"""Numeric precision of a run, resolved once into a `Precision` value that every other module asks.

fp32        everything in float32 (the default on CPU, where bf16 matmuls are several times slower)
bf16-mixed  bf16 autocast for the forward, float32 master weights and optimizer state (default on CUDA)
bf16-pure   parameters and optimizer state in bf16 (the paper's "bf16-only"), LayerNorms kept in float32;
            routing softmaxes and their statistics are computed in float32 by the layers themselves
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16-mixed", "bf16-pure")


@dataclass(frozen=True)
class Precision:
    """A resolved precision mode (never "auto")."""

    name: str

    @property
    def state_bytes(self) -> int:
        """Bytes per value of parameters, gradients and optimizer moments."""
        return 2 if self.name == "bf16-pure" else 4

    @property
    def activation_bytes(self) -> int:
        """Bytes per activation value kept for backward."""
        return 4 if self.name == "fp32" else 2

    @property
    def uses_bf16(self) -> bool:
        return self.name != "fp32"

    def prepare_model(self, model: nn.Module) -> nn.Module:
        """Cast parameters for bf16-pure (LayerNorms and RMSNorms stay float32); other modes keep float32 weights."""
        if self.name == "bf16-pure":
            model.to(torch.bfloat16)
            for module in model.modules():
                if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                    module.float()
        return model

    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        """bf16 autocast for bf16-mixed; nothing otherwise."""
        if self.name == "bf16-mixed":
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
                yield
        else:
            yield

    def __str__(self) -> str:
        return self.name


FP32 = Precision("fp32")


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """`auto` is bf16-mixed on CUDA and fp32 elsewhere; an unknown name is one clear error."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; allowed values: {', '.join(PRECISIONS)}.")
    if precision == "auto":
        precision = "bf16-mixed" if device.type == "cuda" else "fp32"
    return Precision(precision)
