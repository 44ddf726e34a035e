"""The Mixture of Tokens layer against the plain-loop float64 reference (docs/method.md §1), and its properties."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import (
    assert_close,
    gradcheck_layer,
    mot_layers_of,
    random_float64_layer,
    same_group_same_position,
    tiny_model_config,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from reference import (
    reference_expert,
    reference_feed_forward,
    reference_group_weights,
    reference_logits,
    reference_mot,
)

from mixture_of_tokens.layers import FeedForward, MixtureOfTokens, mot_sizing
from mixture_of_tokens.model import Transformer, mot_mode


def make_layer(d, e, h, g, *, seed=0, weight_std=1.0, **kwargs) -> MixtureOfTokens:
    """A float64 layer with O(1) logits and outputs (random weights, not the small init)."""
    return random_float64_layer(
        MixtureOfTokens, d, n_experts=e, expert_size=h, group_size=g, seed=seed, router_std=weight_std, **kwargs
    )


def reference_of(layer: MixtureOfTokens, x: torch.Tensor, group_size: int | None = None) -> torch.Tensor:
    return reference_mot(
        x,
        layer.controller.detach(),
        layer.w1.detach(),
        layer.w2.detach(),
        group_size or layer.group_size,
        layer.temperature.detach(),
        layer.routing,
        layer.emit,
    )


# ----------------------------------------------------------------------------------------------------
# Against the reference


@settings(max_examples=60, deadline=None)
@given(
    group_size=st.sampled_from([1, 2, 3, 4]),
    n_groups=st.integers(1, 2),
    seq_len=st.integers(1, 5),
    d=st.integers(1, 8),
    e=st.integers(1, 6),
    h=st.integers(1, 6),
    routing=st.sampled_from(["softmax", "uniform", "discrete"]),
    emit=st.sampled_from(["group", "experts"]),
    temperature=st.sampled_from([0.3, 1.0, 2.5, "scalar", "per_expert"]),
    seed=st.integers(0, 2**16),
)
def test_matches_reference(group_size, n_groups, seq_len, d, e, h, routing, emit, temperature, seed):
    learnable = temperature if isinstance(temperature, str) else "none"
    tau = 1.0 if isinstance(temperature, str) else temperature
    layer = make_layer(
        d,
        e,
        h,
        group_size,
        seed=seed,
        temperature=tau,
        learnable_temperature=learnable,
        routing=routing,
        emit=emit,
    )
    if learnable != "none":
        with torch.no_grad():  # distinct learned temperatures, so a per-expert mix-up shows
            layer.log_temperature.uniform_(-1.0, 1.0)
    x = torch.randn(group_size * n_groups, seq_len, d, dtype=torch.float64)
    out = layer(x)
    assert out.shape == x.shape and out.dtype == torch.float64
    assert_close(out, reference_of(layer, x))


@pytest.mark.parametrize("emit", ["group", "experts"])
@pytest.mark.parametrize("learnable", ["none", "per_expert"])
def test_softmax_routing_is_exact_in_float64(emit, learnable):
    """A float64 layer must compute its softmaxes in float64 (no silent float32 round trip)."""
    layer = make_layer(6, 4, 5, 4, seed=1, weight_std=3.0, emit=emit, learnable_temperature=learnable)
    x = torch.randn(8, 3, 6, dtype=torch.float64)
    assert_close(layer(x), reference_of(layer, x))


def test_reference_feed_forward_matches_dense_layer():
    torch.manual_seed(0)
    ff = FeedForward(5, d_ff=7).double()
    with torch.no_grad():
        ff.up.bias.normal_()
        ff.down.bias.normal_()
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    expected = reference_feed_forward(
        x, ff.up.weight.detach(), ff.up.bias.detach(), ff.down.weight.detach(), ff.down.bias.detach()
    )
    assert_close(ff(x), expected)


# ----------------------------------------------------------------------------------------------------
# Temperature


def test_large_temperature_is_uniform_routing():
    layer = make_layer(6, 5, 4, 4, seed=2, weight_std=2.0, temperature=1e7)
    x = torch.randn(8, 3, 6, dtype=torch.float64)
    hot = layer(x)
    layer.routing = "uniform"
    uniform = layer(x)
    layer.routing = "softmax"
    cold = make_layer(6, 5, 4, 4, seed=2, weight_std=2.0, temperature=1.0)(x)
    assert (cold - uniform).abs().max() > 1e-3  # the logits do matter at tau = 1
    torch.testing.assert_close(hot, uniform, atol=1e-5, rtol=1e-5)


def _gapped_inputs(n_groups, group_size, seq_len, d, gap=0.5):
    """x whose values differ by >= gap between the G tokens of every group, in every coordinate."""
    ranks = torch.rand(n_groups, group_size, seq_len, d).argsort(dim=1).double()
    x = ranks * gap + torch.randn(n_groups, 1, seq_len, d, dtype=torch.float64)
    return x.reshape(n_groups * group_size, seq_len, d)


def test_small_temperature_is_discrete_routing():
    torch.manual_seed(3)
    d, e, g = 6, 4, 4
    layer = make_layer(d, e, 5, g, seed=3, temperature=0.01)
    with torch.no_grad():  # logits z[., e] = x[., e]: gaps of 0.5 between tokens, i.e. 50 tau
        layer.controller.copy_(torch.eye(d, e, dtype=torch.float64))
    x = _gapped_inputs(2, g, 3, d)
    cold = layer(x)
    layer.routing = "discrete"
    discrete = layer(x)
    assert_close(discrete, reference_of(layer, x))
    torch.testing.assert_close(cold, discrete, atol=1e-6, rtol=1e-6)
    layer.routing = "uniform"
    assert (layer(x) - discrete).abs().max() > 1e-2  # discrete routing is not trivially uniform here


# ----------------------------------------------------------------------------------------------------
# Grouping structure


@pytest.mark.parametrize("routing", ["softmax", "discrete"])
def test_permutation_inside_a_group_permutes_outputs(routing):
    layer = make_layer(5, 3, 4, 4, seed=4, routing=routing)
    x = torch.randn(8, 3, 5, dtype=torch.float64)
    perm = torch.tensor([2, 0, 3, 1, 4, 5, 6, 7])  # shuffle group 0 only
    torch.testing.assert_close(layer(x[perm]), layer(x)[perm], atol=1e-12, rtol=1e-12)


def test_permutation_of_groups_permutes_outputs():
    layer = make_layer(5, 3, 4, 2, seed=5)
    x = torch.randn(6, 3, 5, dtype=torch.float64)
    group_perm = [2, 0, 1]
    perm = torch.tensor([2 * g + i for g in group_perm for i in range(2)])
    torch.testing.assert_close(layer(x[perm]), layer(x)[perm], atol=1e-12, rtol=1e-12)


def test_shuffling_across_groups_changes_outputs():
    """Sanity check of the two tests above: the layer does depend on the group's other members."""
    layer = make_layer(5, 3, 4, 2, seed=5)
    x = torch.randn(4, 3, 5, dtype=torch.float64)
    perm = torch.tensor([0, 2, 1, 3])  # swaps members between groups
    assert (layer(x[perm]) - layer(x)[perm]).abs().max() > 1e-6


@pytest.mark.parametrize("routing", ["softmax", "uniform", "discrete"])
@pytest.mark.parametrize("example,position", [(4, 2), (3, 0), (5, 3)])
def test_perturbation_stays_in_its_group_and_position(routing, example, position):
    g, batch, seq_len = 3, 6, 4
    layer = make_layer(5, 4, 6, g, seed=6, routing=routing)
    x = torch.randn(batch, seq_len, 5, dtype=torch.float64)
    x2 = x.clone()
    # push the token up the first expert's logit, so that discrete routing picks it there too
    x2[example, position] += 20.0 * layer.controller.detach()[:, 0] / layer.controller.detach()[:, 0].norm()
    moved = (layer(x2) - layer(x)).abs().amax(dim=-1)  # [B, S]
    allowed = same_group_same_position(batch, seq_len, g, example, position)
    assert moved[~allowed].max() <= 1e-14
    assert moved[example, position] > 1e-6
    if routing == "uniform":  # every member's update is the same mixture: all of them move
        assert (moved[allowed] > 1e-8).all()


def test_group_size_one_is_sum_of_dense_experts():
    d, e, h = 5, 3, 4
    layer = make_layer(d, e, h, 1, seed=7, weight_std=3.0)
    x = torch.randn(3, 4, d, dtype=torch.float64)
    expected = torch.zeros_like(x)
    for k in range(e):
        expected += reference_expert(x, layer.w1[k].detach(), layer.w2[k].detach())
    assert_close(layer(x), expected)
    assert torch.all(layer.stats["weight_mean"] == 1.0)


# ----------------------------------------------------------------------------------------------------
# Gradients


@pytest.mark.parametrize("learnable", ["scalar", "per_expert"])
def test_gradient_reaches_every_parameter(learnable):
    layer = make_layer(6, 4, 5, 4, seed=8, learnable_temperature=learnable)
    x = torch.randn(8, 3, 6, dtype=torch.float64, requires_grad=True)
    (layer(x) * torch.randn(8, 3, 6, dtype=torch.float64)).sum().backward()
    names = {name for name, _ in layer.named_parameters()}
    assert names == {"controller", "w1", "w2", "log_temperature"}
    for name, p in layer.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
        if name == "log_temperature" and learnable == "per_expert":
            assert (p.grad != 0).all()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("emit", ["group", "experts"])
def test_gradcheck_softmax(emit):
    layer = make_layer(3, 2, 3, 2, seed=9, learnable_temperature="per_expert", emit=emit)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck_layer(layer, x)


# ----------------------------------------------------------------------------------------------------
# Group size and routing at evaluation


@pytest.mark.parametrize("routing", ["softmax", "uniform", "discrete"])
@pytest.mark.parametrize("new_group_size", [1, 2, 8])
def test_other_group_size_at_evaluation(routing, new_group_size):
    layer = make_layer(5, 3, 4, 4, seed=10, routing=routing)
    x = torch.randn(8, 2, 5, dtype=torch.float64)
    before = layer(x)
    layer.group_size = new_group_size
    after = layer(x)
    assert_close(after, reference_of(layer, x, new_group_size))
    assert (after - before).abs().max() > 1e-6


def test_mot_mode_changes_and_restores_layers():
    config = tiny_model_config(
        vocab_size=20, max_seq_len=4, d_model=8, d_ff=16, ffn="mot", ffn_blocks="all", group_size=4, expert_size=16
    )
    model = Transformer(config)
    layers = mot_layers_of(model)
    assert len(layers) == 2
    ids = torch.randint(0, 20, (8, 4))
    with torch.no_grad():
        normal = model(ids).logits
        with mot_mode(model, group_size=2, routing="discrete"):
            assert all(m.group_size == 2 and m.routing == "discrete" for m in layers)
            changed = model(ids).logits
        assert all(m.group_size == 4 and m.routing == "softmax" for m in layers)
        assert (changed - normal).abs().max() > 0
        torch.testing.assert_close(model(ids).logits, normal, atol=0, rtol=0)
        with mot_mode(model, group_size=1):
            assert all(m.group_size == 1 and m.routing == "softmax" for m in layers)
        with pytest.raises(RuntimeError), mot_mode(model, routing="uniform"):
            assert all(m.routing == "uniform" for m in layers)
            raise RuntimeError("inside")
        assert all(m.group_size == 4 and m.routing == "softmax" for m in layers)
    with pytest.raises(ValueError, match="routing"), mot_mode(model, routing="argmax"):
        pass
    with pytest.raises(ValueError, match="group_size"), mot_mode(model, group_size=0):
        pass


# ----------------------------------------------------------------------------------------------------
# Invalid settings


def test_batch_not_divisible_by_group_size():
    layer = make_layer(4, 2, 3, 4)
    with pytest.raises(ValueError, match="group_size") as info:
        layer(torch.randn(6, 2, 4, dtype=torch.float64))
    assert "[1, 2, 3, 6]" in str(info.value)


@pytest.mark.parametrize(
    "kwargs,setting",
    [
        ({"d_model": 0}, "d_model"),
        ({"n_experts": 0}, "n_experts"),
        ({"expert_size": -3}, "expert_size"),
        ({"group_size": 0}, "group_size"),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"routing": "topk"}, "routing"),
        ({"emit": "tokens"}, "emit"),
        ({"learnable_temperature": "vector"}, "learnable_temperature"),
    ],
)
def test_invalid_settings_raise(kwargs, setting):
    args = {"d_model": 4, "n_experts": 2, "expert_size": 3, "group_size": 2, **kwargs}
    with pytest.raises(ValueError, match=setting):
        MixtureOfTokens(args.pop("d_model"), **args)


# ----------------------------------------------------------------------------------------------------
# Routing statistics


def _normalised_entropy_of_groups(weights_BSE: torch.Tensor, group_size: int) -> torch.Tensor:
    """H(w)/log G along the group axis for every (group, position, expert), by explicit loops."""
    batch, seq_len, n_experts = weights_BSE.shape
    values = []
    for g in range(batch // group_size):
        for s in range(seq_len):
            for e in range(n_experts):
                h = 0.0
                for b in range(g * group_size, (g + 1) * group_size):
                    w = float(weights_BSE[b, s, e])
                    if w > 0:
                        h -= w * math.log(w)
                values.append(h / math.log(group_size))
    return torch.tensor(values, dtype=torch.float64)


def test_routing_stats_softmax():
    layer = make_layer(6, 3, 4, 4, seed=11, weight_std=2.0, temperature=0.7)
    x = torch.randn(8, 3, 6, dtype=torch.float64)
    layer(x)
    stats = layer.stats
    for key in ("entropy_mean", "entropy_std", "weight_mean", "weight_std", "logit_mean", "logit_std"):
        assert isinstance(stats[key], torch.Tensor) and not stats[key].requires_grad, key
    weights = reference_group_weights(x, layer.controller.detach(), 4, 0.7)
    entropy = _normalised_entropy_of_groups(weights, 4)
    assert entropy.std() > 1e-3  # a non-trivial check
    assert float(stats["entropy_mean"]) == pytest.approx(float(entropy.mean()), abs=1e-5)
    assert float(stats["entropy_std"]) == pytest.approx(float(entropy.std(correction=0)), abs=1e-5)
    assert float(stats["weight_mean"]) == pytest.approx(0.25, abs=1e-6)
    assert float(stats["weight_std"]) == pytest.approx(float(weights.std(correction=0)), abs=1e-5)
    logits = reference_logits(x, layer.controller.detach())
    assert float(stats["logit_mean"]) == pytest.approx(float(logits.mean()), abs=1e-5)
    assert float(stats["logit_std"]) == pytest.approx(float(logits.std(correction=0)), abs=1e-5)


def test_routing_stats_uniform_and_discrete():
    layer = make_layer(6, 3, 4, 4, seed=12, routing="uniform")
    x = torch.randn(8, 3, 6, dtype=torch.float64)
    layer(x)
    assert float(layer.stats["entropy_mean"]) == pytest.approx(1.0, abs=1e-6)
    assert float(layer.stats["entropy_std"]) == pytest.approx(0.0, abs=1e-6)
    assert float(layer.stats["weight_std"]) == pytest.approx(0.0, abs=1e-7)
    layer.routing = "discrete"
    layer(x)
    assert float(layer.stats["entropy_mean"]) == pytest.approx(0.0, abs=1e-6)


def test_learnable_temperature_stat():
    layer = make_layer(6, 3, 4, 2, seed=13, temperature=2.0, learnable_temperature="per_expert")
    layer(torch.randn(4, 2, 6, dtype=torch.float64))
    assert float(layer.stats["temperature_mean"]) == pytest.approx(2.0, rel=1e-6)


# ----------------------------------------------------------------------------------------------------
# Sizing, init, FLOPs


@pytest.mark.parametrize(
    "name,d_ff,expected",
    [
        ("/32E/8", 2048, (32, 256, 256)),
        ("/32E", 2048, (32, 32, 2048)),
        ("MoT-Medium/32E/16", 2048, (32, 512, 128)),
        ("/64E/16", 3072, (64, 1024, 192)),
        ("/8E", 512, (8, 8, 512)),
    ],
)
def test_mot_sizing(name, d_ff, expected):
    sizing = mot_sizing(name, d_ff)
    assert (sizing.group_size, sizing.n_experts, sizing.expert_size) == expected
    assert sizing.n_experts * sizing.expert_size == sizing.group_size * d_ff


INVALID_SIZE_NAMES = ["32E", "/32", "/E/8", "/0E", "/32E/0", "/32E/3", "/32E/8/2", "Dense/32E", ""]


@pytest.mark.parametrize("name", INVALID_SIZE_NAMES)
def test_mot_sizing_invalid(name):
    with pytest.raises(ValueError):
        mot_sizing(name, 2048)


def _truncated_std_ratio(cut: float) -> float:
    """std of N(0, 1) truncated to [-cut, cut]."""
    pdf = math.exp(-cut * cut / 2) / math.sqrt(2 * math.pi)
    mass = math.erf(cut / math.sqrt(2))
    return math.sqrt(1 - 2 * cut * pdf / mass)


def test_init_scaled_truncated_normal():
    torch.manual_seed(14)
    d, e, h = 256, 16, 64
    layer = MixtureOfTokens(d, n_experts=e, expert_size=h, group_size=4)
    ratio = _truncated_std_ratio(2.0)  # about 0.88: a cut at +-2 underlying std, rescaled to the spec's std
    for name, fan_in, tol in (("controller", d, 0.05), ("w1", d, 0.02), ("w2", h, 0.02)):
        sigma = math.sqrt(0.1 / fan_in)
        values = getattr(layer, name).detach().double()
        assert abs(float(values.mean())) < 0.05 * sigma, name
        assert float(values.std()) == pytest.approx(sigma, rel=tol), name
        assert float(values.abs().max()) <= 2 * sigma / ratio * (1 + 1e-6), name
        assert float(values.abs().max()) > 1.9 * sigma / ratio, name  # the tails are really there


@pytest.mark.parametrize(
    "d,d_ff,name", [(16, 64, "/4E"), (16, 64, "/4E/4"), (512, 2048, "/32E/8"), (768, 3072, "/64E/16")]
)
def test_flops_per_token_matches_dense_plus_routing(d, d_ff, name):
    sizing = mot_sizing(name, d_ff)
    with torch.device("meta"):
        mot = MixtureOfTokens(
            d, n_experts=sizing.n_experts, expert_size=sizing.expert_size, group_size=sizing.group_size
        )
        dense = FeedForward(d, d_ff=d_ff)
    assert mot.flops_per_token() == dense.flops_per_token() + 6 * d * sizing.n_experts
    assert dense.flops_per_token() == 4 * d * d_ff


def test_the_method_in_one_function_is_the_reference_and_the_layer() -> None:
    """`mixture_of_tokens` (Algorithm 1 on grouped tokens) equals the plain-loop reference and the layer's forward."""
    from mixture_of_tokens.layers.grouping import from_position_groups, position_groups
    from mixture_of_tokens.layers.mot import mixture_of_tokens

    layer = MixtureOfTokens(6, n_experts=4, expert_size=5, group_size=4, temperature=0.7).double()
    x = torch.randn(8, 3, 6, dtype=torch.float64)
    dx_RGD = mixture_of_tokens(position_groups(x, 4), layer.controller, layer.w1, layer.w2, tau=0.7)
    dx = from_position_groups(dx_RGD, 3)
    expected = reference_mot(x, layer.controller.detach(), layer.w1.detach(), layer.w2.detach(), 4, 0.7)
    torch.testing.assert_close(dx, expected, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(dx, layer(x), atol=0, rtol=0)
