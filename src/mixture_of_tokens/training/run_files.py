"""The files of a run directory, named once, and their readers.

A run directory (`mot train`'s out_dir) is a checkpoint directory (config.json, the weights, the tokenizer and the
manifest, named in `checkpoint.py`, whose `read_config` is the one parser of config.json) plus the run's own files:

    summary.json     written once, at the end: final held-out loss, counts, throughput (a finished run has one)
    metrics.jsonl    one record per log, eval and checkpoint step (the format: `training.metrics`)
    checkpoints/     the resumable training checkpoints, one step-N folder each (`training.state`)

Reports, the suite runner and planner, the scaling fit and the trainer all read them through this module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .metrics import read_metrics

SUMMARY_FILE = "summary.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"


def is_finished(run_dir: Path) -> bool:
    """Whether the run in `run_dir` has finished: it wrote its summary.json."""
    return (Path(run_dir) / SUMMARY_FILE).exists()


def read_summary(run_dir: Path) -> dict[str, Any] | None:
    """The run's summary.json, or None while the run has not finished (a corrupt file raises JSONDecodeError)."""
    path = Path(run_dir) / SUMMARY_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def final_loss(summary: dict[str, Any] | None) -> float | None:
    """A summary's final held-out loss; None without a summary or for a missing or non-finite loss."""
    loss = (summary or {}).get("final_eval_loss")
    return float(loss) if isinstance(loss, (int, float)) and math.isfinite(loss) else None


def read_run_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every record of the run's metrics.jsonl, oldest first (none while the file does not exist)."""
    return read_metrics(Path(run_dir) / METRICS_FILE)
