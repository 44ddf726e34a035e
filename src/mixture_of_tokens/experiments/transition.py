"""The transition experiment (docs/method.md §3) at CPU scale: train MoT, convert to Token Choice, continue, and
compare with Token Choice trained from scratch and a dense model for the same total steps.

The paper: 150K MoT steps, then 15K Token Choice steps; the loss spikes at the switch and recovers to sparse-MoE
quality. Here the same recipe with the tiny presets (defaults: 400 + 40 steps, about 15 minutes on 2 cores).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import load_model
from ..config import ModelConfig
from ..data import PreparedData, eval_batches, prepare_data
from ..evaluation.loss import evaluate_loss
from ..presets import get_preset
from ..training.loop import train
from ..training.metrics import read_metrics
from ..transition import convert_checkpoint


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
            ("converted to Token Choice, no training (the spike)", self.right_after_switch),
            (f"after {self.continue_steps} Token Choice steps (recovery)", self.after_recovery),
            (f"Token Choice from scratch, {total} steps", self.token_choice_from_scratch),
            (f"dense, {total} steps", self.dense),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  eval loss {loss:.4f}" for name, loss in rows)


def _eval_loss(checkpoint: Path, data: PreparedData, batch_size: int, n_batches: int) -> tuple[float, ModelConfig]:
    """Held-out loss of a checkpoint as it stands (no training), and its model config."""
    model, model_config, _ = load_model(checkpoint)
    batches = eval_batches(data.eval_tokens, batch_size, model_config.max_seq_len, n_batches)
    return evaluate_loss(model, batches, torch.device("cpu")), model_config


def run_transition_experiment(
    out: Path,
    *,
    mot_steps: int = 400,
    continue_steps: int = 40,
    continue_schedule: str = "continue",
    routing: dict[str, object] | None = None,
    data: PreparedData | None = None,
    progress: bool = True,
    force: bool = False,
) -> TransitionReport:
    """Run the four trainings and the conversion under `out`, write report.json and transition.png. Runs already
    under `out` are refused unless `force`, which moves each aside (to a sibling NAME.old-<timestamp>)."""
    if continue_schedule not in ("continue", "fresh"):
        raise ValueError(f"continue_schedule={continue_schedule!r} is not supported; allowed values: continue, fresh.")
    if mot_steps < 1 or continue_steps < 1:
        raise ValueError(f"mot_steps and continue_steps must be positive, got {mot_steps}, {continue_steps}.")
    out = Path(out)
    mot_preset = get_preset("tiny-mot")
    base = dataclasses.replace(mot_preset.train, eval_every=max(mot_steps // 8, 1))
    data = data or prepare_data(base.data, vocab_size=mot_preset.model.vocab_size, progress=progress)
    total = mot_steps + continue_steps

    def run(name: str, model_config, steps: int, **kwargs) -> float:
        config = dataclasses.replace(base, steps=steps, out_dir=str(out / name), **kwargs.pop("train", {}))
        result = train(model_config, config, run_name=name, data=data, progress=progress, force=force, **kwargs)
        return result.final_eval_loss

    mot_loss = run("mot", mot_preset.model, mot_steps)
    converted = convert_checkpoint(out / "mot", out / "converted", "token-choice", force=True, **(routing or {}))
    spike, converted_config = _eval_loss(converted, data, base.batch_size, base.eval_batches)
    schedule = (
        {"lr_schedule_offset": mot_steps, "warmup_steps": base.warmup_steps}
        if continue_schedule == "continue"
        else {"warmup_steps": max(continue_steps // 10, 1)}
    )
    recovered = run(
        "token-choice-continued",
        converted_config,
        continue_steps,
        init_from=converted,
        train={**schedule, "eval_every": max(continue_steps // 8, 1)},
    )
    scratch = run("token-choice-scratch", get_preset("tiny-token-choice").model, total)
    dense = run("dense", get_preset("tiny-dense").model, total)
    report = TransitionReport(mot_loss, spike, recovered, scratch, dense, mot_steps, continue_steps)
    (out / "report.json").write_text(json.dumps(dataclasses.asdict(report), indent=2))
    plot_transition(out, report)
    return report


def _eval_curve(run_dir: Path, offset: int = 0) -> list[tuple[int, float]]:
    return [(r["step"] + offset, r["eval_loss"]) for r in read_metrics(run_dir / "metrics.jsonl") if "eval_loss" in r]


def plot_transition(out: Path, report: TransitionReport) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    switch = report.mot_steps
    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    mot = _eval_curve(out / "mot")
    continued = [(switch, report.right_after_switch), *_eval_curve(out / "token-choice-continued", offset=switch)]
    axes.plot(*zip(*mot), marker="o", label="MoT")
    axes.plot(*zip(*continued), marker="o", label="MoT → Token Choice (transition tuning)")
    axes.plot(*zip(*_eval_curve(out / "token-choice-scratch")), marker=".", label="Token Choice from scratch")
    axes.plot(*zip(*_eval_curve(out / "dense")), marker=".", label="dense")
    axes.axvline(switch, color="gray", linestyle="--", linewidth=0.8)
    axes.annotate("switch", (switch, report.right_after_switch), textcoords="offset points", xytext=(5, 5))
    axes.set_xlabel("step")
    axes.set_ylabel("held-out loss (nats/token)")
    axes.set_title("transition tuning: MoT → Token Choice")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path = out / "transition.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
