"""Which runs a suite needs, decided from what is on disk: the runner asks after every finished run, the report
asks once, so both see the same learning rates, winners and seeds, and a suite resumes across sessions.

Per arm (in the suite's order; an arm depends only on arms listed before it):
- a swept arm trains seed 0 at every rate of the size, plus up to `size.widen` rates beyond an edge while its best
  rate sits at that edge;
- an arm with `lr_from` trains at that arm's chosen rate; one with `settings_from` at the best of those arms
  (its rate, and its overrides when of the same kind);
- an alias (`best_of`) trains nothing of its own: it resolves to the best of its arms, whose runs it reads, and
  with `recheck` that winner also trains at half and twice its rate (widened past an edge like a sweep);
- once an arm's seed-0 runs are done, its chosen rate is the one with the lowest final eval loss (a diverged run
  is passed over), and its further seeds train at that rate.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..training.run_files import final_loss, read_summary
from .suites import Arm, Size, Suite

RUNS_DIR = "runs"
DIVERGED_SUFFIX = ".diverged.json"
RATE_STEP = 2.0
"""The factor between a rate and the next one tried beyond an edge, or a re-check's neighbours."""


def lr_text(lr: float) -> str:
    """A learning rate as run names and reports write it: 0.003, 0.0015, 1e30."""
    return f"{lr:.3g}".replace("e+", "e")


def run_name(arm: str, lr: float, seed: int) -> str:
    return f"{arm}-lr{lr_text(lr)}-s{seed}"


Outcome = tuple[bool, "float | None"]
"""(done, final eval loss): a diverged run is done with no loss."""


def disk_outcome(run_dir: Path) -> Outcome:
    """Whether the run in `run_dir` is done (summary.json, or recorded as diverged) and its final eval loss."""
    if run_dir.with_name(run_dir.name + DIVERGED_SUFFIX).exists():
        return True, None
    summary = read_summary(run_dir)
    return (False, None) if summary is None else (True, final_loss(summary))


@dataclass(frozen=True)
class PlannedRun:
    """One training the plan wants: the arm as trained (its name names the run), a rate and a seed."""

    arm: Arm
    lr: float
    seed: int


@dataclass
class ArmPlan:
    """What the plan knows of one arm of the suite."""

    arm: Arm
    """The arm as trained: its settings resolved (for an alias, the winner's arm)."""
    rates: tuple[float, ...] = ()
    """Seed-0 rates wanted so far."""
    losses: dict[float, float | None] = field(default_factory=dict)
    """Final eval loss at each finished seed-0 rate (None: diverged)."""
    resolved: bool = False
    """Every seed-0 run wanted is done and no rate will be added: the chosen rate is final."""
    seeds: int = 1
    winner: str = ""
    """For an alias or an arm with settings_from: the arm it resolved to."""

    @property
    def chosen(self) -> float | None:
        """The rate with the lowest final loss among the finished seed-0 runs (final once resolved)."""
        finite = {lr: loss for lr, loss in self.losses.items() if loss is not None}
        return min(finite, key=lambda lr: (finite[lr], lr)) if finite else None

    @property
    def best_loss(self) -> float | None:
        return None if self.chosen is None else self.losses[self.chosen]


@dataclass
class SuitePlan:
    arms: dict[str, ArmPlan]
    runs: list[PlannedRun]
    """Every run wanted so far, once each: the seed-0 runs (in arm order, so later stages are not held up), then
    the further seeds. The runner appends runs as they become known, so an arm's seeds join the queue as soon as
    its rate is final."""
    complete: bool
    """Every arm is resolved: no run will be added."""


def plan_suite(suite: Suite, size: Size, outcome: Callable[[Arm, float, int], Outcome]) -> SuitePlan:
    """The runs `suite` needs at `size`, given `outcome(arm, lr, seed)` of each run so far."""
    plans: dict[str, ArmPlan] = {}
    for arm in suite.arms:
        plans[arm.name] = _plan_arm(arm, size, plans, outcome)
    first: dict[str, PlannedRun] = {}
    further: dict[str, PlannedRun] = {}
    for plan in plans.values():
        for lr in plan.rates:
            first.setdefault(_key(plan.arm, lr, 0), PlannedRun(plan.arm, lr, 0))
        if plan.resolved and plan.chosen is not None:
            for seed in range(1, plan.seeds):
                further.setdefault(_key(plan.arm, plan.chosen, seed), PlannedRun(plan.arm, plan.chosen, seed))
    runs = [*first.values(), *(run for key, run in further.items() if key not in first)]
    return SuitePlan(plans, runs, all(p.resolved for p in plans.values()))


def expected_runs(suite: Suite, size: Size) -> int:
    """The runs a suite trains at `size` before any widening: each swept arm's rates, one rate for an arm at
    another's rate or setting, an alias's two re-check rates, and every further seed (an alias's seeds may
    coincide with its winner's, which this counts twice)."""
    count = 0
    for arm in suite.arms:
        swept = not (arm.lr_from or arm.settings_from or arm.best_of)
        first = len(size.lrs) if swept else (2 * arm.recheck if arm.best_of else 1)
        count += first + (arm.seeds or size.seeds) - 1
    return count


def _key(arm: Arm, lr: float, seed: int) -> str:
    return run_name(arm.name, lr, seed)


def _plan_arm(arm: Arm, size: Size, plans: dict[str, ArmPlan], outcome: Callable) -> ArmPlan:
    seeds = arm.seeds or size.seeds
    if arm.best_of:
        return _plan_alias(arm, size, plans, outcome, seeds)
    if arm.lr_from or arm.settings_from:
        sources = [plans[name] for name in (arm.settings_from or (arm.lr_from,))]
        if not all(p.resolved for p in sources):
            return ArmPlan(arm, seeds=seeds)
        best = _best(sources)
        if best is None:  # every source diverged: nothing to inherit
            return ArmPlan(arm, resolved=True, seeds=seeds)
        trained = _with_settings(arm, best.arm) if arm.settings_from else arm
        plan = ArmPlan(trained, (best.chosen,), seeds=seeds, winner=best.arm.name if arm.settings_from else "")
        _read(plan, outcome)
        plan.resolved = len(plan.losses) == len(plan.rates)
        return plan
    plan = ArmPlan(arm, tuple(size.lrs), seeds=seeds)
    while True:
        _read(plan, outcome)
        if len(plan.losses) < len(plan.rates):
            return plan
        beyond = _beyond_edge(plan, size)
        if beyond is None:
            plan.resolved = True
            return plan
        plan.rates = (*plan.rates, beyond)


def _plan_alias(arm: Arm, size: Size, plans: dict[str, ArmPlan], outcome: Callable, seeds: int) -> ArmPlan:
    candidates = [plans[name] for name in arm.best_of]
    if not all(p.resolved for p in candidates):
        return ArmPlan(arm, seeds=seeds)
    best = _best(candidates)
    if best is None:
        return ArmPlan(arm, resolved=True, seeds=seeds)
    rates = (best.chosen,)
    if arm.recheck:
        rates = (best.chosen / RATE_STEP, best.chosen, best.chosen * RATE_STEP)
    plan = ArmPlan(best.arm, rates, seeds=seeds, winner=best.arm.name)
    plan.losses.update(best.losses)  # the winner's own seed-0 runs count
    while True:
        _read(plan, outcome)
        if any(lr not in plan.losses for lr in plan.rates):
            return plan
        beyond = _beyond_edge(plan, size, swept=rates) if arm.recheck else None
        if beyond is None:
            plan.resolved = True
            return plan
        plan.rates = (*plan.rates, beyond)


def _read(plan: ArmPlan, outcome: Callable) -> None:
    for lr in plan.rates:
        done, loss = outcome(plan.arm, lr, 0)
        if done:
            plan.losses[lr] = loss


def _beyond_edge(plan: ArmPlan, size: Size, swept: tuple[float, ...] = ()) -> float | None:
    """The next rate past the edge the best rate sits at, while fewer than size.widen have been added beyond the
    rates first `swept` (the size's sweep, or an alias's re-check rates)."""
    best, swept = plan.chosen, swept or tuple(size.lrs)
    if best is None or size.widen <= 0 or len(plan.rates) < 2:
        return None
    low, high = min(plan.rates), max(plan.rates)
    if best == high and sum(lr > max(swept) for lr in plan.rates) < size.widen:
        return high * RATE_STEP
    if best == low and sum(lr < min(swept) for lr in plan.rates) < size.widen:
        return low / RATE_STEP
    return None


def _best(plans: list[ArmPlan]) -> ArmPlan | None:
    """The plan with the lowest seed-0 loss at its chosen rate (None when every one diverged)."""
    finished = [p for p in plans if p.best_loss is not None]
    return min(finished, key=lambda p: p.best_loss) if finished else None


def _with_settings(arm: Arm, source: Arm) -> Arm:
    """`arm` at `source`'s settings: its model and training overrides under arm's own (same kind only)."""
    if source.kind != arm.kind:
        return arm
    model = {**dict(source.model), **dict(arm.model)}
    train = {**dict(source.train), **dict(arm.train)}
    return dataclasses.replace(arm, model=tuple(model.items()), train=tuple(train.items()))
