"""Initialisation of the authors' code: truncated normal, std sqrt(scale / fan_in), cut at two std."""

from __future__ import annotations

import math

import torch
from torch import nn

DEFAULT_INIT_SCALE = 0.1


@torch.no_grad()
def scaled_trunc_normal_(tensor: torch.Tensor, fan_in: int, scale: float = DEFAULT_INIT_SCALE) -> torch.Tensor:
    """Fill `tensor` in place with N(0, scale/fan_in) truncated to +-2 std."""
    std = math.sqrt(scale / fan_in)
    return nn.init.trunc_normal_(tensor, mean=0.0, std=std, a=-2 * std, b=2 * std)
