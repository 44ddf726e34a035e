"""`--config FILE` for `mot train` and `mot compare`: settings from a file, command-line flags over them.

A file is TOML (`.toml`), YAML (`.yaml` / `.yml`, with the yaml extra) or JSON (`.json`). Its keys are the
command's flags without the dashes (`lr`, `group_size`, `preset`, `suite`, `parallel`); the settings of a config
dataclass may also sit in a `[model]` or `[train]` table. A run's own config.json is read for its model and
training settings only (not its record, nor its run directory: the new run writes its own). The file's values
become the command's defaults and the command line is read again over them, so a flag always wins; the resolved
configuration is what a run saves in its config.json, as without a file.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config_renames import renamed_settings
from ..extras import require

SECTIONS = ("model", "train")
"""Tables whose keys are flattened into the command's settings (a run's config.json holds these two)."""
RUN_RECORD_KEYS = frozenset({"run", "run_id", "data_fingerprint", "tokenizer"})
"""Keys beside `model` and `train` that mark a file as a run's own config.json."""


def add_config_file_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="settings from a TOML, YAML or JSON file (a run's config.json works); flags on the command line win",
    )


def read_config_file(path: Path) -> dict[str, Any]:
    """The settings in `path`, flattened: top-level keys and those of its [model] / [train] tables."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--config {path}: no such file.")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            loaded = _toml().loads(text)
        elif suffix in (".yaml", ".yml"):
            loaded = require("yaml", "yaml", purpose="--config with a YAML file").safe_load(text)
        elif suffix == ".json":
            loaded = json.loads(text)
        else:
            raise ValueError(
                f"--config {path}: unknown file type {suffix or '(none)'}; allowed: .toml, .yaml, .yml, .json."
            )
    except (ValueError, TypeError) as error:
        if str(error).startswith("--config"):
            raise
        raise ValueError(f"--config {path} cannot be read as {suffix[1:].upper()}: {error}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"--config {path} must hold a table of settings, not {type(loaded).__name__}.")
    if all(isinstance(loaded.get(section), dict) for section in SECTIONS) and RUN_RECORD_KEYS & set(loaded):
        # a run's config.json: its model and training settings, not its record (run id, fingerprints) nor its
        # own directory
        return {**loaded["model"], **{k: v for k, v in loaded["train"].items() if k != "out_dir"}}
    settings: dict[str, Any] = {}
    for key, value in loaded.items():
        if key in SECTIONS and isinstance(value, dict):
            settings.update(value)
        else:
            settings[key] = value
    return settings


def set_config_file_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Make the settings of `args.config` the defaults of the command's parser `parser` (checked first)."""
    settings = {key.replace("-", "_"): value for key, value in read_config_file(Path(args.config)).items()}
    settings = renamed_settings(settings)  # a setting's old name (`top_k`) reads as its current one
    destinations = {action.dest for action in parser._actions if action.dest not in ("help", "config")}
    unknown = sorted(key for key in settings if key not in destinations)
    if unknown:
        raise ValueError(
            f"--config {args.config}: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a setting of "
            f"`mot {args.command}` (its settings are its flags without the dashes; see `mot {args.command} --help`)."
        )
    parser.set_defaults(**settings)


def _toml() -> Any:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    return tomllib
