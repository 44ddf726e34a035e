"""`mot train --preset NAME [overrides]`."""

from __future__ import annotations

import argparse

from .config_args import add_preset_and_overrides, configs_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train a model from a preset plus overrides")
    add_preset_and_overrides(parser)
    parser.add_argument("--name", default="", help="run name (default: the preset name)")
    parser.add_argument("--dry-run", action="store_true", help="print sizes and FLOPs, do not train")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from ..train import check_run_settings, train

    model_config, train_config = configs_from_args(args)
    check_run_settings(model_config, train_config)
    if args.dry_run:
        dry_run(args.preset, model_config, train_config)
        return
    name = args.name or args.preset
    result = train(model_config, train_config, run_name=name)
    print(f"[{name}] final eval loss {result.final_eval_loss:.4f} -> {result.out_dir}")


def dry_run(name: str, model_config, train_config) -> None:
    import torch

    from ..counting import count_model
    from ..model import Transformer

    with torch.device("meta"):
        counts = count_model(Transformer(model_config))
    print(f"{name}: {counts.summary()}")
    print(f"blocks: {', '.join(model_config.block_ffn_kinds())}")
    print(f"tokens per step: {train_config.batch_size * model_config.max_seq_len:,}")
