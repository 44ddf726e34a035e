"""Transition tuning (METHOD.md §3): turn a trained MoT model into a sparse model that needs no batch.

Every MoT layer becomes a Token Choice layer that reuses the MoT tensors unchanged — router := controller,
experts := experts — with top-1 routing, capacity factor 1.25 and load-balancing weight 0.01 by default; the same
logits are now normalised over experts instead of over the group, which is why the loss spikes at the switch
before training recovers it. Alternatives to compare: Expert Choice (router and experts reused the same way) and
discrete MoT (argmax routing over the group, no retraining).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import torch

from .checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    read_config,
    read_weights,
    save_weights,
    write_json_atomic,
)
from .config import ModelConfig

TARGETS: dict[str, str] = {"token-choice": "token_choice", "expert-choice": "expert_choice", "discrete-mot": "mot"}


@dataclasses.dataclass(frozen=True)
class TokenChoiceSettings:
    """Routing settings of the converted Token Choice layers (the paper's defaults)."""

    top_k: int = 1
    capacity_factor: float = 1.25
    load_balance_weight: float = 0.01
    scope: str = "batch"


PAPER_SETTINGS = TokenChoiceSettings()


def convert_config(config: ModelConfig, target: str, settings: TokenChoiceSettings = PAPER_SETTINGS) -> ModelConfig:
    """The converted model's config: the MoT blocks change kind, everything else is kept."""
    if target not in TARGETS:
        raise ValueError(f"--to {target!r} is not a conversion target; allowed values: {', '.join(TARGETS)}.")
    if "mot" not in config.block_ffn_kinds():
        kinds = ", ".join(config.block_ffn_kinds())
        raise ValueError(f"the checkpoint has no MoT layer to convert (its blocks are: {kinds}).")
    if target == "discrete-mot":
        return dataclasses.replace(config, mot_routing="discrete")
    replaced = dataclasses.replace(config, ffn=TARGETS[target])
    if target == "token-choice":
        replaced = dataclasses.replace(
            replaced,
            top_k=settings.top_k,
            capacity_factor=settings.capacity_factor,
            load_balance_weight=settings.load_balance_weight,
            tc_scope=settings.scope,
        )
    return replaced


def convert_weights(weights: dict[str, torch.Tensor], config: ModelConfig, target: str) -> dict[str, torch.Tensor]:
    """Rename each MoT controller to the router of the new layer; every tensor is kept bit for bit (Expert
    Choice adds its output LayerNorm, initialised to the identity)."""
    if target == "discrete-mot":
        return dict(weights)
    mot_blocks = [i for i, kind in enumerate(config.block_ffn_kinds()) if kind == "mot"]
    renamed = dict(weights)
    for index in mot_blocks:
        prefix = f"blocks.{index}.ffn."
        controller = renamed.pop(prefix + "controller")
        renamed[prefix + "router"] = controller
        if target == "expert-choice":  # Expert Choice's output LayerNorm has no MoT counterpart: identity init
            renamed[prefix + "norm.weight"] = torch.ones(config.d_model, dtype=controller.dtype)
            renamed[prefix + "norm.bias"] = torch.zeros(config.d_model, dtype=controller.dtype)
    return renamed


def convert_checkpoint(
    source: Path,
    out: Path,
    target: str,
    *,
    settings: TokenChoiceSettings = PAPER_SETTINGS,
    force: bool = False,
) -> Path:
    """Write the converted checkpoint to `out` (a new directory unless `force`); returns `out`.

    All checks run before anything is written; the new config records where it came from.
    """
    source, out = Path(source), Path(out)
    saved = read_config(source)
    model_config = ModelConfig(**saved["model"])
    converted_config = convert_config(model_config, target, settings)
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"--out {out} already exists and is not empty; pass --force to overwrite it.")
    if out.resolve() == source.resolve():
        raise ValueError("--out must differ from --checkpoint: the source checkpoint is never overwritten.")
    weights = convert_weights(read_weights(source / WEIGHTS_FILE), model_config, target)

    out.mkdir(parents=True, exist_ok=True)
    save_weights(weights, out / WEIGHTS_FILE)
    tokenizer: dict[str, Any] = saved.get("tokenizer", {})
    if "file" in tokenizer:
        shutil.copyfile(source / tokenizer["file"], out / tokenizer["file"])
    payload = {
        **saved,
        "model": dataclasses.asdict(converted_config),
        "converted_from": {
            "checkpoint": str(source.resolve()),
            "target": target,
            "source_model": saved["model"],
            "source_run": saved.get("run"),
            "source_steps": saved.get("train", {}).get("steps"),
        },
    }
    write_json_atomic(out / CONFIG_FILE, payload)
    return out


__all__ = [
    "PAPER_SETTINGS",
    "TARGETS",
    "TokenChoiceSettings",
    "convert_checkpoint",
    "convert_config",
    "convert_weights",
]
