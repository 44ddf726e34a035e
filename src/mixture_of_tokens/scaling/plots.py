"""Figures for `mot scaling`: the plan over budgets, and a fit's predicted-vs-observed losses."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .fit import FitResult
from .plan import Plan
from .runs import Run


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def plot_plans(plans: Sequence[Plan], path: Path) -> Path:
    """Left: predicted loss against budget (optimal granularity, granularity 1, dense). Right: the optimal
    granularity against budget."""
    plt = _pyplot()
    flops = np.array([p.flops for p in plans])
    figure, (loss_axes, granularity_axes) = plt.subplots(1, 2, figsize=(11, 4.2))
    loss_axes.plot(
        flops, [p.best.loss_continuous for p in plans], marker="o", label="fine-grained, optimal granularity"
    )
    if all(p.per_granularity[0].granularity == 1 for p in plans):
        loss_axes.plot(flops, [p.per_granularity[0].loss_continuous for p in plans], marker=".", label="granularity 1")
    loss_axes.plot(flops, [p.dense.loss_continuous for p in plans], marker="s", label="dense")
    loss_axes.set_xscale("log")
    loss_axes.set_xlabel("training FLOPs")
    loss_axes.set_ylabel("predicted loss (nats/token)")
    loss_axes.set_title(f"compute-optimal loss (expansion {plans[0].expansion:g})")
    loss_axes.legend()
    loss_axes.grid(alpha=0.3, which="both")
    granularity_axes.plot(flops, [p.best.granularity for p in plans], marker="o", drawstyle="steps-mid")
    granularity_axes.set_xscale("log")
    granularity_axes.set_yscale("log", base=2)
    granularity_axes.set_xlabel("training FLOPs")
    granularity_axes.set_ylabel("optimal granularity")
    granularity_axes.set_title("optimal granularity grows with the budget")
    granularity_axes.grid(alpha=0.3, which="both")
    saved = _save(figure, path)
    plt.close(figure)
    return saved


def plot_fit(result: FitResult, runs: Sequence[Run], path: Path) -> Path:
    """Predicted against observed final loss, one point per run, coloured by granularity."""
    plt = _pyplot()
    observed = np.array([r.loss for r in runs])
    predicted = result.law.loss([r.params for r in runs], [r.tokens for r in runs], [r.granularity for r in runs])
    figure, axes = plt.subplots(figsize=(5.5, 5))
    points = axes.scatter(observed, predicted, c=np.log2([r.granularity for r in runs]), cmap="viridis", s=18)
    if result.kind == "fine-grained":
        figure.colorbar(points, ax=axes, label="log2 granularity")
    low, high = float(min(observed.min(), predicted.min())), float(max(observed.max(), predicted.max()))
    axes.plot([low, high], [low, high], color="gray", linestyle="--", linewidth=0.8)
    axes.set_xlabel("observed loss")
    axes.set_ylabel("predicted loss")
    axes.set_title(f"{result.kind} law, {result.n_runs} runs, RMSE {result.train_rmse:.4f}")
    axes.grid(alpha=0.3)
    saved = _save(figure, path)
    plt.close(figure)
    return saved
