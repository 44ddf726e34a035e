"""`mot demo`: train tiny-dense and tiny-mot on the packaged corpus and print both eval losses side by side."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..presets import get_preset

DEMO_PRESETS = ("tiny-dense", "tiny-mot")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="train tiny-dense and tiny-mot on the packaged corpus and compare")
    parser.add_argument("--out", default="runs/demo", help="directory for the two runs and the plot")
    parser.add_argument("--steps", type=int, default=0, help="steps per run (default: the presets' own)")
    parser.add_argument(
        "--force", action="store_true", help="move runs already under --out aside (NAME.old-<timestamp>) and rerun"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from ..data import prepare_data
    from ..experiments.report import comparison_table, load_run, plot_runs
    from ..training.loop import train

    out_root = Path(args.out)
    runs = []
    data = None
    for name in DEMO_PRESETS:
        preset = get_preset(name)
        train_config = dataclasses.replace(preset.train, out_dir=str(out_root / name))
        if args.steps:
            steps = args.steps
            train_config = dataclasses.replace(
                train_config, steps=steps, eval_every=max(steps // 4, 1), warmup_steps=steps // 10
            )
        data = data or prepare_data(train_config.data, vocab_size=preset.model.vocab_size)
        train(preset.model, train_config, run_name=name, data=data, force=args.force)
        runs.append(load_run(out_root / name))
    print()
    print(comparison_table(runs))
    print(f"plot: {plot_runs(runs, out_root / 'demo.png')}")
