"""A suite's results read back from its run directories (so a report can always be rebuilt from disk): the sweep
per arm, the chosen learning rate, the runs at that rate, their curves, counts and throughput."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..training.run_files import final_loss, read_run_metrics, read_summary
from .planner import DIVERGED_SUFFIX, RUNS_DIR, run_name
from .runner import current_plan
from .suites import Arm, Size, Suite
from .verdicts import ArmResult

ENTROPY_KEY = re.compile(r"^routing\.block(\d+)\.entropy_mean$")
TEMPERATURE_KEY = re.compile(r"^routing\.block(\d+)\.temperature_mean$")


@dataclass
class RunRecord:
    """One run directory's numbers (a run that has not finished has no summary and no final loss)."""

    name: str
    run_dir: Path
    lr: float
    seed: int
    final_eval_loss: float | None = None
    diverged: str = ""
    eval_curve: list[tuple[int, float]] = field(default_factory=list)
    entropy: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    """MoT layers' mean normalised merge-weight entropy H(w)/log G per block, at log steps."""
    temperature: dict[int, float] = field(default_factory=dict)
    """A learnable or scheduled MoT temperature per block, at the last log step (mean over experts)."""
    counts: dict[str, int] = field(default_factory=dict)
    tokens_per_s: float | None = None
    seconds: float | None = None
    resumed: bool = False
    switch: dict[str, Any] = field(default_factory=dict)
    """A transition-tuning run's switch: step, target, held-out loss just before and after."""

    @property
    def finished(self) -> bool:
        return self.final_eval_loss is not None

    @property
    def final_entropy(self) -> float | None:
        """The merge-weight entropy at the last log step, averaged over the MoT blocks (None without MoT)."""
        last = [curve[-1][1] for curve in self.entropy.values() if curve]
        return sum(last) / len(last) if last else None


def read_run(run_dir: Path, lr: float = math.nan, seed: int = 0) -> RunRecord:
    run_dir = Path(run_dir)
    record = RunRecord(run_dir.name, run_dir, lr, seed)
    diverged = run_dir.with_name(run_dir.name + DIVERGED_SUFFIX)
    if diverged.exists():
        record.diverged = json.loads(diverged.read_text()).get("message", "diverged")
    for row in read_run_metrics(run_dir):
        step = row.get("step")
        if step is None:
            continue
        if isinstance(row.get("eval_loss"), (int, float)):
            record.eval_curve.append((step, float(row["eval_loss"])))
        for key, value in row.items():
            match = ENTROPY_KEY.match(key)
            if match and isinstance(value, (int, float)):
                record.entropy.setdefault(int(match.group(1)), []).append((step, float(value)))
            match = TEMPERATURE_KEY.match(key)
            if match and isinstance(value, (int, float)):
                record.temperature[int(match.group(1))] = float(value)
    summary = read_summary(run_dir)
    if summary is not None:
        record.final_eval_loss = final_loss(summary)
        record.counts = summary.get("counts", {})
        record.tokens_per_s = summary.get("tokens_per_s")
        record.seconds = summary.get("seconds")
        record.resumed = bool(summary.get("resumed_from_step"))
        record.switch = summary.get("switch") or {}
    return record


@dataclass
class ArmSummary:
    arm: Arm
    sweep: dict[float, RunRecord]
    """Seed 0 at every rate of the sweep."""
    best_lr: float | None
    runs: list[RunRecord]
    """The finished runs at the best rate, one per seed."""
    winner: str = ""
    """For an alias (`best_of`) or an arm at another arm's setting (`settings_from`): the arm it resolved to."""

    @property
    def label(self) -> str:
        return f"{self.arm.label} (= {self.winner})" if self.winner else self.arm.label

    @property
    def losses(self) -> tuple[float, ...]:
        return tuple(r.final_eval_loss for r in self.runs if r.final_eval_loss is not None)

    @property
    def mean_loss(self) -> float | None:
        return sum(self.losses) / len(self.losses) if self.losses else None

    @property
    def spread(self) -> float | None:
        """Largest minus smallest final loss over the seeds (None with one seed)."""
        return max(self.losses) - min(self.losses) if len(self.losses) > 1 else None

    def mean_curve(self) -> list[tuple[int, float]]:
        """Eval loss at the steps every finished run evaluated, averaged over seeds."""
        return mean_curve([r.eval_curve for r in self.runs if r.finished])

    def result(self) -> ArmResult:
        return ArmResult(self.arm.name, self.losses, tuple(self.mean_curve()))

    @property
    def best_at_edge(self) -> bool:
        """The chosen rate is the smallest or largest swept: the optimum may lie beyond the sweep."""
        rates = sorted(self.sweep)
        return len(rates) > 1 and self.best_lr in (rates[0], rates[-1])


def mean_curve(curves: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, float]]:
    if not curves:
        return []
    steps = set.intersection(*(set(step for step, _ in c) for c in curves))
    return [(s, sum(dict(c)[s] for c in curves) / len(curves)) for s in sorted(steps)]


def collect(suite: Suite, size: Size, out: Path) -> dict[str, ArmSummary]:
    """Every arm's seed-0 runs and its runs at the chosen rate as they are on disk under out/runs (the runner's
    plan, so the same rates, winners and seeds)."""
    runs_dir = Path(out) / RUNS_DIR
    plan = current_plan(suite, size, out)
    summaries = {}
    for arm in suite.arms:
        arm_plan = plan.arms[arm.name]
        trained = arm_plan.arm.name
        rates = sorted(set(arm_plan.rates) | set(arm_plan.losses))
        sweep = {lr: read_run(runs_dir / run_name(trained, lr, 0), lr, 0) for lr in rates}
        best = arm_plan.chosen
        runs = []
        if best is not None:
            seeds = [read_run(runs_dir / run_name(trained, best, s), best, s) for s in range(arm_plan.seeds)]
            runs = [r for r in seeds if r.finished]
        summaries[arm.name] = ArmSummary(arm, sweep, best, runs, arm_plan.winner)
    return summaries
