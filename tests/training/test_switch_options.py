"""Transition tuning with every MoT option against every switch target: the switch leaves AdamW holding exactly the
switched model's parameters (those without a counterpart, a learnable temperature or a separate emit controller,
leave it with their moments), the run finishes, and a run interrupted after the switch resumes bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import build_model, tiny_model_config, tiny_train_config

from mixture_of_tokens import load_model
from mixture_of_tokens.layers import MixtureOfTokens
from mixture_of_tokens.layers.conversion import SWITCH_TARGETS, TARGETS
from mixture_of_tokens.training import guards, loop
from mixture_of_tokens.training.loop import train
from mixture_of_tokens.training.metrics import read_metrics
from mixture_of_tokens.training.state import load_training_state, resolve_resume_checkpoint
from mixture_of_tokens.training.step import build_optimizer
from mixture_of_tokens.training.switch import switch_in_place

MOT_OPTIONS = {
    "temperature-scalar": {"mot_learnable_temperature": "scalar"},
    "temperature-per-expert": {"mot_learnable_temperature": "per_expert"},
    "separate-emit-controller": {"mot_separate_emit_controller": True},
    "emit-over-experts": {"mot_emit": "experts"},
    "uniform-routing": {"mot_routing": "uniform"},
    "random-grouping": {"mot_grouping": "random"},
    "recompute": {"mot_compute": "recompute"},
    "temperature-frozen-at-the-switch": {"mot_learnable_temperature": "scalar", "temperature_freeze_steps": 6},
    "temperature-schedule": {"mot_temperature_schedule": "cosine", "mot_temperature_final": 0.1},
    "swiglu-experts": {"ffn_activation": "swiglu"},
}
"""One ModelConfig override per MoT option a run can switch away from."""

CASES = [pytest.param(option, target, id=f"{option}-{target}") for option in MOT_OPTIONS for target in SWITCH_TARGETS]
VANISHING = ("log_temperature", "emit_controller")
"""MoT parameters no switch target has a counterpart for."""


@pytest.mark.parametrize("option,target", CASES)
def test_switch_leaves_the_optimizer_holding_exactly_the_switched_model(option, target):
    small = dict(vocab_size=50, max_seq_len=8, d_model=16, d_ff=32, expert_size=32)
    model = build_model(tiny_model_config(**small, **MOT_OPTIONS[option]))
    optimizer = build_optimizer(model, tiny_train_config("unused"))
    ids = torch.randint(0, 50, (8, 8), generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        model(ids, ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    mot = model.blocks[1].ffn
    vanishing = [getattr(mot, name) for name in VANISHING if getattr(mot, name) is not None]
    assert all(p in optimizer.state for p in vanishing)
    w1_moment = optimizer.state[mot.w1]["exp_avg"].clone()

    switch_in_place(model, optimizer, target)

    assert type(model.blocks[1].ffn).kind == TARGETS[target]
    in_optimizer = [p for group in optimizer.param_groups for p in group["params"]]
    assert {id(p) for p in in_optimizer} == {id(p) for p in model.parameters()}
    assert len(in_optimizer) == len({id(p) for p in in_optimizer})  # none twice
    assert all(p not in optimizer.state for p in vanishing)  # no stale moments
    assert {id(p) for p in optimizer.state} <= {id(p) for p in model.parameters()}
    assert torch.equal(optimizer.state[model.blocks[1].ffn.w1]["exp_avg"], w1_moment)  # the others keep theirs
    model(ids, ids).loss.backward()
    optimizer.step()


def switch_run(corpus: dict, out_dir: Path, model_overrides: dict, target: str, *, stop_after: int | None = None):
    """8 steps, switching to `target` at step 4, checkpoints every 2 steps; Ctrl-C after `stop_after` steps."""
    fields = dict(steps=8, switch_to=target, switch_at=4, checkpoint_every=2, eval_batches=1, deterministic=True)
    config = tiny_train_config(corpus["source"], out_dir, **fields)
    model_config = tiny_model_config(**model_overrides)
    if stop_after is None:
        return train(model_config, config, run_name=out_dir.name, data=corpus["data"], progress=False)
    steps_seen: list[int] = []
    original_step, original_is_set = loop.OptimizerStep.__call__, guards.InterruptFlag.is_set

    def count(self, step, batch):
        steps_seen.append(step)
        return original_step(self, step, batch)

    def interrupt_after(self):  # a Ctrl-C: checkpoint at step `stop_after` and stop
        return original_is_set(self) or len(steps_seen) >= stop_after

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(loop.OptimizerStep, "__call__", count)
        monkeypatch.setattr(guards.InterruptFlag, "is_set", interrupt_after)
        return train(model_config, config, run_name=out_dir.name, data=corpus["data"], progress=False)


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


@pytest.mark.parametrize("option,target", CASES)
def test_run_switches_finishes_and_resumes_after_the_switch(corpus, tmp_path, option, target):
    overrides = MOT_OPTIONS[option]
    reference = switch_run(corpus, tmp_path / "reference", overrides, target)
    assert not reference.stopped_early and 8 in reference.eval_losses
    events = [r for r in read_metrics(tmp_path / "reference" / "metrics.jsonl") if r.get("event") == "switch"]
    assert [(e["step"], e["switch_to"]) for e in events] == [(4, target)]

    stopped = switch_run(corpus, tmp_path / "killed", overrides, target, stop_after=6)
    assert stopped.stopped_early
    checkpoint, _ = resolve_resume_checkpoint(tmp_path / "killed")
    saved = load_training_state(checkpoint)
    assert saved.step == 6
    names = list(saved.model_state) + list(saved.optimizer_state["state"])
    assert not [name for name in names if name.rsplit(".", 1)[-1] in VANISHING]  # gone from weights and moments
    train(None, None, data=corpus["data"], progress=False, resume_from=tmp_path / "killed")
    assert [step for step, _ in losses(tmp_path / "reference")] == list(range(1, 9))
    assert losses(tmp_path / "killed") == losses(tmp_path / "reference")  # every step, bit for bit
    assert not any(isinstance(m, MixtureOfTokens) for m in load_model(tmp_path / "killed").modules())
