"""`mot convert --checkpoint DIR --to token-choice|expert-choice|discrete-mot --out DIR2`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..transition import TARGETS, TokenChoiceSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    defaults = TokenChoiceSettings()
    parser = subparsers.add_parser(
        "convert",
        help="transition tuning: convert a trained MoT checkpoint into a sparse model",
        description="Every MoT layer becomes a Token Choice (or Expert Choice) layer reusing the MoT tensors "
        "unchanged (router := controller, experts := experts), or discrete-argmax MoT. Continue training with "
        "`mot train --init-from OUT`.",
    )
    parser.add_argument("--checkpoint", required=True, help="an MoT checkpoint or finished run directory")
    parser.add_argument("--to", required=True, dest="target", help=f"one of: {', '.join(TARGETS)}")
    parser.add_argument("--out", required=True, help="directory for the converted checkpoint (must be new)")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")
    parser.add_argument("--top-k", type=int, default=defaults.top_k, help="token choice: experts per token")
    parser.add_argument(
        "--capacity-factor", type=float, default=defaults.capacity_factor, help="token choice: 0 for dropless"
    )
    parser.add_argument("--load-balance-weight", type=float, default=defaults.load_balance_weight)
    parser.add_argument(
        "--tc-scope", default=defaults.scope, help="token choice routing group: batch (the paper's) | group"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from ..checkpoint import read_config
    from ..config import ModelConfig
    from ..transition import convert_checkpoint

    settings = TokenChoiceSettings(
        top_k=args.top_k,
        capacity_factor=args.capacity_factor,
        load_balance_weight=args.load_balance_weight,
        scope=args.tc_scope,
    )
    out = convert_checkpoint(Path(args.checkpoint), Path(args.out), args.target, settings=settings, force=args.force)
    kinds = ModelConfig(**read_config(out)["model"]).block_ffn_kinds()
    print(f"converted {args.checkpoint} -> {out} ({args.target}; blocks: {', '.join(kinds)})")
    print(f"continue training with: mot train --init-from {out} --steps N [--lr-schedule-offset SOURCE_STEPS]")
