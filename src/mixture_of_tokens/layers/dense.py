"""The dense feed-forward sublayer of the baseline Transformer."""

from __future__ import annotations

import torch
from torch import nn


class FeedForward(nn.Module):
    """Linear(d, d_ff) + ReLU + Linear(d_ff, d), with biases (METHOD.md §2)."""

    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        if d_model < 1 or d_ff < 1:
            raise ValueError(f"d_model and d_ff must be positive integers, got d_model={d_model}, d_ff={d_ff}.")
        self.d_model = d_model
        self.d_ff = d_ff
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x_BSD)))

    def active_params_per_token(self) -> int:
        """Both weight matrices (biases ignored)."""
        return 2 * self.d_model * self.d_ff

    def flops_per_token(self) -> int:
        """Multiply-adds x2 of one token's forward pass (biases ignored)."""
        return 2 * 2 * self.d_model * self.d_ff
