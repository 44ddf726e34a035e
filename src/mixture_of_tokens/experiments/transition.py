"""The transition experiment (docs/method.md §3) at CPU scale, as the authors ran it: one run that trains MoT,
switches every MoT layer to Token Choice in place (same tensors, same AdamW moments, one LR schedule) and goes on
training; compared with Token Choice trained from scratch and a dense model for the same total steps.

The paper: 150K MoT steps, then 15K Token Choice steps; the loss spikes at the switch and recovers to sparse-MoE
quality. Here the same recipe with the tiny presets (defaults: 400 + 40 steps, about 15 minutes on 2 cores). The
report reads the spike off the run's switch record (held-out loss just before and just after) and the recovery
off its final evaluation; the "loss if switched now" is logged at every evaluation before the switch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..data import PreparedData, prepare_data
from ..presets import get_preset
from ..training.loop import train
from ..training.run_files import read_run_metrics
from .plots import Panel, Series, plot_panels

TARGET = "token-choice"
RUNS = ("transition", "token-choice-scratch", "dense")


@dataclass
class TransitionReport:
    mot_before_switch: float
    right_after_switch: float
    after_recovery: float
    token_choice_from_scratch: float
    dense: float
    mot_steps: int
    continue_steps: int

    def table(self) -> str:
        total = self.mot_steps + self.continue_steps
        rows = [
            (f"MoT after {self.mot_steps} steps (before the switch)", self.mot_before_switch),
            ("switched to Token Choice, no training (the spike)", self.right_after_switch),
            (f"after {self.continue_steps} Token Choice steps (recovery)", self.after_recovery),
            (f"Token Choice from scratch, {total} steps", self.token_choice_from_scratch),
            (f"dense, {total} steps", self.dense),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  eval loss {loss:.4f}" for name, loss in rows)


def run_transition_experiment(
    out: Path,
    *,
    mot_steps: int = 400,
    continue_steps: int = 40,
    data: PreparedData | None = None,
    progress: bool = True,
    force: bool = False,
) -> TransitionReport:
    """Run the three trainings under `out`, write report.json and transition.png. Runs already under `out` are
    refused unless `force`, which moves each aside (to a sibling NAME.old-<timestamp>)."""
    if mot_steps < 1 or continue_steps < 1:
        raise ValueError(f"mot_steps and continue_steps must be positive, got {mot_steps}, {continue_steps}.")
    out = Path(out)
    total = mot_steps + continue_steps
    mot_preset = get_preset("tiny-mot")
    base = dataclasses.replace(mot_preset.train, steps=total, eval_every=max(total // 8, 1))
    data = data or prepare_data(base.data, vocab_size=mot_preset.model.vocab_size, progress=progress)

    def run(name: str, model_config, **train_fields) -> float:
        config = dataclasses.replace(base, out_dir=str(out / name), **train_fields)
        return train(model_config, config, run_name=name, data=data, progress=progress, force=force).final_eval_loss

    recovered = run("transition", mot_preset.model, switch_to=TARGET, switch_at=mot_steps, eval_also=TARGET)
    switch = next(r for r in read_run_metrics(out / "transition") if r.get("event") == "switch")
    scratch = run("token-choice-scratch", get_preset("tiny-token-choice").model)
    dense = run("dense", get_preset("tiny-dense").model)
    report = TransitionReport(
        switch["eval_loss_before"], switch["eval_loss_after"], recovered, scratch, dense, mot_steps, continue_steps
    )
    (out / "report.json").write_text(json.dumps(dataclasses.asdict(report), indent=2))
    plot_transition(out, report)
    return report


def _eval_curve(run_dir: Path, key: str = "eval_loss") -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in read_run_metrics(run_dir) if key in r]
    return [step for step, _ in points], [loss for _, loss in points]


def plot_transition(out: Path, report: TransitionReport) -> Path:
    """Held-out loss against steps: the transition run (with the spike at the switch and the loss-if-switched
    curve before it), Token Choice from scratch and dense."""
    switch = report.mot_steps
    steps, losses = _eval_curve(out / "transition")
    before = [(s, v) for s, v in zip(steps, losses) if s <= switch]
    after = [(switch, report.right_after_switch), *((s, v) for s, v in zip(steps, losses) if s > switch)]
    series = [
        Series("MoT", *zip(*before), group="transition", marker="o") if before else None,
        Series("after the switch: Token Choice (same tensors)", *zip(*after), group="switched", marker="o"),
        Series(
            "loss if switched now",
            *_eval_curve(out / "transition", f"eval_loss_if_{TARGET}"),
            group="switched",
            marker=".",
            linestyle=":",
        ),  # fmt: skip
        Series("Token Choice from scratch", *_eval_curve(out / "token-choice-scratch"), marker="."),
        Series("dense", *_eval_curve(out / "dense"), marker="."),
    ]
    panel = Panel(
        title="transition tuning in one run: MoT → Token Choice",
        xlabel="step",
        ylabel="held-out loss (nats/token)",
        series=[s for s in series if s is not None],
        vlines=[(switch, "switch")],
    )
    return plot_panels([panel], out / "transition.png", columns=1)
