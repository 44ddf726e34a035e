"""Transition tuning (docs/method.md §3) at the level of configs and tensors: which kinds an MoT model converts to,
and how each target reuses the MoT tensors. Checkpoint files are handled by `mixture_of_tokens.transition`.

Every MoT layer becomes a Token Choice layer that reuses the MoT tensors unchanged — router := controller,
experts := experts — with top-1 routing, capacity factor 1.25 and load-balancing weight 0.01 by default; the same
logits are now normalised over experts instead of over the group. Alternatives: Expert Choice (router and experts
reused the same way) and discrete MoT (argmax routing over the group, no retraining).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch

from .expert_choice import ExpertChoice
from .mot import MixtureOfTokens
from .token_choice import TokenChoice

if TYPE_CHECKING:
    from ..config import ModelConfig

TARGETS: dict[str, str] = {
    "token-choice": TokenChoice.kind,
    "expert-choice": ExpertChoice.kind,
    "discrete-mot": MixtureOfTokens.kind,
}
"""Conversion targets as the command line spells them -> the feed-forward kind they produce."""


ROUTING_FIELDS: tuple[str, ...] = ("top_k", "capacity_factor", "load_balance_weight", "z_loss_weight", "tc_scope")
"""ModelConfig fields of the converted Token Choice layers; unless overridden they take ModelConfig's defaults,
which are the paper's (top-1, capacity factor 1.25, load-balancing weight 0.01, batch scope)."""


def convert_config(config: ModelConfig, target: str, **routing: object) -> ModelConfig:
    """The converted model's config: the MoT blocks change kind, everything else is kept. `routing` overrides
    the Token Choice fields in ROUTING_FIELDS."""
    if target not in TARGETS:
        raise ValueError(f"--to {target!r} is not a conversion target; allowed values: {', '.join(TARGETS)}.")
    unknown = sorted(set(routing) - set(ROUTING_FIELDS))
    if unknown:
        raise ValueError(f"{unknown} cannot be set by a conversion; allowed settings: {', '.join(ROUTING_FIELDS)}.")
    if MixtureOfTokens.kind not in config.block_ffn_kinds():
        kinds = ", ".join(config.block_ffn_kinds())
        raise ValueError(f"the checkpoint has no MoT layer to convert (its blocks are: {kinds}).")
    if target == "discrete-mot":
        return dataclasses.replace(config, mot_routing="discrete")
    replaced = dataclasses.replace(config, ffn=TARGETS[target])
    if target == "token-choice":
        defaults = {f.name: f.default for f in dataclasses.fields(config) if f.name in ROUTING_FIELDS}
        replaced = dataclasses.replace(replaced, **{**defaults, **routing})
    return replaced


def convert_weights(weights: dict[str, torch.Tensor], config: ModelConfig, target: str) -> dict[str, torch.Tensor]:
    """Rename each MoT controller to the router of the new layer; every tensor is kept bit for bit (Expert
    Choice adds its output LayerNorm, initialised to the identity)."""
    if target == "discrete-mot":
        return dict(weights)
    mot_blocks = [i for i, kind in enumerate(config.block_ffn_kinds()) if kind == MixtureOfTokens.kind]
    renamed = dict(weights)
    for index in mot_blocks:
        prefix = f"blocks.{index}.ffn."
        controller = renamed.pop(prefix + "controller")
        renamed[prefix + "router"] = controller
        if target == "expert-choice":  # Expert Choice's output LayerNorm has no MoT counterpart: identity init
            renamed[prefix + "norm.weight"] = torch.ones(config.d_model, dtype=controller.dtype)
            renamed[prefix + "norm.bias"] = torch.zeros(config.d_model, dtype=controller.dtype)
    return renamed
