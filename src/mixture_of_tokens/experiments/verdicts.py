"""Verdicts computed from the numbers: each claim of a suite is judged on the arms' final eval losses (mean over
seeds) against the noise measured in the same suite, never against an expected outcome.

Noise: the seed-to-seed standard deviation of the final eval loss, pooled over every arm with two or more seeds
(s), turned into the noise of the comparison: twice the standard error of the difference the claim looks at
(2 s sqrt(sum of 1/n over the means involved)). A margin beyond it in the claim's direction is "held", beyond it
the other way "not held", inside it "within noise" (for a "matches" claim, within noise is held). With fewer than
two seeds anywhere there is no noise estimate and the claim is "not judged" (the numbers are still given).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .suites import Claim

HELD, NOT_HELD, WITHIN_NOISE, NOT_JUDGED = "held", "not held", "within noise", "not judged"


@dataclass(frozen=True)
class ArmResult:
    """What a claim is judged on: one arm's final eval loss per seed and its eval curve (mean over seeds)."""

    name: str
    losses: tuple[float, ...]
    curve: tuple[tuple[int, float], ...] = ()

    @property
    def mean(self) -> float:
        return sum(self.losses) / len(self.losses)


@dataclass(frozen=True)
class Noise:
    """The pooled seed-to-seed standard deviation of final eval losses, and what it was pooled from."""

    seed_std: float | None
    arms: int
    degrees_of_freedom: int

    def of(self, *counts: int) -> float | None:
        """Twice the standard error of a difference (or sum) of means over `counts` seeds each."""
        if self.seed_std is None:
            return None
        return 2 * self.seed_std * math.sqrt(sum(1 / n for n in counts))

    def describe(self) -> str:
        if self.seed_std is None:
            return "no noise estimate (fewer than two seeds per model)"
        return (
            f"seed-to-seed std {self.seed_std:.4f} nats, pooled over {self.arms} models "
            f"({self.degrees_of_freedom} degrees of freedom)"
        )


def pooled_noise(results: Sequence[ArmResult]) -> Noise:
    """Pool the within-arm variance of every arm with two or more seeds."""
    squares, dof, arms = 0.0, 0, 0
    for result in results:
        if len(result.losses) >= 2:
            mean = result.mean
            squares += sum((x - mean) ** 2 for x in result.losses)
            dof += len(result.losses) - 1
            arms += 1
    return Noise(math.sqrt(squares / dof) if dof else None, arms, dof)


@dataclass(frozen=True)
class Verdict:
    claim: Claim
    outcome: str
    margin: float | None
    """Nats in the claim's direction (positive: the way the claim says)."""
    noise: float | None
    finding: str
    """One or two sentences with the numbers."""
    crossover_step: int | None = None
    reach_step: int | None = None


def _outcome(margin: float, noise: float | None, *, matches: bool = False) -> str:
    if noise is None:
        return NOT_JUDGED
    if margin > noise:
        return HELD
    if margin < -noise:
        return NOT_HELD
    return HELD if matches else WITHIN_NOISE


def judge(claim: Claim, results: Mapping[str, ArmResult], noise: Noise) -> Verdict:
    """The verdict on `claim` from `results` (arm name -> result); an arm without runs gives "not judged"."""
    missing = [name for name in claim.arms if name not in results or not results[name].losses]
    if missing:
        return Verdict(claim, NOT_JUDGED, None, None, f"no finished runs for {', '.join(missing)}.")
    arms = [results[name] for name in claim.arms]
    verdict = {
        "better": _better,
        "matches": _better,
        "trend": _trend,
        "cheaper": _cheaper,
        "overtakes": _overtakes,
    }[claim.test](claim, arms, noise)
    if verdict.noise is not None and verdict.margin is not None and abs(verdict.margin) <= verdict.noise:
        note = f" The margin {verdict.margin:+.4f} is inside the noise band ±{verdict.noise:.4f}."
        verdict = dataclasses.replace(verdict, finding=verdict.finding + note)
    return verdict


def _loss(result: ArmResult) -> str:
    return f"{result.name} {result.mean:.4f}" + (f" (n={len(result.losses)})" if len(result.losses) > 1 else "")


def _better(claim: Claim, arms: list[ArmResult], noise: Noise) -> Verdict:
    first, second = arms
    margin = second.mean - first.mean
    band = noise.of(len(first.losses), len(second.losses))
    ahead = "ahead of" if margin >= 0 else "behind"
    finding = f"{first.name} is {abs(margin):.4f} nats {ahead} {second.name} ({_loss(first)}, {_loss(second)})."
    return Verdict(claim, _outcome(margin, band, matches=claim.test == "matches"), margin, band, finding)


def _trend(claim: Claim, arms: list[ArmResult], noise: Noise) -> Verdict:
    margin = arms[0].mean - arms[-1].mean
    band = noise.of(len(arms[0].losses), len(arms[-1].losses))
    outcome = _outcome(margin, band)
    steps = [(a, b, a.mean - b.mean) for a, b in zip(arms, arms[1:])]
    reversed_steps = [
        f"{b.name} is {-gain:.4f} worse than {a.name}"
        for a, b, gain in steps
        if band is not None and gain < -noise.of(len(a.losses), len(b.losses))
    ]
    if outcome == HELD and reversed_steps:
        outcome = WITHIN_NOISE
    path = " -> ".join(f"{a.mean:.4f}" for a in arms)
    finding = f"eval loss along {', '.join(a.name for a in arms)}: {path}; first minus last {margin:+.4f} nats."
    if reversed_steps:
        finding += " Not monotone beyond noise: " + "; ".join(reversed_steps) + "."
    return Verdict(claim, outcome, margin, band, finding)


def _cheaper(claim: Claim, arms: list[ArmResult], noise: Noise) -> Verdict:
    a_high, a_low, b_high, b_low = arms
    cost_a, cost_b = a_low.mean - a_high.mean, b_low.mean - b_high.mean
    margin = cost_b - cost_a
    band = noise.of(*(len(a.losses) for a in arms))
    finding = (
        f"{a_high.name} -> {a_low.name} costs {cost_a:+.4f} nats, {b_high.name} -> {b_low.name} costs "
        f"{cost_b:+.4f} nats; the difference is {margin:+.4f} in the claim's favour."
    )
    return Verdict(claim, _outcome(margin, band), margin, band, finding)


def first_step_at_or_below(curve: Sequence[tuple[int, float]], target: float) -> int | None:
    """The first step at which a curve reaches `target`, interpolated linearly between eval points."""
    previous: tuple[int, float] | None = None
    for step, loss in curve:
        if loss <= target:
            if previous is None or previous[1] == loss:
                return step
            step0, loss0 = previous
            return round(step0 + (loss0 - target) / (loss0 - loss) * (step - step0))
        previous = (step, loss)
    return None


def crossover_step(curve: Sequence[tuple[int, float]], reference: Sequence[tuple[int, float]]) -> int | None:
    """The first shared eval step from which `curve` stays at or below `reference` to the end (None: never)."""
    other = dict(reference)
    shared = [(step, loss, other[step]) for step, loss in curve if step in other]
    crossing = None
    for step, loss, reference_loss in shared:
        if loss <= reference_loss:
            crossing = crossing if crossing is not None else step
        else:
            crossing = None
    return crossing


def _overtakes(claim: Claim, arms: list[ArmResult], noise: Noise) -> Verdict:
    challenger, reference = arms
    margin = reference.mean - challenger.mean
    band = noise.of(len(challenger.losses), len(reference.losses))
    crossing = crossover_step(challenger.curve, reference.curve)
    reach = first_step_at_or_below(challenger.curve, reference.mean)
    last = reference.curve[-1][0] if reference.curve else None
    parts = [
        f"at the end {challenger.name} is {abs(margin):.4f} nats {'ahead of' if margin >= 0 else 'behind'} "
        f"{reference.name} ({_loss(challenger)}, {_loss(reference)})."
    ]
    parts.append(
        f"Its eval curve stays at or below {reference.name}'s from step {crossing} on."
        if crossing is not None
        else f"Its eval curve does not stay below {reference.name}'s within the budget."
    )
    if reach is not None and last:
        parts.append(
            f"It reaches {reference.name}'s final loss at step {reach} of {last}: {last / max(reach, 1):.2f}x "
            "fewer steps."
        )
    else:
        parts.append(f"It does not reach {reference.name}'s final loss within the budget.")
    return Verdict(claim, _outcome(margin, band), margin, band, " ".join(parts), crossing, reach)
