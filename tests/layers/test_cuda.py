"""The CUDA paths against the plain paths, forward and gradients, in float32 and bfloat16, and one training step per
precision on CUDA (compiled, as `compile` unset means there). Skipped without a CUDA device: CI and the CPU
machines run none of it. The grouped Token/Expert Choice dispatch has its CUDA test in test_grouped_dispatch.py, the
fused AdamW and the sync-free step theirs in test_throughput.py."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import needs_cuda

from mixture_of_tokens.data.masking import IGNORE_INDEX
from mixture_of_tokens.layers import MixtureOfTokens
from mixture_of_tokens.lm_loss import chunked_lm_loss_sum
from mixture_of_tokens.training.metrics import read_metrics

pytestmark = needs_cuda

DTYPE_TOLERANCES = [(torch.float32, 1e-5), (torch.bfloat16, 3e-2)]
"""(autocast dtype or float32, relative tolerance against the float32 plain path's largest value)."""


def _close(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    scale = expected.abs().max().item() + 1e-12
    assert (actual.float() - expected.float()).abs().max().item() <= tol * scale


def _run(module, x: torch.Tensor, grad: torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
    """Output and gradients (input, then every parameter) under autocast to `dtype` (none for float32)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        out = module(x)
    params = [p for p in module.parameters() if p.requires_grad]
    return [out, *torch.autograd.grad(out, [x, *params], grad.to(out.dtype))]


@pytest.mark.parametrize(("dtype", "tol"), DTYPE_TOLERANCES)
@pytest.mark.parametrize("sizing", [(32, 32, 64), (32, 256, 8)])  # (G, E, h): /32E and /32E/8 at d=64
def test_mot_recompute_matches_the_plain_path(dtype: torch.dtype, tol: float, sizing: tuple[int, int, int]) -> None:
    group, experts, hidden = sizing
    torch.manual_seed(0)
    plain = MixtureOfTokens(64, n_experts=experts, expert_size=hidden, group_size=group).cuda()
    recomputing = copy.deepcopy(plain)
    recomputing.compute = "recompute"
    x, grad = torch.randn(64, 16, 64, device="cuda"), torch.randn(64, 16, 64, device="cuda")
    exact = _run(plain, x, grad, torch.float32)
    if dtype == torch.float32:
        for got, want in zip(_run(recomputing, x, grad, dtype), exact, strict=True):
            _close(got, want, tol)
        return
    # in bfloat16: no further from float32 than the plain path in bfloat16 (twice its error, for rounding luck)
    plain_low = _run(plain, x, grad, dtype)
    for got, reference, want in zip(_run(recomputing, x, grad, dtype), plain_low, exact, strict=True):
        reference_error = (reference.float() - want).abs().max().item()
        assert (got.float() - want).abs().max().item() <= 2 * reference_error + 1e-6


@pytest.mark.parametrize(("dtype", "tol"), DTYPE_TOLERANCES)
def test_chunked_loss_matches_cross_entropy_of_the_full_logits(dtype: torch.dtype, tol: float) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(3000, 64, device="cuda", requires_grad=True)
    weight = torch.randn(50257, 64, device="cuda", requires_grad=True) / 8
    targets = torch.randint(50257, (3000,), device="cuda")
    targets[::7] = IGNORE_INDEX
    expected = F.cross_entropy(hidden @ weight.T, targets, ignore_index=IGNORE_INDEX, reduction="sum")
    expected_grads = torch.autograd.grad(expected, (hidden, weight))
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        loss = chunked_lm_loss_sum(hidden, weight, targets)
    grads = torch.autograd.grad(loss, (hidden, weight))
    _close(loss, expected, tol)
    for got, want in zip(grads, expected_grads, strict=True):
        _close(got, want, tol)


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed", "bf16-pure"])
@pytest.mark.parametrize("ffn", ["dense", "mot", "token_choice", "expert_choice"])
def test_one_compiled_training_step_per_precision(trainer_factory, precision: str, ffn: str) -> None:
    trainer = trainer_factory({"ffn": ffn}, steps=2, eval_every=2, device="cuda", precision=precision)
    assert trainer.device.type == "cuda" and trainer._compiles()
    trainer.run()
    losses = [row["loss"] for row in read_metrics(trainer.out_dir / "metrics.jsonl") if "loss" in row]
    assert len(losses) == 2 and all(loss == loss and loss < 20 for loss in losses)
