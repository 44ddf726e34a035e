"""Transition tuning inside one run (docs/method.md §3, as the authors ran it): at the switch step every MoT layer
becomes a Token Choice (or Expert Choice) layer made of the same parameter objects, so AdamW keeps their moments,
the LR schedule runs on over all steps, and only parameters without an MoT counterpart start with fresh state.

The routing settings after the switch are the run's own ModelConfig fields (tc_top_k, tc_capacity_factor,
tc_load_balance_weight, tc_z_loss_weight, tc_scope), whose defaults are the paper's.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..config import ModelConfig, TrainConfig
from ..layers.conversion import (
    ROUTING_FIELDS,
    SWITCH_TARGETS,
    TARGETS,
    convert_config,
    convert_model_in_place,
    has_convertible_layers,
)


def switched_config(config: ModelConfig, target: str) -> ModelConfig:
    """The model config after switching to `target` (token-choice | expert-choice), keeping the run's routing."""
    return convert_config(config, target, **{name: getattr(config, name) for name in ROUTING_FIELDS})


def switch_in_place(model: nn.Module, optimizer: torch.optim.Optimizer | None, target: str) -> ModelConfig:
    """Switch `model` (a plain Transformer, not wrapped) and register its new parameters with `optimizer`; returns
    the new config. Parameter order in the optimizer is deterministic, so a resumed run that switches again before
    loading its optimizer state lines up with the saved one."""
    converted = switched_config(model.config, target)
    fresh = convert_model_in_place(model, converted)
    if optimizer is not None:
        kept = {id(p) for p in model.parameters()}
        for group in optimizer.param_groups:  # tensors the target has no use for (a learnable temperature, W_e)
            # by identity: list.remove would compare tensors with ==, whose elementwise result has no truth value
            for parameter in [p for p in group["params"] if id(p) not in kept]:
                optimizer.state.pop(parameter, None)  # its moments go with it
            group["params"] = [p for p in group["params"] if id(p) in kept]
        no_decay = next(g for g in optimizer.param_groups if g["weight_decay"] == 0.0)
        decay = optimizer.param_groups[0]
        decay_all = any(p.dim() < 2 for p in decay["params"])  # weight_decay_params="all" (build_optimizer)
        for parameter in fresh:
            (decay if decay_all or parameter.dim() >= 2 else no_decay)["params"].append(parameter)
    return converted


def switched_copy(model: nn.Module, target: str) -> nn.Module:
    """A converted deep copy of `model` for evaluating "the loss if switched now"; `model` is left untouched."""
    copied = copy.deepcopy(model)
    switch_in_place(copied, None, target)
    return copied


def check_switch(config: ModelConfig, train_config: TrainConfig, *, world_size: int = 1, parallel: str = "ddp") -> None:
    """Fail before any compute when a switch (or the loss-if-switched evaluation) cannot happen as asked."""
    for setting in ("switch_to", "eval_also"):
        target = getattr(train_config, setting)
        if not target:
            continue
        if target not in SWITCH_TARGETS:
            raise ValueError(f"{setting}={target!r} is not supported; allowed values: {', '.join(SWITCH_TARGETS)}.")
        if setting == "switch_to" and config.ffn == TARGETS[target] and not has_convertible_layers(config):
            continue  # a run resumed after its switch
        switched_config(config, target)  # the model has MoT layers to convert
    if not train_config.switch_to:
        return
    steps, switch_at = train_config.steps, train_config.switch_at
    if not 1 <= switch_at < steps:
        raise ValueError(
            f"switch_at={switch_at} must be a step in 1..steps-1={steps - 1} for switch_to={train_config.switch_to!r}."
        )
    if world_size > 1 and parallel == "fsdp":
        raise ValueError("switch_to needs parallel='ddp' (or one process): FSDP shards cannot change layer kind.")


__all__ = ["check_switch", "switch_in_place", "switched_config", "switched_copy"]
