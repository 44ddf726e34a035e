"""Config dataclasses as command-line flags: one --flag per field, help from the field's docstring."""

from __future__ import annotations

import argparse
import dataclasses

from ..config import ModelConfig, TrainConfig, field_help
from ..presets import PRESETS, get_preset

_CASTS = {"int": int, "float": float, "str": str}


def add_config_fields(
    parser: argparse.ArgumentParser, cls: type, title: str, *, only: tuple[str, ...] | None = None
) -> None:
    """One --flag per dataclass field (or per field named in `only`); defaults stay None so the preset's (or the
    checkpoint's) values apply unless overridden."""
    group = parser.add_argument_group(title)
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", "bool | None"):
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
    """The fields of `cls` given on the command line."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None}


def configs_from_args(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    """The preset's configs with the command line's overrides applied (and validated)."""
    preset = get_preset(args.preset)
    model = dataclasses.replace(preset.model, **overrides(args, ModelConfig))
    train = dataclasses.replace(preset.train, **overrides(args, TrainConfig))
    return model, train


def config_flags(config: object, base: object | None = None) -> str:
    """The command-line flags that rebuild a config dataclass from its defaults, or from `base` (a config of the
    same class, e.g. a preset's) when given; fields equal to those are left out: the inverse of
    `add_config_fields`."""
    flags = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value == (f.default if base is None else getattr(base, f.name)):
            continue
        flag = "--" + f.name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + flag[2:])
        else:
            flags.append(f"{flag} {value}")
    return " ".join(flags)
