"""Expert Choice against the plain-loop float64 reference (docs/method.md §2), edge cases, structure and gradients.
The routing-rule tests marked with `dispatch` run under both expert dispatches (grouped in float32)."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close, gradcheck_layer, random_float64_layer, same_group_same_position
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_expert
from reference_sparse import DISPATCHES, reference_expert_choice, with_dispatch

from mixture_of_tokens.config import ModelConfig
from mixture_of_tokens.counting import count_model
from mixture_of_tokens.layers import ExpertChoice
from mixture_of_tokens.model import Transformer
from mixture_of_tokens.presets import get_preset


def make_layer(d, e, h, g, *, seed=0, router_std=2.0, dispatch="padded", **kwargs) -> ExpertChoice:
    """A float64 layer with spread-out router probabilities and a non-trivial output LayerNorm; float32 for
    dispatch "grouped" (`with_dispatch`)."""
    layer = random_float64_layer(
        ExpertChoice, d, n_experts=e, expert_size=h, group_size=g, seed=seed, router_std=router_std, **kwargs
    )
    with torch.no_grad():
        layer.norm.weight.uniform_(0.5, 1.5)
        layer.norm.bias.normal_()
    return with_dispatch(layer, dispatch)


def reference_of(layer: ExpertChoice, x: torch.Tensor):
    return reference_expert_choice(
        x,
        layer.router.detach(),
        layer.w1.detach(),
        layer.w2.detach(),
        layer.group_size,
        tokens_per_expert=layer.tokens_per_expert,
        ln_weight=layer.norm.weight.detach(),
        ln_bias=layer.norm.bias.detach(),
        eps=layer.norm.eps,
    )


@settings(max_examples=60, deadline=None)
@given(
    group_size=st.sampled_from([1, 2, 3, 4]),
    n_groups=st.integers(1, 2),
    seq_len=st.integers(1, 4),
    d=st.integers(2, 6),
    e=st.integers(1, 5),
    h=st.integers(1, 5),
    k=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_matches_reference(group_size, n_groups, seq_len, d, e, h, k, seed):
    k = min(k, group_size)
    layer = make_layer(d, e, h, group_size, seed=seed, tokens_per_expert=k)
    x = torch.randn(group_size * n_groups, seq_len, d, dtype=torch.float64)
    out = layer(x)
    expected, picked = reference_of(layer, x)
    assert out.shape == x.shape and out.dtype == torch.float64
    assert_close(out, expected)
    n_tokens = x.shape[0] * seq_len
    picked_tokens = {(b, s) for b, s, _ in picked}
    assert layer.stats["unrouted_ratio"].item() == pytest.approx(1 - len(picked_tokens) / n_tokens, abs=1e-6)
    assert layer.aux_losses == {}


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_unpicked_tokens_get_zero_update(dispatch):
    """One token per expert, 2 experts, groups of 8: at most 2 of every 8 tokens are updated."""
    layer = make_layer(8, 2, 4, 8, seed=1, dispatch=dispatch)
    x = torch.randn(16, 3, 8, dtype=torch.float64).to(layer.router.dtype)
    out = layer(x)
    updated_GS = (out.abs().amax(dim=-1) > 0).view(2, 8, 3).sum(dim=1)
    assert torch.all((updated_GS >= 1) & (updated_GS <= 2))
    assert layer.stats["unrouted_ratio"].item() == pytest.approx(1 - updated_GS.sum().item() / 48)
    torch.testing.assert_close(layer.expert_load, torch.full((2,), 0.5))  # balanced by construction


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_each_expert_takes_its_most_probable_token(dispatch):
    layer = make_layer(4, 3, 8, 4, seed=2, dispatch=dispatch)
    x = torch.randn(4, 1, 4, dtype=torch.float64).to(layer.router.dtype)
    out = layer(x)
    probs = torch.softmax(x[:, 0] @ layer.router.detach(), dim=-1)  # [G, E]
    expected_picked = set(probs.argmax(dim=0).tolist())
    assert {b for b in range(4) if out[b, 0].abs().max() > 0} == expected_picked


def test_single_expert_picking_every_token_is_a_normalised_dense_feed_forward():
    d, h, g = 5, 7, 4
    layer = make_layer(d, 1, h, g, seed=3, tokens_per_expert=g)
    x = torch.randn(8, 3, d, dtype=torch.float64)
    dense = reference_expert(x, layer.w1[0].detach(), layer.w2[0].detach())
    assert_close(layer(x), layer.norm(dense).detach())


@pytest.mark.parametrize("dispatch", DISPATCHES)
@pytest.mark.parametrize("example,position", [(5, 2), (0, 0), (7, 3)])
def test_perturbation_stays_in_its_group_and_position(example, position, dispatch):
    g, batch, seq_len = 4, 8, 4
    layer = make_layer(8, 4, 8, g, seed=4, tokens_per_expert=2, dispatch=dispatch)
    x = torch.randn(batch, seq_len, 8, dtype=torch.float64).to(layer.router.dtype)
    x2 = x.clone()
    x2[example, position] += 5.0 * layer.router.detach()[:, 0]  # push it up expert 0's ranking
    moved = (layer(x2) - layer(x)).abs().amax(dim=-1)
    allowed = same_group_same_position(batch, seq_len, g, example, position)
    assert moved[~allowed].max() == 0
    assert moved[example, position] > 1e-6


def test_permutation_inside_a_group_permutes_outputs():
    layer = make_layer(5, 3, 4, 4, seed=5, tokens_per_expert=2)
    x = torch.randn(8, 3, 5, dtype=torch.float64)
    perm = torch.tensor([2, 0, 3, 1, 4, 5, 6, 7])
    torch.testing.assert_close(layer(x[perm]), layer(x)[perm], atol=1e-12, rtol=1e-12)


def test_gradcheck():
    layer = make_layer(3, 3, 4, 3, seed=6, tokens_per_expert=2)
    assert {name for name, _ in layer.named_parameters()} == {"router", "w1", "w2", "norm.weight", "norm.bias"}
    x = torch.randn(6, 2, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck_layer(layer, x)


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_router_gets_gradient_through_the_gate(dispatch):
    layer = make_layer(4, 3, 8, 4, seed=7, dispatch=dispatch)
    x = torch.randn(8, 2, 4, dtype=torch.float64).to(layer.router.dtype)
    (layer(x) * torch.randn(8, 2, 4, dtype=torch.float64).to(x.dtype)).sum().backward()
    assert layer.router.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"tokens_per_expert": 5}, "tokens_per_expert must be an integer in 1..group_size=4"),
        ({"tokens_per_expert": 0}, "tokens_per_expert"),
    ],
)
def test_invalid_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExpertChoice(8, n_experts=4, expert_size=16, group_size=4, **kwargs)


def test_batch_must_be_a_multiple_of_the_group_size():
    with pytest.raises(ValueError, match="group_size=4 must divide the batch size 6"):
        ExpertChoice(8, n_experts=4, expert_size=16, group_size=4)(torch.randn(6, 2, 8))


def test_config_validation():
    with pytest.raises(ValueError, match="ec_tokens_per_expert must be an integer in 1..group_size=8"):
        ModelConfig(ffn="expert_choice", ec_tokens_per_expert=9)


def test_presets_match_dense_active_flops():
    """tiny-token-choice and tiny-expert-choice pay one dense FF per token (plus the router), like tiny-mot."""
    counts = {}
    for name in ("tiny-dense", "tiny-mot", "tiny-token-choice", "tiny-expert-choice"):
        config = get_preset(name).model
        with torch.device("meta"):
            counts[name] = count_model(Transformer(config))
    d, e, n_sparse_blocks = 128, 8, 2
    router = d * e * n_sparse_blocks
    dense = counts["tiny-dense"].active_params_per_token
    assert counts["tiny-token-choice"].active_params_per_token == dense + router
    assert counts["tiny-expert-choice"].active_params_per_token == dense + router
    for name in ("tiny-token-choice", "tiny-expert-choice"):
        config = get_preset(name).model
        assert config.block_ffn_kinds() == ["dense", "dense", config.ffn, config.ffn]
        assert (config.n_experts, config.expert_size, config.group_size) == (8, 512, 8)
    assert get_preset("tiny-token-choice").model.top_k == 1
    assert get_preset("tiny-expert-choice").model.ec_tokens_per_expert == 1


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_bf16_autocast_agrees_with_float32(dispatch):
    """Under CPU bf16 autocast the experts run in bfloat16 and the scatter-add sums in their dtype (it used to mix
    a float32 buffer with bfloat16 outputs and fail); the result stays within bfloat16 rounding of float32."""
    torch.manual_seed(0)
    layer = ExpertChoice(16, n_experts=4, expert_size=16, group_size=4, tokens_per_expert=2, expert_dispatch=dispatch)
    x = torch.randn(8, 3, 16)
    expected = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.isfinite().all()
    torch.testing.assert_close(out.float(), expected, atol=5e-2, rtol=5e-2)
