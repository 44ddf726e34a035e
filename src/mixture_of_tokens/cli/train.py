"""`mot train --preset NAME [overrides]`, `mot train --resume RUN_DIR`, `mot train --init-from CKPT ...`."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import ModelConfig, TrainConfig
from .config_args import (
    add_config_fields,
    add_preset_and_overrides,
    config_from_args,
    configs_from_args,
    option,
    overrides,
    preset_option,
)
from .config_file import add_config_file_argument
from .help_text import examples

if TYPE_CHECKING:
    from ..training.plan import RunPlan


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train a model from a preset plus overrides, or resume a run",
        description="Train from a preset with overrides (every config field below), resume a run from its newest "
        "good checkpoint (--resume), or start from a checkpoint's weights (--init-from). A run writes only into its "
        "own directory: --out-dir, else runs/NAME, or the directory given to --resume. Under torchrun it trains "
        "data-parallel (--parallel ddp | fsdp).",
        **examples(
            "mot train --preset tiny-mot",
            "mot train --preset tiny-mot --steps 200 --group-size 8 --name tiny-mot-g8 --device cpu",
            "mot train --resume runs/tiny-mot --steps 1000    # continue a finished run for more steps",
        ),
    )
    add_config_fields(parser, TrainRunOptions, "run")
    add_config_file_argument(parser)
    add_preset_and_overrides(parser)
    parser.set_defaults(handler=run)


@dataclass(frozen=True, kw_only=True)
class TrainRunOptions:
    """`mot train`'s run: its name, a dry run, where it starts (a fresh model, --resume, --init-from), --force; the
    model and training settings are the preset's with the ModelConfig / TrainConfig flags over them."""

    preset: str | None = preset_option()
    name: str = option("run name (default: the preset name); the run goes to runs/NAME", "")
    dry_run: bool = option("print sizes, FLOPs and memory; do not train", False)
    resume: str | None = option(
        "continue a run in DIR: its newest good checkpoint, or one checkpoint directory (an older one starts "
        "a new branch; the later files are moved aside, never deleted); training settings may be overridden (e.g. "
        "a larger --steps), model, data and tokenizer settings may not",
        None,
        metavar="DIR",
    )
    init_from: str | None = option(
        "start a new run from a checkpoint's weights and model config with a fresh optimizer and LR schedule",
        None,
        metavar="DIR",
    )
    force: bool = option(
        "when the run directory already holds a run, move that run aside to a sibling NAME.old-<timestamp>", False
    )


def plan_from_args(args: argparse.Namespace):
    """The run the command line asks for, resolved once (`training.plan.plan_run`)."""
    from ..training.plan import plan_run

    options = config_from_args(args, TrainRunOptions)
    model_overrides, train_overrides = overrides(args, ModelConfig), overrides(args, TrainConfig)
    common = {"name": options.name or None, "force": options.force, "check_directory": not options.dry_run}
    if options.resume:
        if args.preset:
            raise ValueError(
                f"--preset does not apply to --resume: the run continues with its own saved config; drop --preset "
                f"{args.preset} (training settings may be changed with their flags, e.g. --steps)."
            )
        init_from = Path(options.init_from) if options.init_from else None  # refused together with resume_from
        return plan_run(
            resume_from=Path(options.resume),
            init_from=init_from,
            model_overrides=model_overrides,
            train_overrides=train_overrides,
            **common,
        )
    if options.init_from:
        train_config = configs_from_args(args)[1] if args.preset else None
        return plan_run(
            None,
            train_config,
            init_from=Path(options.init_from),
            model_overrides=model_overrides,
            train_overrides=train_overrides,
            **common,
        )
    if not args.preset and not args.config:
        raise ValueError("--preset is required (or --config FILE, --resume DIR, --init-from DIR); see `mot presets`.")
    if args.preset:
        model_config, train_config = configs_from_args(args)
    else:  # every setting from the file (and flags) over the dataclasses' defaults
        model_config, train_config = ModelConfig(**model_overrides), TrainConfig(**train_overrides)
    name = options.name or args.preset or file_run_name(args)
    return plan_run(model_config, train_config, **{**common, "name": name})


def file_run_name(args: argparse.Namespace) -> str:
    """A run configured by a file alone is named after it; after its run directory for a run's config.json."""
    from ..checkpoint import CONFIG_FILE

    path = Path(args.config)
    return f"{path.parent.name}-rerun" if path.name == CONFIG_FILE and path.parent.name else path.stem


def run(args: argparse.Namespace) -> None:
    from ..training.loop import train_plan

    plan = plan_from_args(args)
    if config_from_args(args, TrainRunOptions).dry_run:
        dry_run(plan)
        return
    result = train_plan(plan)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return
    if result.stopped_early:
        print(f"[{plan.name}] stopped early; resume with: mot train --resume {result.out_dir}", file=sys.stderr)
        raise SystemExit(130)
    print(f"[{plan.name}] final eval loss {result.final_eval_loss:.4f} -> {result.out_dir}")
    print(next_steps(Path(result.out_dir), generates=plan.model_config.objective == "causal"))


def next_steps(run_dir: Path, *, generates: bool = True) -> str:
    """Where a finished run's files are and the commands that use it (printed at the end of `mot train`); a masked
    LM (`generates=False`) is not offered `mot generate`, which refuses it."""
    from ..checkpoint import WEIGHTS_FILE
    from ..training.run_files import METRICS_FILE, SUMMARY_FILE

    quoted = shlex.quote(str(run_dir))
    lines = [
        f"  summary: {run_dir / SUMMARY_FILE}",
        f"  metrics: {run_dir / METRICS_FILE}",
        f"  weights: {run_dir / WEIGHTS_FILE}",
        "next:",
        f"  mot eval --checkpoint {quoted}",
    ]
    if generates:
        lines.append(f'  mot generate --checkpoint {quoted} --prompt "Once upon a time"')
    return "\n".join(lines)


def dry_run(plan: RunPlan) -> None:
    """`mot train --dry-run`: sizes, FLOPs, the data it reads and the memory estimate of a planned run, on the
    plan's device and precision."""
    import torch

    from ..counting import count_model, human
    from ..data.prepare import describe_data_plan
    from ..evaluation.loss import evaluation_rows
    from ..model import Transformer
    from ..training.memory import estimate_run_memory

    model_config, train_config = plan.model_config, plan.train_config
    with torch.device("meta"):
        model = Transformer(model_config)
        counts = count_model(model)
    micro_batch = train_config.batch_size // train_config.grad_accum_steps
    memory = estimate_run_memory(
        counts,
        model_config,
        micro_batch=micro_batch,
        eval_batch=evaluation_rows(model, train_config.batch_size, micro_batch),  # as the trainer evaluates
        precision=plan.precision,
        device=plan.device,
    )
    print(f"{plan.name}: {counts.summary()}")
    print(f"blocks: {', '.join(model_config.block_ffn_kinds())}")
    tokens_per_step = train_config.batch_size * model_config.max_seq_len
    flops_per_step = counts.train_flops_per_token * tokens_per_step
    print(f"tokens per step: {tokens_per_step:,}; training FLOPs per step: {human(flops_per_step)}")
    print(describe_data_plan(train_config.data, train_config.tokenizer, model_config.vocab_size))
    print(f"the run reads {tokens_per_step * train_config.steps:,} training tokens ({train_config.steps:,} steps)")
    print(memory.describe())
