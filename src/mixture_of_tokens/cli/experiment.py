"""`mot experiment transition`: the transition-tuning experiment at CPU scale."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..spelling import setting
from .config_args import add_config_fields, handler, option
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
    add_config_fields(transition, TransitionExperimentConfig)
    transition.set_defaults(handler=handler(run, TransitionExperimentConfig))


@dataclass(frozen=True, kw_only=True)
class TransitionExperimentConfig:
    """`mot experiment transition`: how long tiny-mot trains before the switch and after it, and where."""

    out: str = option("directory for every run, report and plot", "runs/transition")
    mot_steps: int = option("MoT training steps before the switch", 400)
    continue_steps: int = option("Token Choice steps after the switch", 40)
    force: bool = option("move runs already under --out aside (NAME.old-<timestamp>) and rerun", False)

    def __post_init__(self) -> None:
        for name in ("mot_steps", "continue_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{setting(name)} must be a positive integer, got {getattr(self, name)}.")


def run(config: TransitionExperimentConfig) -> None:
    from ..experiments.transition import run_transition_experiment

    report = run_transition_experiment(
        Path(config.out),
        mot_steps=config.mot_steps,
        continue_steps=config.continue_steps,
        force=config.force,
    )
    print()
    print(report.table())
    print(f"plot: {Path(config.out) / 'transition.png'}")
