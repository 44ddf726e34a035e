"""How MoT's merge and emit weights are made from the controller's logits under each routing option: the method
(a softmax over the G tokens of a group at temperature tau) and the authors' ablations (uniform, discrete with
either tie rule, emit over experts). Tensor names as in `layers/__init__.py`: R groups, G tokens each, E experts.
"""

from __future__ import annotations

import torch

from .checks import at_least_fp32


def group_softmax(logits_RGE: torch.Tensor, tau: float | torch.Tensor) -> torch.Tensor:
    """The method's weights: for each expert, a softmax over the G tokens of the group (dim 1), in at least fp32."""
    return torch.softmax(at_least_fp32(logits_RGE) / tau, dim=1)


def group_weights(
    logits_RGE: torch.Tensor, *, routing: str, discrete_rule: str, tau: float | torch.Tensor
) -> torch.Tensor:
    """Weights normalised over the group axis (dim 1): softmax (the method), uniform (1/G), or discrete (weight 1
    on the top token of each expert's group: the first one, or every tied one under the authors' rule)."""
    if routing == "uniform":
        return torch.full_like(logits_RGE, 1.0 / logits_RGE.shape[1])
    if routing == "discrete" and discrete_rule == "project":
        top_R1E = logits_RGE.argmax(dim=1, keepdim=True)
        return torch.zeros_like(logits_RGE).scatter_(1, top_R1E, 1.0)
    weights_RGE = group_softmax(logits_RGE, tau)
    if routing == "discrete":  # the authors' rule: every tied top token gets 1
        weights_RGE = ties_at_max(weights_RGE, dim=1)
    return weights_RGE.to(logits_RGE.dtype)


def emit_over_experts(
    logits_RGE: torch.Tensor, *, routing: str, discrete_rule: str, tau: float | torch.Tensor
) -> torch.Tensor:
    """The "experts" emit ablation: each token's emit weights are a softmax over the experts (dim 2); one-hot over
    the top expert(s) under discrete routing with the authors' rule."""
    emit_RGE = torch.softmax(at_least_fp32(logits_RGE) / tau, dim=-1)
    if routing == "discrete" and discrete_rule == "authors":
        emit_RGE = ties_at_max(emit_RGE, dim=-1)
    return emit_RGE.to(logits_RGE.dtype)


def ties_at_max(weights: torch.Tensor, *, dim: int) -> torch.Tensor:
    """1 where a weight equals the maximum along `dim` (every tied maximum), else 0: the authors' argmax_one_hot."""
    return (weights == weights.amax(dim=dim, keepdim=True)).to(weights.dtype)
