"""expert_dispatch of Token Choice and Expert Choice: the grouped-GEMM path (torch._grouped_mm, which runs on CPU
too) against the padded path in float32 — output, aux losses, statistics and every gradient —, the grouped expert
MLP against a per-expert loop, the leakage audit under the grouped path, and when each dispatch is chosen or
refused. A CUDA test repeats the comparison in float32 and bfloat16 where a GPU is present."""

from __future__ import annotations

import pytest
import torch
from helpers import needs_cuda, random_float64_layer
from hypothesis import given, settings
from hypothesis import strategies as st
from reference_sparse import FLOAT32_TOL

from mixture_of_tokens.audit import capacity_binding_input, compare_outputs
from mixture_of_tokens.config import ModelConfig
from mixture_of_tokens.layers import ExpertChoice, TokenChoice
from mixture_of_tokens.layers.experts import (
    compute_dtype,
    grouped_expert_mlp,
    grouped_mm_problem,
    use_grouped_dispatch,
)

Layer = TokenChoice | ExpertChoice


def float32_layer(layer_class: type[Layer], d: int, e: int, h: int, *, seed: int = 0, **kwargs) -> Layer:
    """A float32 layer with random O(1) weights and spread-out router probabilities."""
    layer = random_float64_layer(layer_class, d, n_experts=e, expert_size=h, seed=seed, router_std=2.0, **kwargs)
    if isinstance(layer, ExpertChoice):
        with torch.no_grad():
            layer.norm.weight.uniform_(0.5, 1.5)
            layer.norm.bias.normal_()
    return layer.float()


def run(layer: Layer, x: torch.Tensor, dispatch: str) -> dict[str, torch.Tensor]:
    """Output, aux losses, statistics and the gradients of a random projection of the output plus the aux losses
    with respect to x and every parameter, for one dispatch."""
    layer.expert_dispatch = dispatch
    layer.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_(True)
    out = layer(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype)
    loss = (out * weights).sum() + sum(layer.aux_losses.values())
    loss.backward()
    results = {"out": out.detach(), "grad.x": x.grad}
    results.update({f"aux.{name}": value.detach() for name, value in layer.aux_losses.items()})
    results.update({f"stats.{name}": value for name, value in layer.stats.items()})
    results.update({f"grad.{name}": p.grad for name, p in layer.named_parameters()})
    return results


def assert_dispatches_agree(layer: Layer, x: torch.Tensor, tol: float = FLOAT32_TOL) -> dict[str, torch.Tensor]:
    padded, grouped = run(layer, x, "padded"), run(layer, x, "grouped")
    assert padded.keys() == grouped.keys()
    for name, value in padded.items():
        torch.testing.assert_close(grouped[name], value, atol=tol, rtol=tol, msg=lambda m, name=name: f"{name}: {m}")
    return grouped


# ----------------------------------------------------------------------------------------------------
# Grouped against padded


@pytest.mark.parametrize("scope", ["batch", "group"])
@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("capacity_factor", [None, 1.0])
def test_token_choice_grouped_matches_padded(scope, top_k, capacity_factor):
    layer = float32_layer(
        TokenChoice, 8, 4, 12, seed=top_k, top_k=top_k, capacity_factor=capacity_factor, scope=scope, group_size=4,
        z_loss_weight=1e-3,
    )  # fmt: skip
    x = torch.randn(8, 6, 8)
    results = assert_dispatches_agree(layer, x)
    assert (results["stats.dropped_ratio"] > 0) == (capacity_factor is not None)
    assert set(results) >= {"aux.load_balance", "aux.router_z", "grad.router", "grad.w1", "grad.w2"}


@pytest.mark.parametrize("capacity_factor", [None, 1.25])
def test_token_choice_with_empty_experts(capacity_factor):
    """Experts 1 and 3 are never chosen: their groups are empty (repeated offsets) and get zero gradient."""
    layer = float32_layer(TokenChoice, 8, 4, 8, seed=3, top_k=2, capacity_factor=capacity_factor)
    with torch.no_grad():
        layer.router[:, [1, 3]] = -layer.router[:, [0, 2]].abs() - 10.0
    x = torch.randn(4, 5, 8).abs()  # positive inputs: the two unwanted experts' logits are far below
    results = assert_dispatches_agree(layer, x)
    assert layer.expert_load[1] == 0 and layer.expert_load[3] == 0
    assert torch.all(results["grad.w1"][[1, 3]] == 0) and torch.all(results["grad.w2"][[1, 3]] == 0)


@settings(max_examples=25, deadline=None)
@given(
    scope=st.sampled_from(["batch", "group"]),
    n_groups=st.integers(1, 2),
    seq_len=st.integers(1, 4),
    d=st.sampled_from([4, 8]),
    e=st.integers(1, 5),
    h=st.sampled_from([4, 8, 12]),
    top_k=st.integers(1, 3),
    capacity_factor=st.sampled_from([None, 1.0, 2.0]),
    seed=st.integers(0, 2**16),
)
def test_token_choice_grouped_matches_padded_anywhere(scope, n_groups, seq_len, d, e, h, top_k, capacity_factor, seed):
    top_k = min(top_k, e)
    layer = float32_layer(
        TokenChoice, d, e, h, seed=seed, top_k=top_k, capacity_factor=capacity_factor, scope=scope, group_size=4
    )
    x = torch.randn(4 * n_groups, seq_len, d)
    tokens_per_group = 4 if scope == "group" else x.shape[0] * seq_len
    if capacity_factor and int(capacity_factor * tokens_per_group * top_k / e) < 1:
        return  # refused before any compute (tests/layers/test_token_choice.py)
    assert_dispatches_agree(layer, x)


@pytest.mark.parametrize("group_size,tokens_per_expert", [(4, 1), (4, 3), (8, 2)])
def test_expert_choice_grouped_matches_padded(group_size, tokens_per_expert):
    layer = float32_layer(ExpertChoice, 8, 4, 12, group_size=group_size, tokens_per_expert=tokens_per_expert)
    x = torch.randn(16, 3, 8)
    results = assert_dispatches_agree(layer, x)
    assert set(results) >= {"grad.norm.weight", "grad.norm.bias", "grad.router"}


# ----------------------------------------------------------------------------------------------------
# The grouped expert MLP


def test_grouped_expert_mlp_matches_a_loop_over_experts():
    """Rows sorted by expert, counts [3, 0, 5, 0]: empty experts are skipped; `.sum().backward()` sends a stride-0
    gradient, which the MLP hands on as a contiguous one."""
    torch.manual_seed(0)
    count_E = torch.tensor([3, 0, 5, 0])
    x_AD = torch.randn(8, 4, requires_grad=True)
    w1_EDH = torch.randn(4, 4, 8, requires_grad=True)
    w2_EHD = torch.randn(4, 8, 4, requires_grad=True)
    out_AD = grouped_expert_mlp(x_AD, count_E, w1_EDH, w2_EHD)
    expert_A = torch.repeat_interleave(torch.arange(4), count_E)
    expected_AD = torch.stack([torch.relu(x_AD[a] @ w1_EDH[e]) @ w2_EHD[e] for a, e in enumerate(expert_A.tolist())])
    torch.testing.assert_close(out_AD, expected_AD, atol=FLOAT32_TOL, rtol=FLOAT32_TOL)
    grads = torch.autograd.grad(out_AD.sum(), (x_AD, w1_EDH, w2_EHD))
    expected = torch.autograd.grad(expected_AD.sum(), (x_AD, w1_EDH, w2_EHD))
    for grad, expected_grad in zip(grads, expected, strict=True):
        torch.testing.assert_close(grad, expected_grad, atol=FLOAT32_TOL, rtol=FLOAT32_TOL)


def test_grouped_dispatch_in_bfloat16_and_under_autocast():
    """bfloat16 layers, and float32 layers under CPU bf16 autocast (torch._grouped_mm is not autocast: the
    grouped path casts to autocast's dtype itself), agree with the padded path to bfloat16 precision."""
    layer = float32_layer(TokenChoice, 16, 4, 16, top_k=2, capacity_factor=1.0)
    x = torch.randn(4, 6, 16)
    assert_dispatches_agree(layer.bfloat16(), x.bfloat16(), tol=2e-2)
    layer.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compute_dtype(x) == torch.bfloat16
        results = assert_dispatches_agree(layer, x, tol=2e-2)
    assert results["out"].dtype == torch.float32


# ----------------------------------------------------------------------------------------------------
# Leakage audit under the grouped path


@pytest.mark.parametrize("sequence,position", [(0, 15), (5, 10)])
def test_leakage_audit_with_grouped_dispatch(sequence, position):
    """The audit's capacity-binding input in float32: group scope, dropless and Expert Choice move only same-position
    outputs of the perturbed token's group; batch scope still leaks to earlier positions."""
    group, d = 4, 16
    sizes = {"n_experts": 4, "expert_size": 2 * d, "expert_dispatch": "grouped"}
    layers = {
        "group": (TokenChoice(d, **sizes, scope="group", group_size=group), True),
        "dropless": (TokenChoice(d, **sizes, capacity_factor=None), True),
        "expert_choice": (ExpertChoice(d, **sizes, group_size=group), True),
        "batch": (TokenChoice(d, **sizes, scope="batch"), False),
    }
    x, x_perturbed = (t.float() for t in capacity_binding_input(8, 16, d, sequence, position))
    members = set(range(sequence // group * group, (sequence // group + 1) * group))
    for name, (layer, causal) in layers.items():
        with torch.no_grad():
            layer.router[0].zero_()
            layer.router[0, 0] = 4.0
            result = compare_outputs(name, layer(x), layer(x_perturbed), sequence, position, expected_causal=causal)
        if causal:
            assert result.ok and not result.future_leak and result.moved_positions == [position], name
            assert sequence in result.moved_sequences and set(result.moved_sequences) <= members, name
        else:
            assert result.future_leak and min(result.moved_positions) < position


# ----------------------------------------------------------------------------------------------------
# Choosing the dispatch


def test_auto_runs_padded_off_cuda_and_padded_never_groups(monkeypatch):
    calls = []
    grouped_mm = torch._grouped_mm
    monkeypatch.setattr(torch, "_grouped_mm", lambda *a, **k: calls.append(1) or grouped_mm(*a, **k))
    layer = TokenChoice(8, n_experts=4, expert_size=16)
    assert layer.expert_dispatch == "auto"
    x = torch.randn(4, 3, 8)
    assert grouped_mm_problem(x, layer.w1, layer.w2) is None  # grouped could run here, but auto means CUDA only
    for dispatch in ("auto", "padded"):
        layer.expert_dispatch = dispatch
        layer(x)
        assert not use_grouped_dispatch(dispatch, x, layer.w1, layer.w2) and calls == []
    layer.expert_dispatch = "grouped"
    layer(x)
    assert len(calls) == 2  # the two expert matmuls


@pytest.mark.parametrize(
    "d,h,dtype,reason",
    [
        (8, 16, torch.float64, "the compute dtype is torch.float64, not float32, bfloat16 or float16"),
        (6, 16, torch.float32, "rows of d_model=6 or expert_size=16 torch.float32 values are not multiples of 16"),
        (8, 4, torch.bfloat16, "rows of d_model=8 or expert_size=4 torch.bfloat16 values are not multiples of 16"),
    ],
)
def test_explicit_grouped_refuses_what_grouped_mm_cannot_run_and_auto_falls_back(d, h, dtype, reason):
    for layer_class, kwargs in ((TokenChoice, {}), (ExpertChoice, {"group_size": 2})):
        layer = layer_class(d, n_experts=4, expert_size=h, expert_dispatch="grouped", **kwargs).to(dtype)
        x = torch.randn(4, 3, d, dtype=dtype)
        with pytest.raises(ValueError, match=rf"expert_dispatch='grouped' cannot run here: {reason}.*'padded'"):
            layer(x)
        layer.expert_dispatch = "auto"
        assert layer(x).shape == x.shape


def test_setting_is_checked_and_comes_from_the_config():
    for layer_class, kwargs in ((TokenChoice, {}), (ExpertChoice, {"group_size": 2})):
        message = "expert_dispatch='scatter' is not supported; allowed values: auto, grouped, padded"
        with pytest.raises(ValueError, match=message):
            layer_class(8, n_experts=4, expert_size=16, expert_dispatch="scatter", **kwargs)
        layer = layer_class(8, n_experts=4, expert_size=16, **kwargs)
        layer.expert_dispatch = "scatter"
        with pytest.raises(ValueError, match=message):
            layer(torch.randn(4, 2, 8))
    for ffn, layer_class in (("token_choice", TokenChoice), ("expert_choice", ExpertChoice)):
        config = ModelConfig(ffn=ffn, d_model=64, n_experts=4, expert_size=64, group_size=4, expert_dispatch="grouped")
        layer = layer_class.from_config(config)
        assert layer.expert_dispatch == "grouped" and "expert_dispatch=grouped" in repr(layer)


# ----------------------------------------------------------------------------------------------------
# CUDA


@needs_cuda
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.bfloat16, 3e-2)])
def test_cuda_grouped_matches_padded(dtype, tol):
    device = torch.device("cuda")
    x = torch.randn(16, 8, 64).to(device, dtype)
    for layer in (
        float32_layer(TokenChoice, 64, 8, 128, top_k=2, capacity_factor=1.0),
        float32_layer(TokenChoice, 64, 8, 128, capacity_factor=None),
        float32_layer(ExpertChoice, 64, 8, 128, group_size=8, tokens_per_expert=2),
    ):
        layer = layer.to(device, dtype)
        problem = grouped_mm_problem(x, layer.w1, layer.w2)
        if problem is not None:
            pytest.skip(f"torch._grouped_mm cannot run here: {problem}")
        assert use_grouped_dispatch("auto", x, layer.w1, layer.w2)
        assert_dispatches_agree(layer, x, tol=tol)


# ----------------------------------------------------------------------------------------------------
# torch.compile


@pytest.mark.parametrize("dispatch", ["padded", "grouped"])
def test_traces_under_torch_compile(dispatch):
    """Both dispatches trace (aot_eager: fake tensors, no code generation) and match eager in bfloat16, the one
    dtype torch._grouped_mm's meta kernel takes; a float32 layer under compile refuses an explicit grouped."""
    torch._dynamo.reset()
    for layer in (
        float32_layer(TokenChoice, 16, 4, 16, capacity_factor=1.25, expert_dispatch=dispatch),
        float32_layer(TokenChoice, 16, 4, 16, top_k=2, capacity_factor=None, expert_dispatch=dispatch),
        float32_layer(ExpertChoice, 16, 4, 16, group_size=4, tokens_per_expert=2, expert_dispatch=dispatch),
    ):
        x = torch.randn(8, 3, 16)
        compiled = torch.compile(layer.bfloat16(), backend="aot_eager")
        torch.testing.assert_close(compiled(x.bfloat16()), layer(x.bfloat16()), atol=1e-2, rtol=1e-2)
        if dispatch == "grouped":
            with pytest.raises(Exception, match="under torch.compile torch._grouped_mm takes bfloat16 only"):
                torch.compile(layer.float(), backend="aot_eager")(x)
