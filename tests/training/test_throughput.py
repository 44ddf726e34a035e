"""Trainer throughput on CUDA, checked on the CPU: the chunked loss equals the full-logits loss (loss and gradients,
float64 and float32, tied and untied heads, ignored labels, auxiliary losses) and never holds the logits of the
whole batch; AdamW is fused exactly where every parameter is a floating CUDA tensor and a checkpoint resumes across
that choice; host batches reach CUDA pinned and without blocking; and a step that does not log reads nothing back
from the device. Tests that need CUDA are skipped without it."""

from __future__ import annotations

import collections
import shutil
import traceback
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers import FLOAT64_TOL, build_model, needs_cuda, tiny_model_config, tiny_train_config
from torch.utils._python_dispatch import TorchDispatchMode

from mixture_of_tokens.checkpoint import read_manifest, write_manifest
from mixture_of_tokens.data.masking import IGNORE_INDEX
from mixture_of_tokens.lm_loss import LOSS_CHUNK_TOKENS, chunked_lm_loss_sum
from mixture_of_tokens.runtime.devices import pins_host_memory, to_device
from mixture_of_tokens.training.loop import Trainer
from mixture_of_tokens.training.metrics import read_metrics
from mixture_of_tokens.training.state import STATE_FILE
from mixture_of_tokens.training.step import (
    OptimizerStep,
    build_optimizer,
    fused_adamw_applies,
)

FLOAT32_TOL = 1e-5
BATCH, SEQ = 8, 32  # the tiny trainer model's batch: 256 tokens


# ----------------------------------------------------------------------------------------------- the chunked loss


def _hidden_weight_targets(dtype: torch.dtype, tokens: int = 37, vocab: int = 53, dim: int = 16):
    generator = torch.Generator().manual_seed(0)
    hidden_ND = torch.randn(tokens, dim, generator=generator, dtype=dtype).requires_grad_(True)
    weight_VD = torch.randn(vocab, dim, generator=generator, dtype=dtype).requires_grad_(True)
    targets_N = torch.randint(vocab, (tokens,), generator=generator)
    targets_N[::5] = IGNORE_INDEX  # unscored tokens: no loss, no gradient
    return hidden_ND, weight_VD, targets_N


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, FLOAT64_TOL), (torch.float32, FLOAT32_TOL)])
@pytest.mark.parametrize("chunk_tokens", [1, 8, 37, LOSS_CHUNK_TOKENS])
def test_the_chunked_loss_and_its_gradients_equal_cross_entropy_of_the_full_logits(dtype, tol, chunk_tokens) -> None:
    hidden_ND, weight_VD, targets_N = _hidden_weight_targets(dtype)
    expected = F.cross_entropy(hidden_ND @ weight_VD.T, targets_N, ignore_index=IGNORE_INDEX, reduction="sum")
    expected_grads = torch.autograd.grad(expected * 0.37, (hidden_ND, weight_VD))  # any incoming gradient
    loss = chunked_lm_loss_sum(hidden_ND, weight_VD, targets_N, chunk_tokens=chunk_tokens)
    grads = torch.autograd.grad(loss * 0.37, (hidden_ND, weight_VD))
    assert loss.dtype == dtype
    torch.testing.assert_close(loss, expected, atol=tol, rtol=tol)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    assert (grads[0][targets_N == IGNORE_INDEX] == 0).all()


def test_the_chunked_loss_under_bf16_autocast_is_the_bf16_matmul_of_the_plain_path() -> None:
    hidden_ND, weight_VD, targets_N = _hidden_weight_targets(torch.float32, tokens=64, vocab=100, dim=32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = F.cross_entropy(F.linear(hidden_ND, weight_VD).float(), targets_N, reduction="sum")
        loss = chunked_lm_loss_sum(hidden_ND, weight_VD, targets_N, chunk_tokens=16)
    expected_grads = torch.autograd.grad(expected, (hidden_ND, weight_VD))
    grads = torch.autograd.grad(loss, (hidden_ND, weight_VD))
    assert loss.dtype == torch.float32 and grads[1].dtype == torch.float32
    torch.testing.assert_close(loss, expected, atol=0, rtol=1e-6)  # the same bf16 logits, in float32
    torch.testing.assert_close(grads[0], expected_grads[0], atol=0, rtol=1e-6)
    # d(weight): bf16 products per chunk summed in float32 against one bf16 product: bf16's own rounding
    torch.testing.assert_close(grads[1], expected_grads[1], atol=1e-2 * expected_grads[1].abs().max(), rtol=0)


def _model_and_batch(dtype: torch.dtype, **overrides):
    config = tiny_model_config(**overrides)
    model = build_model(config).to(dtype)
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(config.vocab_size, (BATCH, SEQ), generator=generator)
    targets = torch.randint(config.vocab_size, (BATCH, SEQ), generator=generator)
    if config.objective == "masked":  # a BERT batch scores some positions only
        targets[torch.rand(BATCH, SEQ, generator=generator) > 0.15] = IGNORE_INDEX
    return model, ids, targets


def _loss_and_gradients(model, ids, targets, **kwargs):
    model.zero_grad(set_to_none=True)
    output = model(ids, targets, **kwargs)
    output.loss.backward()
    return output, {name: p.grad.clone() for name, p in model.named_parameters()}


MODEL_CASES = {
    "untied": {},
    "tied": dict(tie_embeddings=True),
    "masked objective": dict(objective="masked", mot_group_axis="within_sequence"),
    "token choice with z-loss": dict(ffn="token_choice", z_loss_weight=0.01),
}


@pytest.mark.parametrize("case", MODEL_CASES)
def test_the_training_loss_equals_the_full_logits_loss_in_float64(case: str) -> None:
    model, ids, targets = _model_and_batch(torch.float64, **MODEL_CASES[case])
    output, grads = _loss_and_gradients(model, ids, targets, return_logits=False, loss_chunk_tokens=48)
    assert output.logits is None
    # the reference: the full float64 logits' cross-entropy (the plain path rounds its logits to float32)
    model.zero_grad(set_to_none=True)
    logits_BSV = model(ids).logits
    aux_losses = model.aux_losses()
    total = F.cross_entropy(logits_BSV.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    lm_loss = total / (targets != IGNORE_INDEX).sum()
    (lm_loss + sum(aux_losses.values(), torch.zeros((), dtype=torch.float64))).backward()
    torch.testing.assert_close(output.lm_loss, lm_loss, atol=FLOAT64_TOL, rtol=FLOAT64_TOL)
    assert output.aux_losses.keys() == aux_losses.keys()
    assert bool(aux_losses) == (case == "token choice with z-loss")
    for name, value in aux_losses.items():
        torch.testing.assert_close(output.aux_losses[name], value, atol=FLOAT64_TOL, rtol=FLOAT64_TOL)
    for name, p in model.named_parameters():  # the head (tied: the embedding too) and everything below it
        torch.testing.assert_close(grads[name], p.grad, atol=FLOAT64_TOL, rtol=FLOAT64_TOL, msg=name)


@pytest.mark.parametrize("case", MODEL_CASES)
def test_the_training_loss_equals_the_plain_path_in_float32(case: str) -> None:
    model, ids, targets = _model_and_batch(torch.float32, **MODEL_CASES[case])
    chunked, chunked_grads = _loss_and_gradients(model, ids, targets, return_logits=False, loss_chunk_tokens=48)
    plain, plain_grads = _loss_and_gradients(model, ids, targets)
    for key in ("loss", "lm_loss"):
        torch.testing.assert_close(getattr(chunked, key), getattr(plain, key), atol=FLOAT32_TOL, rtol=FLOAT32_TOL)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, atol=FLOAT32_TOL, rtol=1e-4, msg=name)


def test_a_masked_batch_that_scores_nothing_has_loss_zero_not_nan() -> None:
    model, ids, targets = _model_and_batch(torch.float32, **MODEL_CASES["masked objective"])
    output = model(ids, torch.full_like(targets, IGNORE_INDEX), return_logits=False)
    assert float(output.lm_loss.detach()) == 0.0


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operation returns."""

    def __init__(self) -> None:
        super().__init__()
        self.numel = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(value, torch.Tensor):
                self.numel = max(self.numel, value.numel())
        return result


def test_the_training_loss_never_holds_the_logits_of_the_whole_batch() -> None:
    model, ids, targets = _model_and_batch(torch.float32, vocab_size=2000)
    tokens, vocab = ids.numel(), model.config.vocab_size
    largest = {}
    for name, kwargs in {"chunked": dict(return_logits=False, loss_chunk_tokens=64), "plain": {}}.items():
        with _LargestTensor() as mode:
            model(ids, targets, **kwargs).loss.backward()
        largest[name] = mode.numel
    assert largest["plain"] >= tokens * vocab  # the check can see the full logits
    assert largest["chunked"] <= 64 * vocab  # a chunk of logits (the head weight is d * V, smaller here)


def test_the_loss_only_forward_needs_targets_and_a_positive_chunk() -> None:
    model, ids, targets = _model_and_batch(torch.float32)
    with pytest.raises(ValueError, match="return_logits=False .* needs targets"):
        model(ids, return_logits=False)
    with pytest.raises(ValueError, match="chunk_tokens must be a positive integer, got 0"):
        model(ids, targets, return_logits=False, loss_chunk_tokens=0)


def test_without_gradients_the_chunked_loss_keeps_nothing_for_backward() -> None:
    model, ids, targets = _model_and_batch(torch.float32)
    with torch.no_grad():
        chunked = model(ids, targets, return_logits=False).loss
        plain = model(ids, targets).loss
    assert not chunked.requires_grad
    torch.testing.assert_close(chunked, plain, atol=FLOAT32_TOL, rtol=FLOAT32_TOL)


def test_the_chunked_loss_traces_under_torch_compile() -> None:
    hidden_ND, weight_VD, targets_N = _hidden_weight_targets(torch.float32)
    compiled = torch.compile(chunked_lm_loss_sum, backend="aot_eager", fullgraph=True)
    loss = compiled(hidden_ND, weight_VD, targets_N, chunk_tokens=8)
    grads = torch.autograd.grad(loss, (hidden_ND, weight_VD))
    expected = chunked_lm_loss_sum(hidden_ND, weight_VD, targets_N, chunk_tokens=8)
    expected_grads = torch.autograd.grad(expected, (hidden_ND, weight_VD))
    torch.testing.assert_close(loss, expected)
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------------------------------- fused AdamW


def _stand_in(device: str, floating: bool = True) -> SimpleNamespace:
    """What `fused_adamw_applies` looks at of a parameter, for devices this machine may not have."""
    return SimpleNamespace(device=torch.device(device), is_floating_point=lambda: floating)


def test_adamw_is_fused_exactly_when_every_parameter_is_a_floating_cuda_tensor() -> None:
    assert fused_adamw_applies([_stand_in("cuda"), _stand_in("cuda")])
    assert not fused_adamw_applies([_stand_in("cuda"), _stand_in("cpu")])
    assert not fused_adamw_applies([_stand_in("cuda"), _stand_in("cuda", floating=False)])
    assert not fused_adamw_applies([])
    model = build_model(tiny_model_config())
    assert not fused_adamw_applies(model.parameters())
    optimizer = build_optimizer(model, tiny_train_config("unused"))  # on the CPU: torch's default
    assert all(not group["fused"] and group["foreach"] is None for group in optimizer.param_groups)


@needs_cuda
def test_on_cuda_the_optimizer_is_fused_and_steps_like_the_for_each_one() -> None:
    model = build_model(tiny_model_config()).cuda()
    twin = build_model(tiny_model_config()).cuda()
    config = tiny_train_config("unused")
    fused, reference = build_optimizer(model, config), torch.optim.AdamW(twin.parameters(), lr=config.lr)
    assert all(group["fused"] for group in fused.param_groups)
    ids = torch.randint(300, (BATCH, SEQ), device="cuda")
    for net, optimizer in ((model, fused), (twin, reference)):
        for group in optimizer.param_groups:
            group["weight_decay"] = 0.0
        net(ids, ids).loss.backward()
        optimizer.step()
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------------- host to device


def test_on_the_cpu_a_batch_is_neither_pinned_nor_copied(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pytest.fail("pinned on the CPU"))
    batch = torch.arange(6)
    assert to_device(batch, torch.device("cpu")) is batch
    assert not pins_host_memory(torch.device("cpu")) and pins_host_memory(torch.device("cuda"))


def test_a_batch_bound_for_cuda_is_pinned_then_copied_without_blocking() -> None:
    calls = []

    class HostBatch:  # what to_device asks of a CPU tensor, recorded
        device = torch.device("cpu")

        def pin_memory(self):
            calls.append("pin_memory")
            return self

        def to(self, device, non_blocking=False):
            calls.append(("to", device, non_blocking))
            return "on the device"

    assert to_device(HostBatch(), torch.device("cuda", 0)) == "on the device"
    assert calls == ["pin_memory", ("to", torch.device("cuda", 0), True)]


def test_the_training_step_moves_its_batch_through_the_one_helper(
    trainer_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved = []
    monkeypatch.setattr("mixture_of_tokens.training.step.to_device", lambda t, d: moved.append(t.shape) or t)
    trainer_factory(steps=2).run()
    assert moved == [(BATCH, SEQ), (BATCH, SEQ)] * 2  # inputs and targets of each step, once each


@needs_cuda
def test_on_cuda_the_batch_arrives_equal() -> None:
    batch = torch.arange(12).reshape(3, 4)
    on_device = to_device(batch, torch.device("cuda"))
    assert on_device.device.type == "cuda" and torch.equal(on_device.cpu(), batch)


# ------------------------------------------------------------------------------------------- no host sync per step

READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")
"""The ways Python code reads a tensor's values back; on CUDA each one waits for the device."""


class ReadCounter:
    """Counts every read of a tensor's values by phase of the run ("report" inside a report step, "steps" elsewhere,
    None: not counting), keyed by the read and the function that made it. AdamW's step counters are not counted:
    unfused they live on the host (on CUDA too), and fused nothing reads them."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer, self.phase = optimizer, None
        self.reads = {"steps": collections.Counter(), "report": collections.Counter()}

    def wrap(self, name: str, read):
        def counted(tensor, *args, **kwargs):
            if self.phase and not any(tensor is state.get("step") for state in self.optimizer.state.values()):
                self.reads[self.phase][f"{name} in {traceback.extract_stack(limit=2)[0].name}"] += 1
            return read(tensor, *args, **kwargs)

        return counted


def _reads_of_a_run(trainer: Trainer, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, int], int]:
    """Run `trainer`; (the reads of tensor values outside its report steps, the number inside them)."""
    counter = ReadCounter(trainer.optimizer)
    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counter.wrap(name, getattr(torch.Tensor, name)))
    report = trainer._report

    def counted_report(*args, **kwargs):
        counter.phase = "report"
        try:
            return report(*args, **kwargs)
        finally:
            counter.phase = "steps"

    monkeypatch.setattr(trainer, "_report", counted_report)
    counter.phase = "steps"
    trainer.run()
    counter.phase = None
    return dict(counter.reads["steps"]), sum(counter.reads["report"].values())


@pytest.mark.parametrize("ffn", ["mot", "dense"])
def test_a_step_that_does_not_log_reads_nothing_back_from_the_device(trainer_factory, monkeypatch, ffn: str) -> None:
    trainer = trainer_factory({"ffn": ffn}, steps=8, log_every=4, eval_every=8)
    outside, inside = _reads_of_a_run(trainer, monkeypatch)
    assert outside == {}  # six steps (1-3, 5-7) without a single read
    assert inside > 0  # the counter is in place: the two log steps read the loss, gradient norm and flag


def test_the_read_counter_catches_a_step_that_reads_its_loss(trainer_factory, monkeypatch) -> None:
    """The check above can fail: the same kind of run, with a loop that reads every step's loss, is caught."""
    trainer = trainer_factory(steps=4, log_every=2, eval_every=4)
    step = OptimizerStep.__call__

    def step_that_reads(self, index, batch):
        result = step(self, index, batch)
        float(result.loss)  # as a loop that printed every step's loss would
        return result

    monkeypatch.setattr(OptimizerStep, "__call__", step_that_reads)
    outside, _ = _reads_of_a_run(trainer, monkeypatch)
    assert outside == {"__float__ in step_that_reads": 4}  # every step (a log step's report comes after it)


@needs_cuda
def test_on_cuda_a_step_that_does_not_log_never_synchronises(trainer_factory, monkeypatch) -> None:
    trainer = trainer_factory(steps=6, log_every=3, eval_every=6, device="cuda", compile=False)
    step = OptimizerStep.__call__

    def step_without_syncs(self, index, batch):
        if (index + 1) % 3 == 0:  # a log step: its report reads values anyway
            return step(self, index, batch)
        torch.cuda.set_sync_debug_mode("error")
        try:
            return step(self, index, batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    monkeypatch.setattr(OptimizerStep, "__call__", step_without_syncs)
    trainer.run()


# ------------------------------------------------------------------------------------------------------- resume


def _train_losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


def test_a_resumed_run_continues_exactly_also_from_a_fused_checkpoint(corpus: dict, tmp_path: Path) -> None:
    def run(out_dir: Path, **kwargs) -> Trainer:
        config = tiny_train_config(corpus["source"], out_dir, steps=8, checkpoint_every=4)
        trainer = Trainer(tiny_model_config(), config, data=corpus["data"], progress=False, **kwargs)
        trainer.run()
        return trainer

    run(tmp_path / "whole")
    shutil.copytree(tmp_path / "whole", tmp_path / "resumed")
    checkpoint = tmp_path / "resumed" / "checkpoints" / "step-0000004"
    state = torch.load(checkpoint / STATE_FILE, weights_only=False)  # as if written fused on CUDA
    state["optimizer"]["param_groups"] = [{**g, "fused": True} for g in state["optimizer"]["param_groups"]]
    torch.save(state, checkpoint / STATE_FILE)
    manifest = read_manifest(checkpoint)  # re-hashed, or the rewritten file would make it corrupt
    write_manifest(checkpoint, step=manifest["step"], run_id=manifest["run_id"])
    resumed = run(tmp_path / "resumed", resume_from=checkpoint)  # steps 5-8 again, from the step-4 checkpoint
    assert [g["fused"] for g in resumed.optimizer.param_groups] == [None, None]  # the CPU's implementation
    assert _train_losses(tmp_path / "resumed") == _train_losses(tmp_path / "whole")
