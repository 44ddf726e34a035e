"""The one batched expert MLP of every sparse layer (Mixture of Tokens, Token Choice, Expert Choice).

Each of E experts is relu(x @ W1[e]) @ W2[e] without biases (docs/method.md §1), W1 [E, D, H], W2 [E, H, D]. All
experts run as two batched matmuls over a slot axis T that the routing fills (mixed tokens for MoT, dispatched
tokens for Token/Expert Choice); there is no Python loop over experts.
"""

from __future__ import annotations

import torch
from torch import nn

from .init import DEFAULT_INIT_SCALE, scaled_trunc_normal_

EXPERT_DISPATCHES: tuple[str, ...] = ("auto", "grouped", "padded")
"""How Token / Expert Choice run their experts (ModelConfig.expert_dispatch)."""


def expert_mlp(x_ETD: torch.Tensor, w1_EDH: torch.Tensor, w2_EHD: torch.Tensor) -> torch.Tensor:
    """relu(x[e] @ W1[e]) @ W2[e] for every expert e: [E, T, D] -> [E, T, D].

    `x_ETD` may be a strided view (e.g. [T, E, D] transposed): bmm reads it without a copy. The weights are cast
    to the input's dtype. ReLU runs in place: bmm's backward needs its inputs, not its output.
    """
    hidden_ETH = torch.bmm(x_ETD, w1_EDH.to(x_ETD.dtype)).relu_()
    return torch.bmm(hidden_ETH, w2_EHD.to(hidden_ETH.dtype))


def new_expert_weights(n_experts: int, d_model: int, expert_size: int) -> tuple[nn.Parameter, nn.Parameter]:
    """Uninitialised W1 [E, D, H] and W2 [E, H, D]; fill them with `init_expert_weights_`."""
    return (
        nn.Parameter(torch.empty(n_experts, d_model, expert_size)),
        nn.Parameter(torch.empty(n_experts, expert_size, d_model)),
    )


def init_expert_weights_(w1_EDH: torch.Tensor, w2_EHD: torch.Tensor, scale: float = DEFAULT_INIT_SCALE) -> None:
    """docs/method.md §1 init: truncated normal, std sqrt(scale / fan_in), fan-in D for W1 and H for W2."""
    scaled_trunc_normal_(w1_EDH, fan_in=w1_EDH.shape[1], scale=scale)
    scaled_trunc_normal_(w2_EHD, fan_in=w2_EHD.shape[1], scale=scale)
