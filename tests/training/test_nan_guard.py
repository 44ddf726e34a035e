"""Non-finite values never reach a checkpoint: the loss and the gradient norm are checked every step on the
device, a bad step's gradients are zeroed before AdamW, the run stops at the next check with one sentence naming
the step and the last good checkpoint, and metrics.jsonl stays valid JSON."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from cli_runs import run_mot, train_argv
from helpers import tiny_model_config, tiny_train_config
from safetensors.torch import load_file

from mixture_of_tokens.training.errors import NonFiniteError
from mixture_of_tokens.training.loop import Trainer
from mixture_of_tokens.training.state import list_checkpoints


def _strict_json_lines(path: Path) -> list[dict]:
    """Every line parsed as JSON proper: a bare NaN or Infinity is an error, as in any strict reader."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def _poison_gradients_at(trainer: Trainer, bad_step: int) -> None:
    """NaN gradients in the training step `bad_step` (1-based) while its loss stays finite."""
    steps = {"n": 0}

    def count(module, inputs):
        steps["n"] += module.training

    trainer.raw_model.register_forward_pre_hook(count)
    weight = trainer.raw_model.token_embedding.weight
    weight.register_hook(lambda grad: grad * float("nan") if steps["n"] == bad_step else grad)


def _every_checkpoint_is_finite(run_dir: Path) -> bool:
    return all(
        torch.isfinite(tensor).all()
        for c in list_checkpoints(run_dir)
        for tensor in load_file(c / "model.safetensors").values()
    )


def test_a_nan_gradient_on_a_checkpoint_step_is_never_checkpointed(corpus: dict, tmp_path: Path) -> None:
    config = tiny_train_config(corpus["source"], tmp_path, steps=8, checkpoint_every=2, keep_checkpoints=5)
    trainer = Trainer(tiny_model_config(), config, data=corpus["data"], progress=False)
    _poison_gradients_at(trainer, 4)
    with pytest.raises(FloatingPointError) as stop:
        trainer.run()
    assert _every_checkpoint_is_finite(tmp_path)
    assert [c.name for c in list_checkpoints(tmp_path)] == ["step-0000002"]
    assert isinstance(stop.value, NonFiniteError)
    assert re.search(r"not finite at step 4\b.*step-0000002", str(stop.value))
    assert not (tmp_path / "model.safetensors").exists()  # no final weights either
    records = _strict_json_lines(tmp_path / "metrics.jsonl")
    assert records[-1]["step"] == 4 and records[-1]["grad_norm"] is None and "stopped" in records[-1]


def test_a_bad_step_between_checks_is_caught_and_keeps_the_weights_finite(corpus: dict, tmp_path: Path) -> None:
    config = tiny_train_config(corpus["source"], tmp_path, steps=8, log_every=4, eval_every=8, checkpoint_every=4)
    trainer = Trainer(tiny_model_config(), config, data=corpus["data"], progress=False)
    _poison_gradients_at(trainer, 3)  # not a log step: found at step 4 by the device-side flag
    with pytest.raises(FloatingPointError) as stop:
        trainer.run()
    assert all(torch.isfinite(p).all() for p in trainer.raw_model.parameters())  # the bad step was skipped
    assert all(torch.isfinite(s).all() for st in trainer.optimizer.state.values() for s in st.values())
    assert list_checkpoints(tmp_path) == []
    assert re.search(r"not finite at step 3\b.*none \(no checkpoint", str(stop.value))
    assert "resume" not in str(stop.value)  # there is nothing to resume


def test_a_resumed_checkpoint_that_fails_again_at_once_is_named_as_such(corpus: dict, tmp_path: Path) -> None:
    config = tiny_train_config(corpus["source"], tmp_path, steps=4, checkpoint_every=4, eval_every=4)
    Trainer(tiny_model_config(), config, data=corpus["data"], progress=False).run()
    longer = dataclasses.replace(config, steps=8)
    trainer = Trainer(tiny_model_config(), longer, data=corpus["data"], progress=False, resume_from=tmp_path)
    _poison_gradients_at(trainer, 1)  # the first step after the checkpoint
    with pytest.raises(NonFiniteError) as stop:
        trainer.run()
    message = str(stop.value)
    assert re.search(r"not finite at step 5\b.*step-0000004, the checkpoint this run resumed from", message)
    assert (
        "failed again 1 step after it" in message and "a lower lr or a tighter grad_clip" in message
    )  # Python spelling


def test_an_absurd_learning_rate_is_refused_before_any_data(corpus: dict, tmp_path: Path, cache_dir, capsys) -> None:
    for lr in ("1e39", "inf", "nan", "0"):
        status, _, err = run_mot(train_argv(corpus["source"], "--lr", lr, "--out-dir", str(tmp_path / "run")), capsys)
        assert status == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, (lr, err)
        assert "lr must be a positive finite number at most 1e+30" in err
    assert not cache_dir.exists() and not (tmp_path / "run").exists()


def test_a_huge_learning_rate_stops_with_one_sentence_and_valid_metrics(corpus: dict, tmp_path: Path, capsys) -> None:
    argv = train_argv(corpus["source"], "--lr", "1e30", "--steps", "6", "--checkpoint-every", "1")
    status, _, err = run_mot([*argv, "--out-dir", str(tmp_path / "run")], capsys)
    assert status == 1 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("mot train: error: the loss or gradient norm was not finite at step")
    assert "last good checkpoint is" in last
    assert _every_checkpoint_is_finite(tmp_path / "run")
    _strict_json_lines(tmp_path / "run" / "metrics.jsonl")
