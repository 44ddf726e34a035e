"""`mot convert --checkpoint DIR --to token-choice|expert-choice|discrete-mot --out DIR2`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import ModelConfig
from ..layers.conversion import ROUTING_FIELDS, TARGETS
from .config_args import add_config_fields, overrides
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
    parser.add_argument("--checkpoint", required=True, help="an MoT checkpoint or finished run directory")
    parser.add_argument("--to", required=True, dest="target", help=f"one of: {', '.join(TARGETS)}")
    parser.add_argument("--out", required=True, help="directory for the converted checkpoint (must be new)")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    add_config_fields(parser, ModelConfig, "token choice routing (default: the paper's)", only=ROUTING_FIELDS)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from ..checkpoint import read_config, saved_configs
    from ..training.plan import check_default_name
    from ..transition import convert_checkpoint

    routing = overrides(args, ModelConfig)
    out = convert_checkpoint(Path(args.checkpoint), Path(args.out), args.target, force=args.force, **routing)
    saved = read_config(out)
    kinds = saved_configs(saved)[0].block_ffn_kinds()
    print(f"converted {args.checkpoint} -> {out} ({args.target}; blocks: {', '.join(kinds)})")
    # a new run of its own: never the source run's directory (init-from never reuses a saved out_dir)
    name = check_default_name(f"{out.resolve().name}-continued")
    offset = saved.get("converted_from", {}).get("source_steps")
    schedule = f" --lr-schedule-offset {offset}" if offset else ""
    print(f"continue training with: mot train --init-from {out} --name {name} --steps N{schedule}")
