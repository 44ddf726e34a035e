"""`mot experiment transition`: the transition-tuning experiment at CPU scale."""

from __future__ import annotations

import argparse
from pathlib import Path

from .help_text import examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="packaged experiments (transition)",
        **examples("mot experiment transition", "mot experiment transition --mot-steps 100 --continue-steps 20"),
    )
    experiments = parser.add_subparsers(dest="experiment", required=True)
    transition = experiments.add_parser(
        "transition",
        help="one run: tiny-mot, switched in place to Token Choice, trained on; against Token Choice from scratch "
        "and dense",
        **examples(
            "mot experiment transition    # 400 MoT steps, then 40 Token Choice steps",
            "mot experiment transition --mot-steps 100 --continue-steps 20 --out runs/transition-short --force",
        ),
    )
    transition.add_argument("--out", default="runs/transition", help="directory for every run, report and plot")
    transition.add_argument("--mot-steps", type=int, default=400, help="MoT training steps before the switch")
    transition.add_argument("--continue-steps", type=int, default=40, help="Token Choice steps after the switch")
    transition.add_argument(
        "--force", action="store_true", help="move runs already under --out aside (NAME.old-<timestamp>) and rerun"
    )
    transition.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from ..experiments.transition import run_transition_experiment

    report = run_transition_experiment(
        Path(args.out),
        mot_steps=args.mot_steps,
        continue_steps=args.continue_steps,
        force=args.force,
    )
    print()
    print(report.table())
    print(f"plot: {Path(args.out) / 'transition.png'}")
