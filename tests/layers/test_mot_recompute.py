"""MoT's recomputing path (`mot_compute="recompute"`, layers/mot_recompute.py) against the float64 plain-loop
reference and against the plain path, forward and gradients, over one and several blocks of experts, and what
it keeps."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import assert_close, gradcheck_layer, random_float64_layer, same_group_same_position, tiny_model_config
from reference import reference_mot

from mixture_of_tokens.layers import MixtureOfTokens, layer_class
from mixture_of_tokens.layers import mot_recompute as recompute_module

OPTION_CASES = {
    "method": {},
    "separate emit controller": {"separate_emit_controller": True},
    "emit over experts": {"emit": "experts"},
    "uniform": {"routing": "uniform"},
    "learnable temperature": {"learnable_temperature": "per_expert", "temperature": 0.7},
    "within sequence": {"group_axis": "within_sequence"},
}


@pytest.fixture(params=["one block", "one expert a block"])
def block_bytes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """The real budget (every tiny layer fits one block) or 1 byte (a block per expert)."""
    budget = recompute_module.BLOCK_BYTES if request.param == "one block" else 1
    monkeypatch.setattr(recompute_module, "BLOCK_BYTES", budget)
    return budget


def _pair(dtype: torch.dtype = torch.float64, **options) -> tuple[MixtureOfTokens, MixtureOfTokens]:
    """The same random layer (d=8, E=5, h=6, G=4) on the plain path and on the recomputing path."""
    plain = random_float64_layer(MixtureOfTokens, 8, n_experts=5, expert_size=6, group_size=4, **options)
    recomputing = copy.deepcopy(plain)
    recomputing.compute = "recompute"
    return plain.to(dtype), recomputing.to(dtype)


def _output_and_grads(layer: MixtureOfTokens, x_BSD: torch.Tensor, grad_BSD: torch.Tensor) -> list[torch.Tensor]:
    x_BSD = x_BSD.detach().clone().requires_grad_(True)
    out_BSD = layer(x_BSD)
    params = [p for p in layer.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out_BSD, [x_BSD, *params], grad_BSD, allow_unused=True, materialize_grads=True)
    return [out_BSD, *grads]


@pytest.mark.parametrize("case", OPTION_CASES)
def test_equals_the_plain_path_in_float64(case: str, block_bytes: int) -> None:
    plain, recomputing = _pair(**OPTION_CASES[case])
    x_BSD = torch.randn(8, 4, 8, dtype=torch.float64)
    grad_BSD = torch.randn_like(x_BSD)
    for got, want in zip(_output_and_grads(recomputing, x_BSD, grad_BSD), _output_and_grads(plain, x_BSD, grad_BSD)):
        assert_close(got, want)


def test_matches_the_plain_loop_reference(block_bytes: int) -> None:
    _, layer = _pair()
    x_BSD = torch.randn(8, 3, 8, dtype=torch.float64)
    expected = reference_mot(
        x_BSD, layer.controller.detach(), layer.w1.detach(), layer.w2.detach(), 4, layer.temperature
    )
    assert_close(layer(x_BSD), expected)


def test_gradcheck_over_several_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recompute_module, "BLOCK_BYTES", 1)
    layer = random_float64_layer(MixtureOfTokens, 4, n_experts=3, expert_size=3, group_size=2, compute="recompute")
    assert gradcheck_layer(layer, torch.randn(4, 2, 4, dtype=torch.float64, requires_grad=True))


def test_float32_to_1e5_of_the_plain_path(block_bytes: int) -> None:
    plain, recomputing = _pair(torch.float32)
    x_BSD, grad_BSD = torch.randn(16, 6, 8), torch.randn(16, 6, 8)
    for got, want in zip(_output_and_grads(recomputing, x_BSD, grad_BSD), _output_and_grads(plain, x_BSD, grad_BSD)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_bf16_autocast_runs_in_the_autocast_dtype_like_the_plain_path(block_bytes: int) -> None:
    """Under autocast both paths compute in bfloat16; they agree to bfloat16 rounding (the recomputing path sums
    expert blocks in float32, so it is, if anything, closer to float32)."""
    plain, recomputing = _pair(torch.float32)
    x_BSD, grad_BSD = torch.randn(16, 6, 8), torch.randn(16, 6, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _output_and_grads(recomputing, x_BSD, grad_BSD)
        want = _output_and_grads(plain, x_BSD, grad_BSD)
    assert got[0].dtype == want[0].dtype == torch.bfloat16
    exact = _output_and_grads(plain, x_BSD, grad_BSD)
    for got_t, want_t, exact_t in zip(got, want, exact):
        scale = exact_t.abs().max().item()
        assert (got_t.float() - exact_t).abs().max().item() <= 0.05 * scale
        assert (got_t.float() - want_t.float()).abs().max().item() <= 0.05 * scale


def test_no_leakage_across_groups_or_positions(block_bytes: int) -> None:
    """Changing one token moves only the outputs of its group at its position, as on the plain path."""
    _, layer = _pair()
    x_BSD = torch.randn(8, 5, 8, dtype=torch.float64)
    changed = x_BSD.clone()
    changed[5, 2] += 1.0
    moved = (layer(changed) - layer(x_BSD)).abs().amax(-1) > 0
    assert moved.any()
    assert not (moved & ~same_group_same_position(8, 5, 4, example=5, position=2)).any()


def test_keeps_no_mixed_tokens_for_backward() -> None:
    """The tensors autograd keeps shrink by the mixed tokens (E/G x D values per token), as the memory estimate
    states; every saved tensor is counted once."""
    config = tiny_model_config(ffn_blocks="all", n_experts=16, expert_size=32)

    def saved_values(layer: MixtureOfTokens, x_BSD: torch.Tensor) -> int:
        storages: dict[int, int] = {}

        def keep(tensor: torch.Tensor) -> torch.Tensor:
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
            layer(x_BSD)
        parameters = {p.untyped_storage().data_ptr() for p in layer.parameters()}
        return sum(n for pointer, n in storages.items() if pointer not in parameters) // 4

    x_BSD = torch.randn(8, config.max_seq_len, config.d_model, requires_grad=True)
    tokens = x_BSD.shape[0] * x_BSD.shape[1]
    plain = MixtureOfTokens.from_config(config)
    recomputing = MixtureOfTokens.from_config(tiny_model_config(**{**config.__dict__, "mot_compute": "recompute"}))
    saved_difference = (saved_values(plain, x_BSD) - saved_values(recomputing, x_BSD)) / tokens
    assert saved_difference == pytest.approx(config.n_experts / config.group_size * config.d_model)
    estimate = layer_class("mot").activation_values_per_token
    recomputed = tiny_model_config(**{**config.__dict__, "mot_compute": "recompute"})
    estimated_difference = estimate(config) - estimate(recomputed)
    assert estimated_difference == pytest.approx(saved_difference)


def test_without_gradients_the_plain_path_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Evaluation and generation keep nothing for backward, so there is nothing to recompute."""
    _, layer = _pair()
    monkeypatch.setattr("mixture_of_tokens.layers.mot.recomputing_mix", None)  # would fail if called
    with torch.no_grad():
        assert layer(torch.randn(4, 2, 8, dtype=torch.float64)).shape == (4, 2, 8)


def test_a_block_of_mixed_tokens_stays_within_the_budget() -> None:
    """Blocks take as many experts as fit BLOCK_BYTES of mixed tokens [R, experts, D] (at least one, at most E)."""
    per_expert = 256 * 256 * 4  # R = 256 rows of D = 256 float32 values: /16E/8 at the CPU benchmark's shape
    assert recompute_module.experts_per_block(256, 128, 256, 4) == recompute_module.BLOCK_BYTES // per_expert == 32
    assert recompute_module.experts_per_block(4, 5, 8, 4) == 5  # everything fits: one block
    assert recompute_module.experts_per_block(10**6, 5, 1024, 4) == 1  # nothing fits: one expert a block
