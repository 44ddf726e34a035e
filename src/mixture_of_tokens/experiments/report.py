"""Compare runs: a table of final losses and a plot of their eval-loss curves."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..training.metrics import read_metrics


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
    summary_path = out_dir / "summary.json"
    if not summary_path.exists():
        raise ValueError(f"{out_dir} is not a finished run directory (no summary.json); pass a run's out_dir.")
    summary = json.loads(summary_path.read_text())
    records = read_metrics(out_dir / "metrics.jsonl")
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
        train_curve=[(r["step"], r["lm_loss"]) for r in records],
    )


def comparison_table(runs: list[RunSummary]) -> str:
    header = f"{'run':<16} {'eval loss':>9} {'ppl':>8} {'params':>8} {'active':>8} {'tok/s':>8} {'time':>7}"
    lines = [header, "-" * len(header)]
    for run in runs:
        lines.append(
            f"{run.name:<16} {run.final_eval_loss:>9.3f} {2.718281828**run.final_eval_loss:>8.1f} "
            f"{run.total_params / 1e6:>7.2f}M {run.active_params / 1e6:>7.2f}M {run.tokens_per_s:>8,.0f} "
            f"{run.seconds:>6.0f}s"
        )
    lines.append(f"unigram entropy of the held-out text: {runs[0].unigram_entropy:.3f} nats")
    return "\n".join(lines)


def plot_runs(runs: list[RunSummary], path: Path) -> Path:
    """Train (thin) and eval (markers) loss against step for every run, unigram entropy as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for run in runs:
        (line,) = axes.plot(*zip(*run.train_curve), linewidth=0.8, alpha=0.6)
        axes.plot(*zip(*run.eval_curve), marker="o", color=line.get_color(), label=f"{run.name} (eval)")
    axes.axhline(runs[0].unigram_entropy, color="gray", linestyle="--", linewidth=0.8, label="unigram entropy")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats/token)")
    axes.set_title("train (thin) and held-out (markers) loss")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
