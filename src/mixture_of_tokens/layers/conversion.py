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
from torch import nn

from .expert_choice import ExpertChoice
from .mot import MixtureOfTokens
from .mot_options import trained_temperature
from .token_choice import TokenChoice

if TYPE_CHECKING:
    from ..config import ModelConfig

TARGETS: dict[str, str] = {
    "token-choice": TokenChoice.kind,
    "expert-choice": ExpertChoice.kind,
    "discrete-mot": MixtureOfTokens.kind,
}
"""Conversion targets as the command line spells them -> the feed-forward kind they produce."""
SWITCH_TARGETS: tuple[str, ...] = tuple(name for name, kind in TARGETS.items() if kind != MixtureOfTokens.kind)
"""Targets that change the layer kind (a run can switch to them mid-training)."""


ROUTING_FIELDS: tuple[str, ...] = (
    "tc_top_k", "tc_capacity_factor", "tc_load_balance_weight", "tc_z_loss_weight", "tc_scope", "tc_norm_topk_prob",
)  # fmt: skip
"""ModelConfig fields of the converted Token Choice layers; unless overridden they take ModelConfig's defaults,
which are the paper's (top-1, capacity factor 1.25, load-balancing weight 0.01, batch scope, top-k probabilities
not renormalised)."""


def has_convertible_layers(config: ModelConfig) -> bool:
    """True when some block holds a layer that `convert_model_in_place` can switch (MoT's)."""
    return MixtureOfTokens.kind in config.block_ffn_kinds()


def convert_config(config: ModelConfig, target: str, **routing: object) -> ModelConfig:
    """The converted model's config: the MoT blocks change kind, everything else is kept. `routing` overrides
    the Token Choice fields in ROUTING_FIELDS."""
    if target not in TARGETS:
        from ..spelling import setting  # the layers import nothing of the package above them at load time

        raise ValueError(
            f"{setting('target', target)} is not a conversion target; allowed values: {', '.join(TARGETS)}."
        )
    from ..config_renames import renamed_settings  # an old name (top_k) is its field's; imported here, as above

    routing = renamed_settings(routing)
    unknown = sorted(set(routing) - set(ROUTING_FIELDS))
    if unknown:
        raise ValueError(f"{unknown} cannot be set by a conversion; allowed settings: {', '.join(ROUTING_FIELDS)}.")
    if not has_convertible_layers(config):
        kinds = ", ".join(config.block_ffn_kinds())
        raise ValueError(f"the checkpoint has no MoT layer to convert (its blocks are: {kinds}).")
    if target == "discrete-mot":  # argmax routing has no tau: a temperature schedule ends at its trained value
        tau = trained_temperature(config.mot_temperature, config.mot_temperature_schedule, config.mot_temperature_final)
        return dataclasses.replace(
            config, mot_routing="discrete", mot_temperature=tau, mot_temperature_schedule="constant",
            mot_temperature_final=0.0,
        )  # fmt: skip
    replaced = dataclasses.replace(config, ffn=TARGETS[target])
    if target == "token-choice":
        defaults = {f.name: f.default for f in dataclasses.fields(config) if f.name in ROUTING_FIELDS}
        replaced = dataclasses.replace(replaced, **{**defaults, **routing})
    return replaced


def convert_weights(weights: dict[str, torch.Tensor], config: ModelConfig, target: str) -> dict[str, torch.Tensor]:
    """Rename each MoT controller to the router of the new layer; every tensor is kept bit for bit (Expert
    Choice adds its output LayerNorm, initialised to the identity). MoT tensors the target has no counterpart
    for (a separate emit controller, a learnable temperature) are left out."""
    if target == "discrete-mot":
        return dict(weights)
    mot_blocks = [i for i, kind in enumerate(config.block_ffn_kinds()) if kind == MixtureOfTokens.kind]
    renamed = dict(weights)
    for index in mot_blocks:
        prefix = f"blocks.{index}.ffn."
        controller = renamed.pop(prefix + "controller")
        renamed[prefix + "router"] = controller
        for name in ("emit_controller", "log_temperature"):
            renamed.pop(prefix + name, None)
        if target == "expert-choice":  # Expert Choice's output LayerNorm has no MoT counterpart: identity init
            renamed[prefix + "norm.weight"] = torch.ones(config.d_model, dtype=controller.dtype)
            renamed[prefix + "norm.bias"] = torch.zeros(config.d_model, dtype=controller.dtype)
    return renamed


def convert_model_in_place(model: nn.Module, converted: ModelConfig) -> list[nn.Parameter]:
    """Turn every MoT block of `model` into the kind `converted` names, reusing the SAME parameter objects
    (router := controller, experts := experts), so an optimizer keeps their state; returns the parameters that are
    new (Expert Choice's output LayerNorm, initialised to the identity), which need fresh optimizer state.

    `converted` is `convert_config(model.config, target, ...)`; the model's config is replaced by it.
    """
    from .registry import build_ffn  # the registry imports every layer, this module included

    new_parameters: list[nn.Parameter] = []
    for block, kind in zip(model.blocks, converted.block_ffn_kinds(), strict=True):
        old = block.ffn
        if not isinstance(old, MixtureOfTokens):
            continue
        if kind == MixtureOfTokens.kind:  # discrete MoT: same layer, argmax routing
            old.set_mode(routing=converted.mot_routing)
            continue
        with torch.device("meta"):  # no throwaway allocation: every tensor is replaced below
            layer = build_ffn(kind, converted)
        layer.router, layer.w1, layer.w2 = old.controller, old.w1, old.w2
        for name, parameter in list(layer.named_parameters()):
            if parameter.is_meta:  # a norm MoT has no counterpart for: identity (weight 1, bias 0)
                module_name, _, attribute = name.rpartition(".")
                if parameter.shape != (converted.d_model,) or attribute not in ("weight", "bias"):
                    raise ValueError(
                        f"converting to {kind} would need a fresh {name} of shape {tuple(parameter.shape)}."
                    )
                # float32 in every precision mode (bf16-pure keeps norms in float32)
                fill = torch.ones if attribute == "weight" else torch.zeros
                fresh = nn.Parameter(fill(converted.d_model, device=old.controller.device))
                setattr(layer.get_submodule(module_name), attribute, fresh)
                new_parameters.append(fresh)
        block.ffn = layer.train(old.training)
    model.config = converted
    return new_parameters
