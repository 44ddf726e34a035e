"""Transition tuning in one run (`--switch-to token-choice --switch-at N`): the switch is in the metrics and the
summary, the schedule is one cosine over all steps, the run resumes across the switch bit for bit, and the
"loss if switched now" is logged at every eval before it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from corpus import write_corpus
from helpers import tiny_model_config, tiny_train_config

from mixture_of_tokens import load_model
from mixture_of_tokens.checkpoint import read_config
from mixture_of_tokens.data import prepare_data
from mixture_of_tokens.layers import ExpertChoice, MixtureOfTokens, TokenChoice
from mixture_of_tokens.training import guards, loop, switch
from mixture_of_tokens.training.loop import train
from mixture_of_tokens.training.metrics import read_metrics
from mixture_of_tokens.training.step import learning_rate


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("switch")
    write_corpus(root / "corpus", n_documents=20, sentences=30)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("MOT_CACHE_DIR", str(root / "cache"))
        prepared = prepare_data(f"text:{root / 'corpus'}", vocab_size=300, progress=False)
    return prepared, f"text:{root / 'corpus'}"


def switch_run(data, out_dir: Path, **overrides):
    prepared, source = data
    fields = dict(steps=8, switch_to="token-choice", switch_at=4, checkpoint_every=2, deterministic=True)
    config = tiny_train_config(source, out_dir, **{**fields, **overrides})
    return train(tiny_model_config(), config, run_name=out_dir.name, data=prepared, progress=False)


def losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def test_switch_is_logged_and_the_run_ends_as_token_choice(data, tmp_path):
    seen_lrs: list[float] = []
    original = loop.OptimizerStep.__call__

    def spy(self, step, batch):
        result = original(self, step, batch)
        seen_lrs.append(result.lr)
        return result

    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(loop.OptimizerStep, "__call__", spy)
        switch_run(data, tmp_path / "run")
    run = tmp_path / "run"
    events = [r for r in read_metrics(run / "metrics.jsonl") if r.get("event") == "switch"]
    assert len(events) == 1 and events[0]["step"] == 4 and events[0]["switch_to"] == "token-choice"
    assert events[0]["eval_loss_after"] != events[0]["eval_loss_before"]  # the same logits, now over experts
    summary = json.loads((run / "summary.json").read_text())
    assert summary["switch"]["step"] == 4
    # one schedule over all 8 steps: the LRs are those of an 8-step schedule, continuous across the switch
    expected = [learning_rate(step, tiny_train_config("x", steps=8)) for step in range(8)]
    assert seen_lrs == pytest.approx(expected, rel=1e-12)
    model = load_model(run)
    assert isinstance(model.blocks[1].ffn, TokenChoice) and model.config.ffn == TokenChoice.kind
    train_config = read_config(run)["train"]
    assert (train_config["switch_to"], train_config["switch_at"]) == ("token-choice", 4)


def test_adamw_state_is_carried_across_the_switch(data, tmp_path, monkeypatch):
    """The moments of the controller, now the router, are the same tensors just before and just after."""
    captured = {}
    original = switch.switch_in_place

    def spy(model, optimizer, target):
        controller = model.blocks[1].ffn.controller
        captured["before"] = optimizer.state[controller]["exp_avg_sq"].clone()
        converted = original(model, optimizer, target)
        router = model.blocks[1].ffn.router
        captured["same_object"] = router is controller
        captured["after"] = optimizer.state[router]["exp_avg_sq"].clone()
        return converted

    monkeypatch.setattr(loop, "switch_in_place", spy)
    switch_run(data, tmp_path / "run", checkpoint_every=0)
    assert captured["same_object"]
    assert torch.count_nonzero(captured["before"]) > 0  # four MoT steps of second moments, not a fresh state
    assert torch.equal(captured["before"], captured["after"])


def test_resume_after_the_switch_is_bit_identical(data, tmp_path, monkeypatch):
    switch_run(data, tmp_path / "reference")
    steps_seen = []
    original = guards.InterruptFlag.is_set

    def interrupt_at_step_6(self):  # a Ctrl-C after the switch: checkpoint at step 6 and stop
        return original(self) or len(steps_seen) >= 6

    original_step = loop.OptimizerStep.__call__

    def count(self, step, batch):
        steps_seen.append(step)
        return original_step(self, step, batch)

    monkeypatch.setattr(guards.InterruptFlag, "is_set", interrupt_at_step_6)
    monkeypatch.setattr(loop.OptimizerStep, "__call__", count)
    stopped = switch_run(data, tmp_path / "killed")
    assert stopped.stopped_early
    monkeypatch.undo()
    prepared, _ = data
    train(None, None, data=prepared, progress=False, resume_from=tmp_path / "killed")
    assert losses(tmp_path / "killed") == losses(tmp_path / "reference")  # every step, bit for bit
    model = load_model(tmp_path / "killed")
    assert isinstance(model.blocks[1].ffn, TokenChoice)


@pytest.mark.parametrize("target,layer_type", [("token-choice", TokenChoice), ("expert-choice", ExpertChoice)])
def test_loss_if_switched_now_is_logged_before_the_switch_only(data, tmp_path, target, layer_type):
    switch_run(data, tmp_path / "run", switch_to="expert-choice", switch_at=6, eval_also=target, checkpoint_every=0)
    key = f"eval_loss_if_{target}"
    evals = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval_loss" in r]
    assert [r["step"] for r in evals] == [4, 8]
    assert key in evals[0] and key not in evals[1]  # step 8 is after the switch: nothing left to switch
    assert evals[0][key] != evals[0]["eval_loss"]
    model = load_model(tmp_path / "run")
    assert isinstance(model.blocks[1].ffn, ExpertChoice) and not isinstance(model.blocks[1].ffn, MixtureOfTokens)
