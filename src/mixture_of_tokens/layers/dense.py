"""The dense feed-forward sublayer of the baseline Transformer (docs/method.md §2)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .base import FeedForwardLayer
from .checks import check_positive_ints

if TYPE_CHECKING:
    from ..config import ModelConfig


class FeedForward(FeedForwardLayer):
    """Linear(D, d_ff) + ReLU + Linear(d_ff, D), with biases."""

    kind = "dense"

    def __init__(self, d_model: int, *, d_ff: int) -> None:
        super().__init__()
        check_positive_ints(d_model=d_model, d_ff=d_ff)
        self.d_model = d_model
        self.d_ff = d_ff
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)

    @classmethod
    def from_config(cls, config: ModelConfig) -> FeedForward:
        return cls(config.d_model, d_ff=config.d_ff)

    @classmethod
    def activation_values_per_token(cls, config: ModelConfig) -> float:
        """The input (kept by the first linear) and the hidden layer after ReLU (kept by ReLU and the second
        linear); the pre-ReLU hidden layer and the output are not kept."""
        return config.d_model + config.d_ff

    @classmethod
    def audit_examples(cls, *, d_model: int, group_size: int, n_experts: int) -> dict[str, tuple[nn.Module, bool]]:
        return {cls.kind: (cls(d_model, d_ff=4 * d_model), True)}

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x_BSD)))

    def active_params_per_token(self) -> int:
        """Both weight matrices (biases ignored)."""
        return 2 * self.d_model * self.d_ff
