"""Config dataclasses as command-line flags: one --flag per field, help from the field's docstring."""

from __future__ import annotations

import argparse
import dataclasses

from ..config import ModelConfig, TrainConfig, field_help
from ..presets import PRESETS, get_preset

_CASTS = {"int": int, "float": float, "str": str}


def add_config_fields(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """One --flag per dataclass field; defaults stay None so the preset's values apply unless overridden."""
    group = parser.add_argument_group(title)
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        if f.type == "bool":
            group.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{helps[f.name]} (default {f.default})",
            )
        else:
            group.add_argument(
                flag,
                dest=f.name,
                type=_CASTS[f.type],
                default=None,
                metavar=f.type.upper(),
                help=f"{helps[f.name]} (default {f.default!r})",
            )


def add_preset_and_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default=None, help=f"one of: {', '.join(PRESETS)}")
    add_config_fields(parser, ModelConfig, "model (overrides the preset)")
    add_config_fields(parser, TrainConfig, "training (overrides the preset)")


def overrides(args: argparse.Namespace, cls: type) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """The preset's configs with the command line's overrides applied (and validated)."""
    preset = get_preset(args.preset)
    model = dataclasses.replace(preset.model, **overrides(args, ModelConfig))
    train = dataclasses.replace(preset.train, **overrides(args, TrainConfig))
    return model, train
