"""Compare runs: a table of final losses and a plot of their eval-loss curves."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ..training.run_files import SUMMARY_FILE, read_run_metrics, read_summary
from .plots import Panel, Series, plot_panels


@dataclass
class RunSummary:
    name: str
    out_dir: Path
    final_eval_loss: float
    unigram_entropy: float
    seconds: float
    tokens_per_s: float
    active_params: int
    total_params: int
    eval_curve: list[tuple[int, float]]
    train_curve: list[tuple[int, float]]


def load_run(out_dir: Path) -> RunSummary:
    out_dir = Path(out_dir)
    summary = read_summary(out_dir)
    if summary is None:
        raise ValueError(f"{out_dir} is not a finished run directory (no {SUMMARY_FILE}); pass a run's out_dir.")
    records = read_run_metrics(out_dir)
    return RunSummary(
        name=summary["run"],
        out_dir=out_dir,
        final_eval_loss=summary["final_eval_loss"],
        unigram_entropy=summary["unigram_entropy"],
        seconds=summary["seconds"],
        tokens_per_s=summary["tokens_per_s"],
        active_params=summary["counts"]["active_params_per_token"],
        total_params=summary["counts"]["total_params"],
        eval_curve=[(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r],
        train_curve=[(r["step"], r["lm_loss"]) for r in records if "lm_loss" in r],  # not events (a switch)
    )


def run_labels(runs: list[RunSummary]) -> list[str]:
    """Each run's name, or, where two runs share a name, the shortest tail of its directory path that tells it
    apart (runs/a/mot and runs/b/mot become a/mot and b/mot)."""
    names = [run.name for run in runs]
    labels = []
    for run in runs:
        if names.count(run.name) == 1:
            labels.append(run.name)
            continue
        parts = Path(run.out_dir).resolve().parts
        others = [Path(r.out_dir).resolve().parts for r in runs if r is not run and r.name == run.name]
        depth = 1
        while depth < len(parts) and any(o[-depth:] == parts[-depth:] for o in others):
            depth += 1
        labels.append("/".join(parts[-depth:]))
    return labels


def comparison_table(runs: list[RunSummary]) -> str:
    labels = run_labels(runs)
    width = max(16, *(len(label) for label in labels))
    header = f"{'run':<{width}} {'eval loss':>9} {'ppl':>8} {'params':>8} {'active':>8} {'tok/s':>8} {'time':>7}"
    lines = [header, "-" * len(header)]
    for run, label in zip(runs, labels):
        lines.append(
            f"{label:<{width}} {run.final_eval_loss:>9.3f} {math.exp(run.final_eval_loss):>8.1f} "
            f"{run.total_params / 1e6:>7.2f}M {run.active_params / 1e6:>7.2f}M {run.tokens_per_s:>8,.0f} "
            f"{run.seconds:>6.0f}s"
        )
    lines.append(f"unigram entropy of the held-out text: {runs[0].unigram_entropy:.3f} nats")
    return "\n".join(lines)


def plot_runs(runs: list[RunSummary], path: Path) -> Path:
    """Train (thin) and eval (markers) loss against step for every run, unigram entropy as a reference line."""
    series = []
    for run, label in zip(runs, run_labels(runs)):
        series.append(Series(None, *_unzip(run.train_curve), group=label, linewidth=0.8, alpha=0.6))
        series.append(Series(f"{label} (eval)", *_unzip(run.eval_curve), group=label, marker="o"))
    panel = Panel(
        "train (thin) and held-out (markers) loss",
        "step",
        "loss (nats/token)",
        series,
        hlines=[(runs[0].unigram_entropy, "unigram entropy")],
    )
    return plot_panels([panel], path, columns=1)


def _unzip(points: list[tuple[int, float]]) -> tuple[list[int], list[float]]:
    return [x for x, _ in points], [y for _, y in points]
