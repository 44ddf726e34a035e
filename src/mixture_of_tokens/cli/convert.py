"""`mot convert --checkpoint DIR --to token-choice|expert-choice|discrete-mot --out DIR2`."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..layers.conversion import ROUTING_FIELDS, TARGETS
from ..spelling import setting
from .config_args import add_config_fields, handler, option, overrides_of
from .help_text import examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="transition tuning: convert a trained MoT checkpoint into a sparse model",
        description="Every MoT layer becomes a Token Choice (or Expert Choice) layer reusing the MoT tensors "
        "unchanged (router := controller, experts := experts), or discrete-argmax MoT. Continue training with "
        "`mot train --init-from OUT`.",
        **examples(
            "mot convert --checkpoint runs/tiny-mot --to token-choice --out runs/tiny-mot-tc",
            "mot train --init-from runs/tiny-mot-tc --name tiny-mot-tc-continued --steps 100    # then train on",
            "mot convert --checkpoint runs/tiny-mot --to expert-choice --out runs/tiny-mot-ec --capacity-factor 2.0",
        ),
    )
    add_config_fields(parser, ConvertConfig)
    parser.set_defaults(handler=handler(run, ConvertConfig))


@dataclass(frozen=True, kw_only=True)
class ConvertConfig:
    """Which MoT checkpoint `mot convert` converts, into what, where, and the converted layers' routing."""

    checkpoint: str = option("an MoT checkpoint or finished run directory")
    target: str = option(f"one of: {', '.join(TARGETS)}", flag="--to")
    out: str = option("directory for the converted checkpoint (must be new)")
    force: bool = option("overwrite a non-empty --out", False)
    routing: dict[str, Any] = overrides_of(
        ModelConfig, "token choice routing (default: the paper's)", only=ROUTING_FIELDS
    )

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            allowed = ", ".join(TARGETS)
            raise ValueError(f"{setting('target', self.target)} is not a conversion target; allowed values: {allowed}.")


def run(config: ConvertConfig) -> None:
    from ..checkpoint import read_config, saved_configs
    from ..training.plan import check_default_name
    from ..transition import convert_checkpoint

    out = convert_checkpoint(
        Path(config.checkpoint), Path(config.out), config.target, force=config.force, **config.routing
    )
    saved = read_config(out)
    kinds = saved_configs(saved)[0].block_ffn_kinds()
    print(f"converted {config.checkpoint} -> {out} ({config.target}; blocks: {', '.join(kinds)})")
    # a new run of its own: never the source run's directory (init-from never reuses a saved out_dir)
    name = check_default_name(f"{out.resolve().name}-continued")
    offset = saved.get("converted_from", {}).get("source_steps")
    schedule = f" --lr-schedule-offset {offset}" if offset else ""
    print(f"continue training with: mot train --init-from {out} --name {name} --steps N{schedule}")
