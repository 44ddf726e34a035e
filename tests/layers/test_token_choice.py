"""Token Choice against the plain-loop float64 reference (docs/method.md §2), hand-computed cases, edge cases,
gradients, the routing statistics and the collapse monitor. The routing-rule tests marked with `dispatch` run under
both expert dispatches (grouped in float32); tests/layers/test_grouped_dispatch.py compares the two directly."""

from __future__ import annotations

import math

import pytest
import torch
from corpus import write_corpus
from helpers import (
    assert_close,
    build_model,
    gradcheck_layer,
    random_float64_layer,
    tiny_model_config,
    tiny_train_config,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import reference_expert
from reference_sparse import DISPATCHES, reference_token_choice, tolerance, with_dispatch

from mixture_of_tokens.config import ModelConfig
from mixture_of_tokens.layers import CollapseMonitor, TokenChoice
from mixture_of_tokens.layers.capacity import expert_capacity


def make_layer(d, e, h, *, seed=0, router_std=2.0, dispatch="padded", **kwargs) -> TokenChoice:
    """A float64 layer with spread-out router probabilities (random weights, not the small init); float32 for
    dispatch "grouped" (`with_dispatch`)."""
    layer = random_float64_layer(TokenChoice, d, n_experts=e, expert_size=h, seed=seed, router_std=router_std, **kwargs)
    return with_dispatch(layer, dispatch)


def reference_of(layer: TokenChoice, x: torch.Tensor):
    return reference_token_choice(
        x,
        layer.router.detach(),
        layer.w1.detach(),
        layer.w2.detach(),
        top_k=layer.top_k,
        capacity_factor=layer.capacity_factor,
        scope=layer.scope,
        group_size=layer.group_size,
        load_balance_weight=layer.load_balance_weight,
        z_loss_weight=layer.z_loss_weight,
        drop_rule=layer.drop_rule,
    )


def check_against_reference(layer: TokenChoice, x: torch.Tensor) -> None:
    out = layer(x)
    expected, aux, kept = reference_of(layer, x)
    tol = tolerance(x.dtype)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert_close(out, expected.to(x.dtype), tol)
    assert set(layer.aux_losses) == set(aux)
    for name, value in aux.items():
        assert layer.aux_losses[name].item() == pytest.approx(value, rel=tol / 10, abs=tol / 1e4)
    n_assigned = x.shape[0] * x.shape[1] * layer.top_k
    assert layer.stats["dropped_ratio"].item() == pytest.approx(1 - len(kept) / n_assigned, abs=1e-6)
    updated = {(b, s) for b, s, _ in kept}
    assert layer.stats["unrouted_ratio"].item() == pytest.approx(1 - len(updated) / (n_assigned // layer.top_k))


# ----------------------------------------------------------------------------------------------------
# Against the reference


@settings(max_examples=60, deadline=None)
@given(
    scope=st.sampled_from(["batch", "group"]),
    group_size=st.sampled_from([1, 2, 4]),
    n_groups=st.integers(1, 2),
    seq_len=st.integers(1, 5),
    d=st.integers(1, 6),
    e=st.integers(1, 5),
    h=st.integers(1, 5),
    top_k=st.integers(1, 3),
    capacity_factor=st.sampled_from([None, 0.5, 1.0, 1.25, 2.0, 100.0]),
    z_loss_weight=st.sampled_from([0.0, 1e-3]),
    load_balance_weight=st.sampled_from([0.0, 0.01]),
    seed=st.integers(0, 2**16),
)
def test_matches_reference(
    scope, group_size, n_groups, seq_len, d, e, h, top_k, capacity_factor, z_loss_weight, load_balance_weight, seed
):
    top_k = min(top_k, e)
    layer = make_layer(
        d,
        e,
        h,
        seed=seed,
        top_k=top_k,
        capacity_factor=capacity_factor,
        scope=scope,
        group_size=group_size,
        z_loss_weight=z_loss_weight,
        load_balance_weight=load_balance_weight,
    )
    batch = group_size * n_groups
    x = torch.randn(batch, seq_len, d, dtype=torch.float64)
    tokens_per_group = group_size if scope == "group" else batch * seq_len
    if capacity_factor and math.floor(capacity_factor * tokens_per_group * top_k / e) < 1:
        with pytest.raises(ValueError, match="capacity_factor"):
            layer(x)
        return
    check_against_reference(layer, x)


@pytest.mark.parametrize("dispatch", DISPATCHES)
@pytest.mark.parametrize("scope", ["batch", "group"])
@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_binding_capacity_with_several_choices(scope, top_k, dispatch):
    """Larger case where drops are frequent, k > 1 and both scopes differ."""
    layer = make_layer(
        8, 4, 8, seed=top_k + 2, top_k=top_k, capacity_factor=1.0, scope=scope, group_size=4, dispatch=dispatch
    )
    x = torch.randn(8, 6, 8, dtype=torch.float64).to(layer.router.dtype)
    check_against_reference(layer, x)
    assert layer.stats["dropped_ratio"] > 0


@pytest.mark.parametrize("dispatch", DISPATCHES)
@pytest.mark.parametrize("scope", ["batch", "group"])
@pytest.mark.parametrize("top_k", [1, 2])
def test_authors_drop_rule_keeps_the_first_c_minus_1_assignments_in_token_order(scope, top_k, dispatch):
    """drop_rule "authors": first come, first served in (example, position) order, C - 1 kept per expert."""
    kwargs = dict(top_k=top_k, capacity_factor=1.0, scope=scope, group_size=8, dispatch=dispatch)
    authors = make_layer(8, 4, 8, seed=top_k + 7, drop_rule="authors", **kwargs)
    x = torch.randn(8, 6, 8, dtype=torch.float64).to(authors.router.dtype)
    check_against_reference(authors, x)
    probability = make_layer(8, 4, 8, seed=top_k + 7, **kwargs)
    probability(x)
    assert authors.stats["dropped_ratio"] > 0 and probability.stats["dropped_ratio"] > 0
    assert authors.stats["dropped_ratio"] >= probability.stats["dropped_ratio"]  # one slot fewer per expert
    assert (authors(x) - probability(x)).abs().max() > 1e-3


def test_authors_drop_rule_by_hand():
    """One expert, four tokens, C = floor(0.75 * 4) = 3: probability keeps tokens 0, 1, 2 (equal p: earlier first),
    the authors' rule keeps the first C - 1 = 2."""
    x = torch.randn(1, 4, 5, dtype=torch.float64)
    for rule, kept in (("probability", 3), ("authors", 2)):
        layer = make_layer(5, 1, 4, seed=0, capacity_factor=0.75, drop_rule=rule)
        out = layer(x)
        assert [bool(out[0, t].abs().max() > 0) for t in range(4)] == [t < kept for t in range(4)], rule
    with pytest.raises(ValueError, match=r"capacity_factor=0.25 gives every expert 0 slots .*drop_rule='authors'"):
        make_layer(5, 1, 4, capacity_factor=0.25, drop_rule="authors")(x)  # C = 1: one kept under probability
    with pytest.raises(ValueError, match="drop_rule='first' is not supported; allowed values: probability, authors"):
        TokenChoice(8, n_experts=4, expert_size=16, drop_rule="first")


def test_scopes_differ_when_capacity_binds():
    batch_layer = make_layer(6, 4, 5, seed=3, capacity_factor=1.0, scope="batch")
    group_layer = make_layer(6, 4, 5, seed=3, capacity_factor=1.0, scope="group", group_size=4)
    x = torch.randn(8, 6, 6, dtype=torch.float64)
    assert (batch_layer(x) - group_layer(x)).abs().max() > 1e-3


# ----------------------------------------------------------------------------------------------------
# Hand-computed case


def test_hand_computed_drops_and_aux_losses():
    """E = 2, router = identity, logits z chosen by hand; capacity 2 per expert over 4 tokens."""
    z = [[2.0, 0.0], [1.0, 0.0], [0.5, 0.0], [0.0, 3.0]]
    layer = TokenChoice(
        2, n_experts=2, expert_size=3, capacity_factor=1.0, load_balance_weight=0.01, z_loss_weight=0.1
    ).double()
    with torch.no_grad():
        layer.router.copy_(torch.eye(2, dtype=torch.float64))
        layer.w1.normal_()
        layer.w2.normal_()
    x = torch.tensor(z, dtype=torch.float64).view(1, 4, 2)
    out = layer(x)

    def sigmoid(v):
        return 1 / (1 + math.exp(-v))

    p0 = [sigmoid(a - b) for a, b in z]  # probability of expert 0
    # C = floor(1.0 * 4 * 1 / 2) = 2: expert 0 is chosen by tokens 0, 1, 2 and keeps the two most probable (0, 1)
    for t, (e, p) in {0: (0, p0[0]), 1: (0, p0[1]), 3: (1, 1 - p0[3])}.items():
        expected = p * (torch.relu(x[0, t] @ layer.w1[e]) @ layer.w2[e])
        assert_close(out[0, t], expected.detach())
    assert torch.all(out[0, 2] == 0)  # token 2 dropped: zero update
    # load balance: alpha * E * sum_e mean_t p[t,e] * count_e / T, counts before drops = [3, 1]
    mean_p0 = sum(p0) / 4
    expected_lb = 0.01 * 2 * (mean_p0 * 3 / 4 + (1 - mean_p0) * 1 / 4)
    assert layer.aux_losses["load_balance"].item() == pytest.approx(expected_lb, rel=1e-12)
    expected_z = 0.1 * sum(math.log(math.exp(a) + math.exp(b)) ** 2 for a, b in z) / 4
    assert layer.aux_losses["router_z"].item() == pytest.approx(expected_z, rel=1e-12)
    assert layer.stats["dropped_ratio"].item() == pytest.approx(0.25)
    torch.testing.assert_close(layer.expert_load, torch.tensor([0.75, 0.25]))


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_priority_ties_go_to_the_earlier_token(dispatch):
    """Identical tokens have equal probabilities: with capacity 1 the first of them in the group wins."""
    layer = make_layer(4, 2, 4, seed=1, capacity_factor=0.5, dispatch=dispatch)  # 4 tokens, E = 2: C = 1
    token = torch.randn(4, dtype=torch.float64).to(layer.router.dtype)
    x = token.expand(1, 4, 4).clone()
    out = layer(x)
    assert out[0, 0].abs().max() > 0
    assert torch.all(out[0, 1:] == 0)
    check_against_reference(layer, x)


# ----------------------------------------------------------------------------------------------------
# Edge cases


def test_capacity_formula():
    assert expert_capacity(1.25, 64, 1, 8) == 10
    assert expert_capacity(1.25, 64, 2, 8) == 20
    assert expert_capacity(100.0, 64, 2, 8) == 64  # never more than T
    assert expert_capacity(None, 64, 1, 8) is None and expert_capacity(0.0, 64, 1, 8) is None
    with pytest.raises(ValueError, match="capacity_factor=0.1 gives every expert 0 slots"):
        expert_capacity(0.1, 8, 1, 8)
    # ModelConfig's checks name its settings, the drop rule too
    with pytest.raises(ValueError, match=r"^tc_capacity_factor=0.25 .*\(tc_top_k=1, .*tc_drop_rule='authors'"):
        expert_capacity(0.25, 5, 1, 4, "authors", prefix="tc_")


def test_capacity_larger_than_tokens_equals_dropless():
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    big = make_layer(5, 3, 4, seed=2, top_k=2, capacity_factor=100.0)
    dropless = make_layer(5, 3, 4, seed=2, top_k=2, capacity_factor=None)
    assert_close(big(x), dropless(x))
    assert big.stats["dropped_ratio"] == 0 and dropless.stats["dropped_ratio"] == 0


@pytest.mark.parametrize("capacity_factor", [None, 1.0])
def test_single_expert_is_a_dense_feed_forward(capacity_factor):
    d, h = 5, 7
    layer = make_layer(d, 1, h, seed=4, capacity_factor=capacity_factor)
    x = torch.randn(3, 4, d, dtype=torch.float64)
    assert_close(layer(x), reference_expert(x, layer.w1[0].detach(), layer.w2[0].detach()))
    assert layer.aux_losses["load_balance"].item() == pytest.approx(0.01)  # E * p * f = 1 * 1 * 1
    assert layer.stats["router_entropy"] == 1.0


@pytest.mark.parametrize("scope", ["batch", "group"])
def test_all_tokens_to_one_expert(scope):
    """Every token prefers expert 0: exactly C per routing group are kept, the most probable ones. (float64 only:
    in float32 these probabilities all round to 1; tests/layers/test_grouped_dispatch.py covers empty experts.)"""
    d, e = 4, 4
    layer = make_layer(d, e, 6, seed=5, capacity_factor=1.25, scope=scope, group_size=4)
    with torch.no_grad():
        layer.router[0].zero_()
        layer.router[0, 0] = 10.0
    x = torch.randn(8, 5, d, dtype=torch.float64)
    x[..., 0] = 2.0 + torch.rand(8, 5, dtype=torch.float64)
    out = layer(x)
    check_against_reference(layer, x)
    updated = out.abs().amax(dim=-1) > 0  # [B, S]
    p0 = torch.softmax(x @ layer.router.detach(), dim=-1)[..., 0]
    if scope == "batch":
        capacity = math.floor(1.25 * 40 / e)
        assert updated.sum() == capacity
        assert p0[updated].min() > p0[~updated].max()
    else:
        capacity = math.floor(1.25 * 4 / e)  # 1 per group of 4 tokens at one position
        updated_GS = updated.view(2, 4, 5).sum(dim=1)
        assert torch.all(updated_GS == capacity)
    assert layer.expert_load[0] == 1.0
    assert layer.stats["max_over_mean_load"].item() == pytest.approx(e)


def test_aux_losses_only_when_weighted():
    layer = make_layer(4, 3, 5, load_balance_weight=0.0, z_loss_weight=0.0)
    layer(torch.randn(2, 3, 4, dtype=torch.float64))
    assert layer.aux_losses == {}
    layer.z_loss_weight = 0.5
    layer(torch.randn(2, 3, 4, dtype=torch.float64))
    assert set(layer.aux_losses) == {"router_z"}


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_low_precision_input_keeps_router_in_float32(dispatch):
    layer = TokenChoice(8, n_experts=4, expert_size=16, expert_dispatch=dispatch)
    x = torch.randn(2, 3, 8, dtype=torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    assert layer.aux_losses["load_balance"].dtype == torch.float32


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"top_k": 5}, "top_k must be an integer in 1..n_experts=4"),
        ({"top_k": 0}, "top_k"),
        ({"scope": "global"}, "scope='global' is not supported; allowed values: batch, group"),
        ({"scope": "group"}, "scope='group' needs group_size"),
        ({"capacity_factor": -1.0}, "capacity_factor must be >= 0"),
        ({"load_balance_weight": -0.1}, "load_balance_weight"),
    ],
)
def test_invalid_settings(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TokenChoice(8, n_experts=4, expert_size=16, **kwargs)


def test_group_scope_needs_divisible_batch():
    layer = TokenChoice(8, n_experts=4, expert_size=16, scope="group", group_size=4)
    with pytest.raises(ValueError, match="group_size=4 must divide the batch size 6"):
        layer(torch.randn(6, 2, 8))


# ----------------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("scope", ["batch", "group"])
def test_gradcheck(scope):
    layer = make_layer(3, 3, 4, seed=6, top_k=2, capacity_factor=1.0, scope=scope, group_size=2, z_loss_weight=0.1)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    layer(x)
    assert layer.stats["dropped_ratio"] > 0  # the check covers dropped tokens too
    assert gradcheck_layer(layer, x, aux_losses=("load_balance", "router_z"))


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_router_learns_through_gate_and_load_balance(dispatch):
    layer = make_layer(4, 3, 8, seed=7, load_balance_weight=0.0, dispatch=dispatch)
    x = torch.randn(2, 3, 4, dtype=torch.float64).to(layer.router.dtype)
    layer(x).sum().backward()
    assert layer.router.grad.abs().sum() > 0  # through p * expert output
    layer.zero_grad()
    layer.load_balance_weight = 0.01
    layer(x)
    layer.aux_losses["load_balance"].backward()
    assert layer.router.grad.abs().sum() > 0  # through mean_t p


# ----------------------------------------------------------------------------------------------------
# In the model


def test_model_adds_aux_losses_to_the_loss():
    config = tiny_model_config(
        vocab_size=50, max_seq_len=8, d_model=16, d_ff=32, ffn="token_choice", ffn_blocks="all", expert_size=32,
        z_loss_weight=1e-3,
    )  # fmt: skip
    model = build_model(config)
    ids = torch.randint(50, (4, 8))
    output = model(ids, ids)
    assert set(output.aux_losses) == {f"block{i}.{k}" for i in range(2) for k in ("load_balance", "router_z")}
    torch.testing.assert_close(output.loss, output.lm_loss + sum(output.aux_losses.values()))
    stats = model.routing_stats()
    assert {"block0.dropped_ratio", "block1.router_entropy"} <= set(stats)


def test_config_validation():
    with pytest.raises(ValueError, match="tc_scope='nope' is not supported; allowed values: batch, group"):
        ModelConfig(ffn="token_choice", tc_scope="nope")
    with pytest.raises(ValueError, match="top_k must be an integer in 1..n_experts=8"):
        ModelConfig(ffn="token_choice", top_k=9)
    with pytest.raises(ValueError, match="capacity_factor must be >= 0"):
        ModelConfig(ffn="token_choice", capacity_factor=-1.0)


# ----------------------------------------------------------------------------------------------------
# Collapse monitor


class _FakeLayer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.expert_load = torch.tensor([0.25, 0.25, 0.25, 0.25])


def test_collapse_monitor_warns_after_patience():
    model = torch.nn.Sequential(_FakeLayer(), _FakeLayer())
    monitor = CollapseMonitor(share=0.5, patience=3)
    model[1].expert_load = torch.tensor([0.7, 0.1, 0.1, 0.1])
    warnings = [monitor.update(model, step) for step in range(7)]
    assert [len(w) for w in warnings] == [0, 0, 1, 0, 0, 1, 0]
    assert "1" in warnings[2][0] and "expert 0" in warnings[2][0] and "70%" in warnings[2][0]
    model[1].expert_load = torch.tensor([0.4, 0.2, 0.2, 0.2])  # recovers: the streak restarts
    assert monitor.update(model, 7) == []
    model[1].expert_load = torch.tensor([0.1, 0.1, 0.1, 0.7])
    assert [len(monitor.update(model, step)) for step in range(8, 11)] == [0, 0, 1]


def test_collapse_monitor_reads_real_layers():
    layer = make_layer(4, 4, 5, seed=8)
    with torch.no_grad():
        layer.router[0].zero_()
        layer.router[0, 2] = 10.0
    x = torch.randn(2, 6, 4, dtype=torch.float64)
    x[..., 0] = 3.0
    monitor = CollapseMonitor(share=0.9, patience=2)
    model = torch.nn.Sequential(layer)
    layer(x)
    assert monitor.update(model, 0) == []
    warnings = monitor.update(model, 1)
    assert len(warnings) == 1 and "expert 2" in warnings[0]
    with pytest.raises(ValueError, match="share"):
        CollapseMonitor(share=1.5)


# ----------------------------------------------------------------------------------------------------
# Training smoke test of the two new presets' layout (scaled down)


@pytest.mark.parametrize("ffn", ["token_choice", "expert_choice"])
def test_training_smoke(ffn, tmp_path, cache_dir):
    from mixture_of_tokens.training.loop import train
    from mixture_of_tokens.training.metrics import read_metrics

    corpus = write_corpus(tmp_path / "corpus", n_documents=10)
    train_config = tiny_train_config(
        f"text:{corpus}", tmp_path / "run", steps=40, warmup_steps=4, eval_every=20, log_every=5, threads=1
    )
    result = train(tiny_model_config(ffn=ffn), train_config, run_name=ffn, progress=False)
    losses = [result.eval_losses[step] for step in sorted(result.eval_losses)]
    assert losses[-1] < losses[0]
    logged = set().union(*(row.keys() for row in read_metrics(tmp_path / "run" / "metrics.jsonl")))
    assert "routing.block1.router_entropy" in logged
    assert ("aux.block1.load_balance" in logged) == (ffn == "token_choice")


def test_inference_routing_restores_each_layer_as_it_was():
    """A model loaded for inference stays dropless after a `with inference_routing(...)` block (e.g. generation
    inside the lm-eval adapter); a model in training gets its capacity back."""
    from torch import nn

    from mixture_of_tokens.layers import inference_routing, set_inference_routing

    trained, loaded = (TokenChoice(8, n_experts=4, expert_size=16, capacity_factor=1.25) for _ in range(2))
    set_inference_routing(nn.Sequential(loaded))
    for layer, capacity_after in ((trained, 1.25), (loaded, None)):
        with inference_routing(nn.Sequential(layer)):
            assert layer.capacity_factor is None
        assert layer.capacity_factor == capacity_after
