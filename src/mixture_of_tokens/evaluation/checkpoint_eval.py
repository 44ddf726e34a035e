"""`evaluate_checkpoint`: what `mot eval` measures, as one function. The held-out loss in every evaluation mode of
the model (and, asked for, Token Choice's loss with the capacity it trained with), zero-shot tasks under an explicit
batch policy, and the results JSON. `mot eval` is a thin wrapper: it reads the flags into an `EvalConfig`, calls
this and prints the lines it is handed."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import ModelConfig
from ..data import eval_batches
from ..inference_config import EvalConfig
from ..layers import block_classes, capacity_routing
from ..spelling import setting, uses_flags
from .batch_policy import BatchPolicy, resolve_policy
from .perplexity import EvalMode, LossResult, eval_modes, evaluate_modes
from .runner import LoadedCheckpoint, check_results_destination, load_checkpoint, load_texts, write_results
from .scoring import Scorer
from .tasks import TASKS, Doc, load_task
from .zeroshot import TaskResult, evaluate_docs

__all__ = ["EvalResults", "evaluate_checkpoint"]


@dataclass
class EvalResults:
    """What `evaluate_checkpoint` measured; `to_dict()` is the results JSON `mot eval` writes."""

    checkpoint: Path
    policy: BatchPolicy
    """The batch policy of zero-shot scoring."""
    prefix_eos: bool
    perplexity: list[LossResult] = field(default_factory=list)
    """The held-out loss in every evaluation mode, the trained one first (empty with perplexity=False)."""
    tasks: list[TaskResult] = field(default_factory=list)
    """One result per zero-shot task, in the order of `EvalConfig.tasks`."""
    seconds: float = 0.0
    path: Path | None = None
    """Where the results JSON was written."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "checkpoint": str(self.checkpoint),
            "policy": self.policy.to_dict(),
            "prefix_eos": self.prefix_eos,
            "perplexity": [result.to_dict() for result in self.perplexity],
            "tasks": [result.to_dict() for result in self.tasks],
            "seconds": self.seconds,
        }


def evaluate_checkpoint(
    directory: Path | str,
    config: EvalConfig | None = None,
    *,
    task_files: Mapping[str, Path | str] | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> EvalResults:
    """Evaluate a checkpoint or finished run directory as `mot eval` does and write the results JSON there
    (`config.out`, else DIRECTORY/eval-<timestamp>.json).

    `config` (default `EvalConfig()`: the held-out loss, no tasks) says what to measure; `task_files` reads a task
    from a local file ({"piqa": "piqa_val.jsonl"}, `mot eval --task-file`). `echo` is handed each line of the table
    `mot eval` prints, as its result comes in; `progress` shows the bars of data preparation and task scoring. A bad
    setting, task, checkpoint or results path fails with one sentence before any scoring.
    """
    config = config or EvalConfig()
    files = {task: Path(path) for task, path in (task_files or {}).items()}
    tasks = config.task_names
    for task in tasks + list(files):
        if task not in TASKS:
            raise ValueError(f"task {task!r} is unknown; allowed values: {', '.join(TASKS)}.")
    if not config.perplexity and not tasks:
        raise ValueError(
            f"nothing to do: {_no_perplexity()} without {setting('tasks')}; name tasks with "
            f"{setting('tasks', 'piqa,hellaswag,...')}"
        )
    loaded = load_checkpoint(directory, config.device)
    if tasks:
        loaded.model_config.check_causal(f"zero-shot scoring ({setting('tasks')})")
    if config.tc_capacity:
        check_tc_capacity(loaded.model_config, perplexity=config.perplexity)
    out = Path(config.out) if config.out else None
    check_results_destination(loaded.directory, out)
    if config.threads:
        torch.set_num_threads(config.threads)
    policy = resolve_policy(loaded.model_config, config.mot_eval, rows=config.protocol_rows or None, seed=config.seed)
    docs = {task: load_task(task, files.get(task), limit=config.limit or None) for task in tasks}  # before compute
    started = time.perf_counter()
    train_tokens, eval_tokens = load_texts(loaded, progress=progress)
    results = EvalResults(loaded.directory, policy, config.prefix_eos)
    say = echo or _silent
    if config.perplexity:
        results.perplexity = held_out_losses(loaded, eval_tokens, config, say)
    if tasks:
        scorer = Scorer(
            loaded.model,
            loaded.tokenizer,
            policy,
            filler_tokens=train_tokens,
            batch_size=config.batch_size,
            prefix_eos=config.prefix_eos,
        )
        results.tasks = zero_shot(docs, scorer, say, progress=progress)
    results.seconds = time.perf_counter() - started
    results.path = write_results(loaded.directory, results.to_dict(), out)
    return results


def _silent(line: str) -> None:
    pass


def _no_perplexity() -> str:
    return "--no-perplexity" if uses_flags() else "perplexity=False"


def check_tc_capacity(model_config: ModelConfig, *, perplexity: bool) -> None:
    """tc_capacity needs layers that trained with a capacity and infer dropless (Token Choice), and the held-out
    loss to measure."""
    capacities = [cls.trained_capacity_factor(model_config) for cls in dict.fromkeys(block_classes(model_config))]
    if all(capacity is None for capacity in capacities):
        raise ValueError(
            f"{setting('tc_capacity')} evaluates Token Choice layers with their capacity; this checkpoint has none "
            f"(its blocks are: {', '.join(model_config.block_ffn_kinds())})."
        )
    if not any(capacities):
        raise ValueError(
            f"{setting('tc_capacity')} needs a capacity, but this checkpoint's Token Choice trained dropless."
        )
    if not perplexity:
        raise ValueError(
            f"{setting('tc_capacity')} measures the held-out loss with the capacity; drop {_no_perplexity()}."
        )


def held_out_losses(
    loaded: LoadedCheckpoint, eval_tokens: np.ndarray, config: EvalConfig, say: Callable[[str], None]
) -> list[LossResult]:
    """The loss on the run's fixed held-out batches in every evaluation mode (and with the trained capacity), each
    batch run in the run's training micro-batches (batch_size / grad_accum_steps rows, a multiple of the batch
    multiple), rounded up in each mode to the rows its layers couple."""
    train_config, model_config = loaded.train_config, loaded.model_config
    seq_len, mask_token_id = model_config.max_seq_len, model_config.mask_token_id
    n_batches = config.eval_batches or train_config.eval_batches
    batches = eval_batches(eval_tokens, train_config.batch_size, seq_len, n_batches, mask_token_id=mask_token_id)
    modes, micro_batch = eval_modes(model_config, train_config.batch_size), training_micro_batch(loaded)
    results = evaluate_modes(loaded.model, batches, modes, loaded.device, micro_batch=micro_batch)
    if config.tc_capacity:  # the trained capacity instead of dropless routing
        mode = EvalMode(f"with capacity (capacity_factor {model_config.tc_capacity_factor:g})")
        with capacity_routing(loaded.model):
            results += evaluate_modes(loaded.model, batches, [mode], loaded.device, micro_batch=micro_batch)
    say(f"held-out text: {len(batches)} batches x {train_config.batch_size} x {seq_len} tokens")
    if mask_token_id is not None:
        say(f"masked LM: {results[0].n_tokens} masked positions (fixed BERT masks)")
    accuracy_header = f" {'accuracy':>9}" if mask_token_id is not None else ""
    say(f"{'mode':<28} {'loss':>8} {'perplexity':>11}{accuracy_header}")
    for result in results:
        accuracy = f" {result.accuracy:>9.4f}" if result.accuracy is not None else ""
        say(f"{result.mode.name:<28} {result.loss:>8.4f} {result.perplexity:>11.2f}{accuracy}")
    return results


def training_micro_batch(loaded: LoadedCheckpoint) -> int:
    """The run's micro-batch on one process: batch_size / grad_accum_steps sequences."""
    return max(1, loaded.train_config.batch_size // loaded.train_config.grad_accum_steps)


def zero_shot(
    docs: dict[str, tuple[list[Doc], str]], scorer: Scorer, say: Callable[[str], None], *, progress: bool
) -> list[TaskResult]:
    """Every task's metrics and standard errors under the scorer's batch policy."""
    say(f"zero-shot policy: {scorer.policy.describe()}" + (", contexts prefixed with eos" if scorer.prefix_eos else ""))
    say(f"{'task':<14} {'docs':>5} {'metric':<10} {'value':>7} {'stderr':>7} {'seconds':>8}  source")
    results = []
    for task, (task_docs, source) in docs.items():
        result = evaluate_docs(task, task_docs, scorer, progress=progress)
        result.source = source
        for index, (name, value) in enumerate(result.metrics.items()):
            label = f"{task:<14} {result.n_docs:>5}" if index == 0 else " " * 20
            tail = f" {result.seconds:>8.1f}  {source}" if index == 0 else ""
            say(f"{label} {name:<10} {_number(value):>7} {_number(result.stderr.get(name, math.nan)):>7}{tail}")
        results.append(result)
    return results


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.4f}" if abs(value) < 100 else f"{value:.4g}"
