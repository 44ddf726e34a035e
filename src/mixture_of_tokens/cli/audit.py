"""`mot audit [CHECKPOINT_DIR | --preset NAME]`: future-token leakage and cross-sequence coupling, per layer type
or for a whole model."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from ..spelling import setting
from .config_args import add_config_fields, handler, option
from .help_text import examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="perturb one token and report which outputs move (future-token leakage, cross-sequence coupling)",
        description=(
            "Without arguments: audit every feed-forward layer type (dense, MoT across the batch and within "
            "sequences, Expert Choice, Token Choice in its group, dropless and batch scopes) on an input where Token "
            "Choice capacity binds. With a checkpoint "
            "directory or --preset: audit that whole model on random token ids."
        ),
        **examples("mot audit", "mot audit --preset tiny-mot --seq-len 32", "mot audit runs/tiny-mot --json"),
    )
    add_config_fields(parser, AuditConfig)
    parser.set_defaults(handler=handler(run, AuditConfig))


@dataclass(frozen=True, kw_only=True)
class AuditConfig:
    """What `mot audit` perturbs: the layer types (no checkpoint, no preset) or one whole model."""

    checkpoint: str | None = option(
        "checkpoint or finished run directory (default: layer types)", None, positional=True, metavar="checkpoint"
    )
    preset: str | None = option("audit a freshly initialised model of this preset instead", None)
    batch_size: int | None = option("sequences (default: 8 for layers; 2 groups for models)", None)
    seq_len: int = option("sequence length", 16)
    sequence: int = option("which sequence gets the perturbed token", 0)
    position: int | None = option("position t of the perturbed token (default: the last)", None)
    seed: int = option("seed of the layers and inputs", 0)
    json: bool = option("print the results as JSON instead of a table", False)

    def __post_init__(self) -> None:
        if self.checkpoint and self.preset:
            raise ValueError(f"give either a checkpoint directory or {setting('preset')}, not both.")
        for name in ("seq_len", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{setting(name)} must be a positive integer, got {value}.")


def run(config: AuditConfig) -> None:
    from ..audit import audit_layer_types, audit_model, default_batch, format_table

    if config.checkpoint or config.preset:
        model, name = _load(config)
        batch = config.batch_size or default_batch(model.config)
        results = [
            audit_model(
                model,
                name=name,
                batch=batch,
                seq_len=config.seq_len,
                sequence=config.sequence,
                position=config.position,
                seed=config.seed,
            )
        ]
    else:
        results = audit_layer_types(
            batch=config.batch_size or 8,
            seq_len=config.seq_len,
            sequence=config.sequence,
            position=config.position,
            seed=config.seed,
        )
    if config.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(format_table(results))


def _load(config: AuditConfig):
    import torch

    from ..model import Transformer

    if config.preset:
        from ..presets import get_preset

        preset = get_preset(config.preset)
        torch.manual_seed(config.seed)
        return Transformer(preset.model).eval(), f"preset {preset.name}"
    from ..checkpoint import load_model

    model, _, _ = load_model(config.checkpoint)
    return model, str(config.checkpoint)
