"""The training engine: precision modes, exact resume after kill -9, faults, Ctrl-C, gradient accumulation,
and torchrun data parallelism (DDP, FSDP2) matching single-process training."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from corpus import write_corpus

from mixture_of_tokens import ModelConfig, TrainConfig
from mixture_of_tokens.checkpoint import manifest_problem
from mixture_of_tokens.data import prepare_data
from mixture_of_tokens.training.loop import Trainer
from mixture_of_tokens.training.metrics import read_metrics
from mixture_of_tokens.training.state import list_checkpoints, resolve_resume_checkpoint

SMALL_MODEL = dict(
    vocab_size=300, max_seq_len=32, d_model=32, n_blocks=2, n_heads=2, d_ff=128,
    ffn="mot", ffn_blocks="second-half", group_size=4, n_experts=4, expert_size=128,
)  # fmt: skip
CLI_MODEL_FLAGS = [
    "--preset", "tiny-mot", "--d-model", "32", "--n-heads", "2", "--d-ff", "128", "--expert-size", "128",
    "--n-experts", "4", "--group-size", "4", "--n-blocks", "2", "--max-seq-len", "32", "--vocab-size", "300",
    "--device", "cpu", "--threads", "1", "--eval-batches", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A text corpus whose token files are built once (so subprocesses find a warm cache)."""
    root = tmp_path_factory.mktemp("engine")
    write_corpus(root / "corpus")
    cache = root / "cache"
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("MOT_CACHE_DIR", str(cache))
    source = f"text:{root / 'corpus'}"
    data = prepare_data(source, vocab_size=300, progress=False)
    yield {"root": root, "source": source, "cache": cache, "data": data}
    monkeypatch.undo()


def _train_config(corpus: dict, out_dir: Path, **overrides) -> TrainConfig:
    settings = dict(
        steps=8, batch_size=8, lr=3e-3, warmup_steps=2, eval_every=4, eval_batches=2, log_every=1,
        data=corpus["source"], out_dir=str(out_dir), device="cpu",
    )  # fmt: skip
    settings.update(overrides)
    return TrainConfig(**settings)


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl")]


def _cli(args: list[str], env_extra: dict[str, str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, **env_extra}
    return subprocess.Popen(
        [sys.executable, "-m", "mixture_of_tokens.cli", *args], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed", "bf16-pure"])
def test_precision_modes_train(corpus: dict, tmp_path: Path, precision: str) -> None:
    trainer = Trainer(
        ModelConfig(**SMALL_MODEL), _train_config(corpus, tmp_path, steps=4, precision=precision),
        data=corpus["data"], progress=False,
    )  # fmt: skip
    result = trainer.run()
    losses = [loss for _, loss in _losses(tmp_path)]
    assert len(losses) == 4 and all(torch.isfinite(torch.tensor(losses)))
    assert result.final_eval_loss == result.final_eval_loss  # not NaN
    layer_norm_params = {id(p) for m in trainer.raw_model.modules() if isinstance(m, torch.nn.LayerNorm)
                         for p in m.parameters()}  # fmt: skip
    for parameter in trainer.raw_model.parameters():
        expected = torch.float32 if precision != "bf16-pure" or id(parameter) in layer_norm_params else torch.bfloat16
        assert parameter.dtype == expected
        moment = trainer.optimizer.state[parameter]["exp_avg"]
        assert moment.dtype == expected


def test_kill_9_then_resume_gives_bit_identical_losses(corpus: dict, tmp_path: Path) -> None:
    env = {"MOT_CACHE_DIR": str(corpus["cache"])}
    flags = [*CLI_MODEL_FLAGS, "--data", corpus["source"], "--batch-size", "8", "--steps", "200",
             "--log-every", "1", "--eval-every", "100", "--checkpoint-every", "10", "--deterministic"]  # fmt: skip
    reference = _cli(["train", *flags, "--out-dir", str(tmp_path / "reference")], env)
    assert reference.wait(timeout=240) == 0, reference.stderr.read()

    victim = _cli(["train", *flags, "--out-dir", str(tmp_path / "killed")], env)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        steps = [r["step"] for r in read_metrics(metrics)] if metrics.exists() else []
        if steps and steps[-1] >= 67:
            break
        time.sleep(0.01)
    assert victim.poll() is None, "the run finished before it could be killed"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    killed_at = max(r["step"] for r in read_metrics(metrics))
    assert killed_at < 200

    resumed = _cli(["train", "--resume", str(tmp_path / "killed"), "--threads", "1"], env)
    assert resumed.wait(timeout=240) == 0, resumed.stderr.read()
    assert _losses(tmp_path / "killed") == _losses(tmp_path / "reference")  # every step, bit for bit
    final = json.loads((tmp_path / "killed" / "summary.json").read_text())
    assert final["resumed_from_step"] is not None and final["resumed_from_step"] < killed_at + 1


def test_corrupt_checkpoint_is_skipped_for_the_previous_good_one(corpus: dict, tmp_path: Path) -> None:
    Trainer(
        ModelConfig(**SMALL_MODEL), _train_config(corpus, tmp_path, checkpoint_every=4, keep_checkpoints=3),
        data=corpus["data"], progress=False,
    ).run()  # fmt: skip
    first, second = list_checkpoints(tmp_path)
    assert manifest_problem(second) is None
    weights = second / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    assert "sha256" in manifest_problem(second)
    chosen, warnings = resolve_resume_checkpoint(tmp_path)
    assert chosen == first
    assert len(warnings) == 1 and second.name in warnings[0]
    with pytest.raises(ValueError, match=f"previous checkpoint is .*{first.name}"):
        resolve_resume_checkpoint(second)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(corpus: dict, tmp_path: Path) -> None:
    trainer = Trainer(
        ModelConfig(**SMALL_MODEL), _train_config(corpus, tmp_path, steps=12, checkpoint_every=4),
        data=corpus["data"], progress=False,
    )  # fmt: skip
    calls = {"n": 0}

    def poison(module, inputs, output):
        calls["n"] += module.training  # training forwards only: step k is the k-th
        return output * float("nan") if calls["n"] > 5 else output

    trainer.raw_model.final_norm.register_forward_hook(poison)
    with pytest.raises(FloatingPointError, match="step 6"):
        trainer.run()
    checkpoints = list_checkpoints(tmp_path)
    assert [c.name for c in checkpoints] == ["step-0000004"]
    assert manifest_problem(checkpoints[0]) is None


def test_ctrl_c_writes_a_checkpoint_and_exits_cleanly(corpus: dict, tmp_path: Path) -> None:
    env = {"MOT_CACHE_DIR": str(corpus["cache"])}
    flags = [*CLI_MODEL_FLAGS, "--data", corpus["source"], "--batch-size", "8", "--steps", "100000",
             "--log-every", "1", "--eval-every", "100000", "--out-dir", str(tmp_path)]  # fmt: skip
    process = _cli(["train", *flags], env)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.exists() and len(read_metrics(metrics)) >= 5):
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "resume with: mot train --resume" in stderr and "Traceback" not in stderr
    (checkpoint,) = list_checkpoints(tmp_path)
    assert manifest_problem(checkpoint) is None
    assert int(checkpoint.name.split("-")[1]) >= 5


def test_unwritable_out_dir_fails_before_any_data_or_compute(corpus: dict, tmp_path: Path, monkeypatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    fresh_cache = tmp_path / "fresh-cache"
    monkeypatch.setenv("MOT_CACHE_DIR", str(fresh_cache))
    with pytest.raises(ValueError, match="not writable"):
        Trainer(ModelConfig(**SMALL_MODEL), _train_config(corpus, blocker / "run"), progress=False)
    assert not fresh_cache.exists()


def test_full_disk_fails_before_training(corpus: dict, tmp_path: Path, monkeypatch) -> None:
    import shutil

    from mixture_of_tokens.training import run_directory

    monkeypatch.setattr(run_directory.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 1000))
    with pytest.raises(ValueError, match="MB free but the run needs about"):
        Trainer(ModelConfig(**SMALL_MODEL), _train_config(corpus, tmp_path), data=corpus["data"], progress=False)


def test_gradient_accumulation_matches_one_big_batch(corpus: dict, tmp_path: Path) -> None:
    runs = {}
    for accumulation in (1, 2):
        out = tmp_path / f"accumulate-{accumulation}"
        config = _train_config(corpus, out, steps=5, grad_accum_steps=accumulation)
        Trainer(ModelConfig(**SMALL_MODEL), config, data=corpus["data"], progress=False).run()
        runs[accumulation] = [loss for _, loss in _losses(out)]
    assert runs[1] == pytest.approx(runs[2], rel=1e-5)


def test_micro_batch_must_hold_whole_groups() -> None:
    from mixture_of_tokens.training.loop import check_run_settings

    config = TrainConfig(batch_size=8, grad_accum_steps=4)  # micro-batch 2 < group size 4
    with pytest.raises(ValueError, match="micro-batch .* = 2"):
        check_run_settings(ModelConfig(**SMALL_MODEL), config)
    with pytest.raises(ValueError, match="world size x grad_accum_steps"):
        check_run_settings(ModelConfig(**SMALL_MODEL), TrainConfig(batch_size=8, grad_accum_steps=3))


@pytest.mark.parametrize(("ffn", "parallel"), [("dense", "ddp"), ("mot", "ddp"), ("mot", "fsdp")])
def test_two_ranks_match_one_rank(corpus: dict, tmp_path: Path, ffn: str, parallel: str) -> None:
    env = {**os.environ, "MOT_CACHE_DIR": str(corpus["cache"]), "OMP_NUM_THREADS": "1"}
    flags = [*CLI_MODEL_FLAGS, "--ffn", ffn, "--data", corpus["source"], "--batch-size", "16", "--steps", "6",
             "--log-every", "1", "--eval-every", "3", "--parallel", parallel]  # fmt: skip
    single = subprocess.run(
        [sys.executable, "-m", "mixture_of_tokens.cli", "train", *flags, "--out-dir", str(tmp_path / "one")],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    double = subprocess.run(
        [*launcher, "-m", "mixture_of_tokens.cli", "train", *flags, "--out-dir", str(tmp_path / "two")],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert double.returncode == 0, double.stderr[-3000:]
    one, two = read_metrics(tmp_path / "one" / "metrics.jsonl"), read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in one] == [r["step"] for r in two] == list(range(1, 7))
    assert [r["loss"] for r in two] == pytest.approx([r["loss"] for r in one], rel=1e-5)
    assert [r["eval_loss"] for r in two if "eval_loss" in r] == pytest.approx(
        [r["eval_loss"] for r in one if "eval_loss" in r], rel=1e-5
    )
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["world_size"] == 2


def test_collapse_warning_reaches_the_metrics(corpus: dict, tmp_path: Path) -> None:
    model = ModelConfig(**{**SMALL_MODEL, "ffn": "token_choice", "ffn_blocks": "all"})
    config = _train_config(corpus, tmp_path, steps=4, collapse_share=0.2, collapse_patience=2)  # top of 4 >= 25%
    Trainer(model, config, data=corpus["data"], progress=False).run()
    warned = {r["step"]: r.get("warnings", []) for r in read_metrics(tmp_path / "metrics.jsonl")}
    assert warned[1] == [] and warned[3] == []
    assert len(warned[2]) == 2 and len(warned[4]) == 2  # both layers, every `patience` steps
    assert "routing collapse" in warned[2][0]
