"""Config dataclasses as command-line flags: one --flag per field, help from the field's docstring."""

from __future__ import annotations

import argparse
import dataclasses
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from ..config import ModelConfig, TrainConfig, field_help
from ..config_renames import old_names
from ..presets import PRESETS, get_preset
from ..spelling import uses_flags

_CASTS = {"int": int, "float": float, "str": str}
Config = TypeVar("Config")


def option(
    help: str,
    default: Any = dataclasses.MISSING,
    *,
    flag: str | None = None,
    positional: bool = False,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    repeatable: bool = False,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A field of a command's config dataclass: `help` is its one-line docstring, shown by --help. Its flag is
    --NAME-WITH-DASHES unless `flag` names another (e.g. `--to` for `target`); `positional` makes it an argument
    without a flag (a tuple field takes any number of them); a `repeatable` tuple field's flag is given once per
    value (`--prompt A --prompt B`), any other tuple field's once with all of them; `choices` are its allowed
    values; a bool field is a switch (store_true). A field without a default is a required flag."""
    cli = {"flag": flag, "positional": positional, "choices": choices, "metavar": metavar, "repeatable": repeatable}
    kwargs: dict[str, Any] = {"default_factory": default_factory} if default_factory else {"default": default}
    return dataclasses.field(metadata={"help": help, "cli": cli}, **kwargs)


def overrides_of(cls: type, title: str, *, only: tuple[str, ...] | None = None) -> Any:
    """A field of a command's config dataclass holding {field: value} of the `cls` fields given on the command
    line (those named in `only`), each its own flag generated from `cls` under the heading `title`; e.g. the Token
    Choice routing settings of `mot convert`, ModelConfig fields."""
    return dataclasses.field(default_factory=dict, metadata={"help": title, "overrides": (cls, only)})


def flag_of(f: dataclasses.Field) -> str:
    """The command-line spelling of a config field: its flag, or its name for a positional argument."""
    cli = f.metadata.get("cli") or {}
    if cli.get("positional"):
        return f.name
    return cli.get("flag") or "--" + f.name.replace("_", "-")


def field_setting(cls: type, name: str) -> str:
    """A command config's field as the caller writes it: its flag under `mot` (`--N` for `params` of `mot scaling
    predict`), its name from Python; `spelling.setting` for fields whose flag is not their name with dashes."""
    return flag_of(next(f for f in dataclasses.fields(cls) if f.name == name)) if uses_flags() else name


def help_text(f: dataclasses.Field) -> str:
    """The --help line of a command's config field: its docstring, and its default when that is a number or a
    non-empty text the docstring does not describe (a switch, a required flag, an empty or machine-dependent
    default say nothing)."""
    default, text = f.default, f.metadata["help"]
    shown = isinstance(default, (int, float, str)) and not isinstance(default, bool) and default != ""
    shown = shown and "default" not in text
    return f"{text} (default {default})" if shown else text


def _cast(type_name: str) -> Callable[[str], Any]:
    name = type_name.removesuffix(" | None")
    if name.startswith("tuple["):
        name = name.removeprefix("tuple[").split(",")[0]
    return _CASTS[name]


def _add_command_field(group: argparse._ArgumentGroup, f: dataclasses.Field) -> None:
    """One argument for a field declared with `option`; its default stays None so a `--config FILE` value or the
    dataclass's own default applies (`config_from_args`). A % in the help is literal (argparse formats help)."""
    cli = f.metadata["cli"]
    is_tuple = f.type.startswith("tuple[")
    if cli["positional"]:
        nargs = "*" if is_tuple else "?"
        group.add_argument(f.name, nargs=nargs, type=_cast(f.type), default=None, metavar=cli["metavar"],
                           help=help_text(f).replace("%", "%%"))  # fmt: skip
        return
    kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text(f).replace("%", "%%")}
    if f.type == "bool":
        kwargs["action"] = "store_true"
    else:
        kwargs.update(type=_cast(f.type), choices=cli["choices"], metavar=cli["metavar"])
        if is_tuple and cli.get("repeatable"):
            kwargs["action"] = "append"
        elif is_tuple:
            kwargs["nargs"] = "+"
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            kwargs["required"] = True
    group.add_argument(flag_of(f), **kwargs)


def add_config_fields(
    parser: argparse.ArgumentParser, cls: type, title: str | None = None, *, only: tuple[str, ...] | None = None
) -> None:
    """One --flag per dataclass field (or per field named in `only`); defaults stay None so the preset's (or the
    checkpoint's, or the command config's) values apply unless overridden. A field declared with `option` (a
    command's config) gets the argument `option` describes: its own flag name, a positional, choices, a switch."""
    group = parser.add_argument_group(title) if title else parser
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        if only is not None and f.name not in only:
            continue
        if "overrides" in f.metadata:
            fields_of, names = f.metadata["overrides"]
            add_config_fields(parser, fields_of, f.metadata["help"], only=names)
            continue
        if "cli" in f.metadata:
            _add_command_field(group, f)
            continue
        flags = ["--" + name.replace("_", "-") for name in (f.name, *old_names(f.name))]  # the old names too
        if f.type in ("bool", "bool | None"):
            group.add_argument(
                *flags,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{helps[f.name]} (default {f.default})",
            )
        else:
            group.add_argument(
                *flags,
                dest=f.name,
                type=_CASTS[f.type],
                default=None,
                metavar=f.type.upper(),
                help=f"{helps[f.name]} (default {f.default!r})",
            )


def config_from_args(args: argparse.Namespace, cls: type[Config]) -> Config:
    """The command's config dataclass from its parsed flags (those not given keep the dataclass's defaults; lists
    become tuples); the dataclass checks itself."""
    given = {name: tuple(value) if isinstance(value, list) else value for name, value in overrides(args, cls).items()}
    for f in dataclasses.fields(cls):
        if "overrides" in f.metadata:
            fields_of, names = f.metadata["overrides"]
            given[f.name] = {k: v for k, v in overrides(args, fields_of).items() if names is None or k in names}
    return cls(**given)


def handler(run: Callable[[Config], None], cls: type[Config]) -> Callable[[argparse.Namespace], None]:
    """A parser's handler: builds `cls` from the parsed flags (`config_from_args`) and calls `run(config)`, so the
    command is the same from Python: `run(cls(...))`."""
    return functools.partial(_run_with_config, run, cls)


def _run_with_config(run: Callable[[Any], None], cls: type, args: argparse.Namespace) -> None:
    run(config_from_args(args, cls))


def add_preset_and_overrides(parser: argparse.ArgumentParser) -> None:
    """One flag per ModelConfig and TrainConfig field, each over the preset's value (the `--preset` flag is a field
    of the command's own config, e.g. `TrainRunOptions.preset`)."""
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


def preset_option() -> Any:
    """A command config's `preset` field: the named preset whose model and training configs the ModelConfig and
    TrainConfig flags override."""
    return option(f"the preset the settings start from (`mot presets` lists them): {', '.join(PRESETS)}", None,
                  metavar="NAME")  # fmt: skip
