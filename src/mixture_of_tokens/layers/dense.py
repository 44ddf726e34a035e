"""The dense feed-forward sublayer of the baseline Transformer (docs/method.md §2), or Llama's SwiGLU MLP."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .base import FeedForwardLayer
from .checks import check_choice, check_positive_ints
from .experts import FFN_ACTIVATIONS, expert_matrices, kept_hidden_values

if TYPE_CHECKING:
    from ..config import ModelConfig


class FeedForward(FeedForwardLayer):
    """Linear(D, d_ff) + ReLU + Linear(d_ff, D), with biases (the paper's block); with activation "swiglu",
    down(silu(gate(x)) * up(x)) (Llama's MLP: gate, up and down projections). `bias=False` drops every bias."""

    kind = "dense"
    native_role = "gated_mlp"  # with SwiGLU and no biases (export/native.py checks the block options)

    def __init__(self, d_model: int, *, d_ff: int, activation: str = "relu", bias: bool = True) -> None:
        super().__init__()
        check_positive_ints(d_model=d_model, d_ff=d_ff)
        check_choice("ffn_activation", activation, FFN_ACTIVATIONS)
        self.d_model = d_model
        self.d_ff = d_ff
        self.activation = activation
        if activation == "swiglu":
            self.gate = nn.Linear(d_model, d_ff, bias=bias)
        self.up = nn.Linear(d_model, d_ff, bias=bias)
        self.down = nn.Linear(d_ff, d_model, bias=bias)

    @classmethod
    def from_config(cls, config: ModelConfig) -> FeedForward:
        return cls(config.d_model, d_ff=config.d_ff, activation=config.ffn_activation, bias=config.dense_bias)

    @classmethod
    def sized_fields(cls, config: ModelConfig, *, size: str = "", blocks: str = "all") -> dict[str, object]:
        """Every block dense, whatever `blocks` says (the blocks ffn_blocks leaves out are dense too); no size."""
        return {"ffn": cls.kind}

    @classmethod
    def activation_values_per_token(cls, config: ModelConfig) -> float:
        """The input (kept by the first linear) and, for ReLU, the hidden layer after ReLU (kept by ReLU and the
        second linear); the pre-ReLU hidden layer and the output are not kept. SwiGLU keeps the gate and up
        projections, silu's output and their product (4 d_ff)."""
        return config.d_model + kept_hidden_values(config.ffn_activation, config.d_ff)

    @classmethod
    def audit_examples(cls, *, d_model: int, group_size: int, n_experts: int) -> dict[str, tuple[nn.Module, bool]]:
        swiglu = cls(d_model, d_ff=4 * d_model, activation="swiglu", bias=False)
        return {cls.kind: (cls(d_model, d_ff=4 * d_model), True), f"{cls.kind}[swiglu]": (swiglu, True)}

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        if self.activation == "swiglu":
            return self.down(nn.functional.silu(self.gate(x_BSD)) * self.up(x_BSD))
        return self.down(torch.relu(self.up(x_BSD)))

    def active_params_per_token(self) -> int:
        """Every weight matrix (biases ignored): two for ReLU, three for SwiGLU."""
        return expert_matrices(self.activation) * self.d_model * self.d_ff
