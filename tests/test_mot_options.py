"""MoT options beyond the method's defaults, each against a float64 plain-loop reference (tests/reference.py):
exact fixed temperature, separate merge and emit controllers, random grouping, temperature freeze."""

from __future__ import annotations

import math

import pytest
import torch
from reference import reference_mot

from mixture_of_tokens.layers import MixtureOfTokens

TOL = 1e-12


def make_layer(d=6, e=4, h=5, g=4, *, seed=0, weight_std=3.0, **kwargs) -> MixtureOfTokens:
    """A float64 layer with O(1)-and-larger logits (random weights, not the small init)."""
    torch.manual_seed(seed)
    layer = MixtureOfTokens(d, n_experts=e, expert_size=h, group_size=g, **kwargs).double()
    with torch.no_grad():
        layer.controller.normal_(0.0, weight_std / math.sqrt(d))
        layer.w1.normal_(0.0, 1.0 / math.sqrt(d))
        layer.w2.normal_(0.0, 1.0 / math.sqrt(h))
    return layer


def assert_close(actual, expected, tol=TOL):
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol)


# ----------------------------------------------------------------------------------------------- exact fixed tau


@pytest.mark.parametrize("emit", ["group", "experts"])
@pytest.mark.parametrize("tau", [2.0, 0.3, 1.7])
def test_fixed_temperature_is_exact_in_float64(emit, tau):
    layer = make_layer(seed=1, temperature=tau, emit=emit)
    assert layer.temperature.item() == tau and layer.log_temperature is None
    assert not [name for name, _ in layer.named_parameters() if "temperature" in name]
    assert "log_temperature" not in layer.state_dict()
    x = torch.randn(8, 3, 6, dtype=torch.float64)
    w = (layer.controller.detach(), layer.w1.detach(), layer.w2.detach())
    expected = reference_mot(x, *w, 4, tau, "softmax", emit)
    assert_close(layer(x), expected)
    # what a float32 log buffer cast to float64 gave: exp(log tau) off by ~1e-9 relative, visible at this tolerance
    rounded = math.exp(float(torch.tensor(math.log(tau), dtype=torch.float32)))
    assert rounded != tau
    assert (reference_mot(x, *w, 4, rounded, "softmax", emit) - expected).abs().max() > TOL


def test_learnable_temperature_keeps_its_log_parameter():
    layer = make_layer(seed=2, temperature=2.0, learnable_temperature="per_expert")
    assert isinstance(layer.log_temperature, torch.nn.Parameter) and layer.log_temperature.shape == (4,)
    torch.testing.assert_close(layer.temperature, torch.full((4,), 2.0, dtype=torch.float64))
    x = torch.randn(8, 2, 6, dtype=torch.float64)
    w = (layer.controller.detach(), layer.w1.detach(), layer.w2.detach())
    assert_close(layer(x), reference_mot(x, *w, 4, layer.temperature.detach()), tol=1e-10)


def test_fixed_temperature_in_low_precision():
    layer = make_layer(seed=3, temperature=2.0).float()
    x = torch.randn(8, 2, 6)
    expected = make_layer(seed=3, temperature=2.0)(x.double())
    torch.testing.assert_close(layer(x).double(), expected, atol=1e-5, rtol=1e-4)
