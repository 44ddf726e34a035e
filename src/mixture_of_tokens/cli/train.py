"""`mot train --preset NAME [overrides]`, `mot train --resume RUN_DIR`, `mot train --init-from CKPT ...`."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from ..config import ModelConfig, TrainConfig
from .config_args import add_preset_and_overrides, configs_from_args, overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a preset plus overrides, or resume a run",
        description="Train from a preset with overrides (every config field below), resume a run from its newest "
        "good checkpoint (--resume), or start from a checkpoint's weights (--init-from). Under torchrun it trains "
        "data-parallel (--parallel ddp | fsdp).",
    )
    add_preset_and_overrides(parser)
    parser.add_argument("--name", default="", help="run name (default: the preset name)")
    parser.add_argument("--dry-run", action="store_true", help="print sizes, FLOPs and memory; do not train")
    parser.add_argument(
        "--resume",
        default=None,
        metavar="DIR",
        help="continue a run: its run directory (newest good checkpoint) or one checkpoint directory; "
        "training settings may be overridden (e.g. --steps), model settings may not",
    )
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="DIR",
        help="start from a checkpoint's weights and model config with a fresh optimizer and LR schedule",
    )
    parser.set_defaults(handler=run)


def _resume_configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig, Path]:
    from ..training.state import resolve_resume_checkpoint

    if overrides(args, ModelConfig):
        names = ", ".join(overrides(args, ModelConfig))
        raise ValueError(f"--resume continues the saved model; model settings cannot be changed ({names}).")
    checkpoint_dir, _ = resolve_resume_checkpoint(Path(args.resume))
    from ..checkpoint import read_config

    saved = read_config(checkpoint_dir)
    train_config = dataclasses.replace(TrainConfig(**saved["train"]), **overrides(args, TrainConfig))
    return ModelConfig(**saved["model"]), train_config, Path(args.resume)


def _init_configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    from ..checkpoint import read_config

    saved = read_config(Path(args.init_from))
    model_config = dataclasses.replace(ModelConfig(**saved["model"]), **overrides(args, ModelConfig))
    base = configs_from_args(args)[1] if args.preset else TrainConfig(**saved["train"])
    train_config = dataclasses.replace(base, **overrides(args, TrainConfig))
    return model_config, train_config


def run(args: argparse.Namespace) -> None:
    from ..training.loop import check_run_settings, train

    if args.resume and args.init_from:
        raise ValueError("--resume and --init-from exclude each other: resume continues a run, init-from starts one.")
    resume = None
    if args.resume:
        model_config, train_config, resume = _resume_configs(args)
        name = args.name or Path(args.resume).name
        if not train_config.out_dir:
            train_config = dataclasses.replace(train_config, out_dir=str(_run_dir_of(Path(args.resume))))
    elif args.init_from:
        model_config, train_config = _init_configs(args)
        name = args.name or args.preset or f"{Path(args.init_from).name}-continued"
    else:
        if not args.preset:
            raise ValueError("--preset is required (or --resume DIR / --init-from DIR); see `mot presets`.")
        model_config, train_config = configs_from_args(args)
        name = args.name or args.preset
    check_run_settings(model_config, train_config)
    if args.dry_run:
        dry_run(name, model_config, train_config)
        return
    result = train(
        model_config,
        train_config,
        run_name=name,
        resume_from=resume,
        init_from=Path(args.init_from) if args.init_from else None,
    )
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    if result.stopped_early:
        print(f"[{name}] stopped early; resume with: mot train --resume {result.out_dir}", file=sys.stderr)
        raise SystemExit(130)
    print(f"[{name}] final eval loss {result.final_eval_loss:.4f} -> {result.out_dir}")


def _run_dir_of(path: Path) -> Path:
    """The run directory of a run directory or of one of its checkpoint directories."""
    return path.parent.parent if path.name.startswith("step-") else path


def dry_run(name: str, model_config: ModelConfig, train_config: TrainConfig) -> None:
    import torch

    from ..counting import count_model, human
    from ..model import Transformer
    from ..runtime.precision import resolve_precision
    from ..training.memory import estimate_training_memory

    with torch.device("meta"):
        counts = count_model(Transformer(model_config))
    device = torch.device("cuda" if torch.cuda.is_available() and train_config.device != "cpu" else "cpu")
    precision = resolve_precision(train_config.precision, device)
    micro_batch = train_config.batch_size // train_config.grad_accum_steps
    memory = estimate_training_memory(counts, model_config, micro_batch, precision)
    print(f"{name}: {counts.summary()}")
    print(f"blocks: {', '.join(model_config.block_ffn_kinds())}")
    tokens_per_step = train_config.batch_size * model_config.max_seq_len
    flops_per_step = counts.train_flops_per_token * tokens_per_step
    print(f"tokens per step: {tokens_per_step:,}; training FLOPs per step: {human(flops_per_step)}")
    print(
        f"memory estimate ({precision}, micro-batch {micro_batch}, one process): weights+grads+AdamW "
        f"{memory.states_bytes / 1e9:.2f} GB, activations {memory.activation_bytes / 1e9:.2f} GB, "
        f"total {memory.total_bytes / 1e9:.2f} GB"
    )
