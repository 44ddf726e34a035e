"""MoT with within-sequence groups (masked LM, issue 14): G consecutive positions of one sequence form a group.
Checked against its float64 plain-loop reference (tests/reference.py), for leakage and coupling (it leaks later
positions of its own sequence, and never couples sequences), and for what it answers through the registry."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import assert_close, build_model, gradcheck_layer, random_float64_layer, tiny_model_config
from reference import reference_mot_within_sequence

from mixture_of_tokens.audit import audit_layer_types
from mixture_of_tokens.cli import main
from mixture_of_tokens.layers import MixtureOfTokens, batch_multiple, rows_couple_at_inference
from mixture_of_tokens.layers.grouping import from_sequence_groups, sequence_groups
from mixture_of_tokens.model import mot_mode
from mixture_of_tokens.presets import get_preset

TOL = 1e-12


def make_layer(d=6, e=4, h=5, g=4, *, seed=0, group_axis="within_sequence", **kwargs) -> MixtureOfTokens:
    """A float64 within-sequence layer with random weights and logits of a few units (router std 3)."""
    return random_float64_layer(
        MixtureOfTokens, d, n_experts=e, expert_size=h, group_size=g, seed=seed, router_std=3.0,
        group_axis=group_axis, **kwargs,
    )  # fmt: skip


def reference_of(layer: MixtureOfTokens, x: torch.Tensor) -> torch.Tensor:
    return reference_mot_within_sequence(
        x, layer.controller.detach(), layer.w1.detach(), layer.w2.detach(), layer.group_size,
        layer.temperature.detach(), layer.routing, layer.emit,
        emit_controller=None if layer.emit_controller is None else layer.emit_controller.detach(),
    )  # fmt: skip


@pytest.mark.parametrize("routing", ["softmax", "uniform", "discrete"])
@pytest.mark.parametrize("emit", ["group", "experts"])
@pytest.mark.parametrize("separate", [False, True])
def test_matches_the_plain_loop_reference(routing, emit, separate):
    layer = make_layer(seed=3, temperature=0.7, routing=routing, emit=emit, separate_emit_controller=separate)
    if separate:
        with torch.no_grad():
            layer.emit_controller.normal_(0.0, 3.0 / math.sqrt(6))
    x = torch.randn(3, 8, 6, dtype=torch.float64)
    assert_close(layer(x), reference_of(layer, x), tol=TOL)


def test_matches_the_reference_with_a_learnable_temperature_and_after_a_group_size_change():
    layer = make_layer(seed=4, g=2, learnable_temperature="per_expert")
    with torch.no_grad():
        layer.log_temperature.uniform_(-1.0, 1.0)
    x = torch.randn(2, 8, 6, dtype=torch.float64)
    assert_close(layer(x), reference_of(layer, x), tol=TOL)
    layer.set_mode(group_size=8)  # no parameter depends on G
    assert_close(layer(x), reference_of(layer, x), tol=TOL)


def test_group_size_one_is_a_dense_layer_of_every_expert_and_a_batch_of_one_works():
    layer = make_layer(g=1)
    x = torch.randn(1, 5, 6, dtype=torch.float64)
    assert_close(layer(x), reference_of(layer, x), tol=TOL)


def test_gradcheck():
    layer = make_layer(d=4, e=3, h=3, g=2)
    x = torch.randn(2, 4, 4, dtype=torch.float64, requires_grad=True)
    assert gradcheck_layer(layer, x)


@pytest.mark.parametrize("position", [0, 5, 7])
def test_a_token_moves_only_its_own_block_of_its_own_sequence(position):
    layer = make_layer()
    x = torch.randn(3, 8, 6, dtype=torch.float64)
    x2 = x.clone()
    x2[1, position] += 1.0
    moved = (layer(x2) - layer(x)).abs().amax(dim=-1) > 1e-12
    allowed = torch.zeros(3, 8, dtype=torch.bool)
    block = position // 4
    allowed[1, block * 4 : block * 4 + 4] = True
    assert bool(moved[1, position])
    assert not bool(moved[~allowed].any())
    assert bool(moved[1, block * 4 : block * 4 + 4].all())  # later positions of its block see it: not causal


def test_grouping_helpers_are_views_and_inverse():
    x = torch.randn(3, 8, 5)
    rows = sequence_groups(x, 4)
    assert rows.shape == (6, 4, 5) and rows.data_ptr() == x.data_ptr()
    assert torch.equal(rows[3], x[1, 4:8])
    assert torch.equal(from_sequence_groups(rows, 3), x)


def test_what_it_answers_for_itself():
    config = tiny_model_config(objective="masked", mot_group_axis="within_sequence", ffn_blocks="all")
    assert MixtureOfTokens.batch_multiple(config) == 1 and batch_multiple(config) == 1
    assert not MixtureOfTokens.rows_couple_at_inference(config) and not rows_couple_at_inference(config)
    assert not MixtureOfTokens.from_config(config).is_causal()
    across = tiny_model_config(objective="masked")
    assert MixtureOfTokens.batch_multiple(across) == 4 and rows_couple_at_inference(across)
    assert MixtureOfTokens.from_config(across).is_causal()
    modes = {m.group_size for m in MixtureOfTokens.evaluation_modes(config, batch_size=3)} - {None}
    assert modes == {1, 8}  # G/4 = 1 and 2G = 8 tile the 32-token sequence, whatever the batch
    assert "group_axis=within_sequence" in repr(MixtureOfTokens.from_config(config))


def test_layer_settings_are_checked_before_compute():
    with pytest.raises(ValueError, match="group_axis='rows' is not supported"):
        make_layer(group_axis="rows")
    with pytest.raises(ValueError, match="allowed value is consecutive"):
        make_layer(grouping="random")
    with pytest.raises(ValueError, match=r"must divide the sequence length 6.*\[1, 2, 3, 6\]"):
        make_layer()(torch.randn(2, 6, 6, dtype=torch.float64))


def test_a_masked_model_with_within_sequence_groups_runs_any_batch_and_sequences_stay_apart():
    config = tiny_model_config(objective="masked", mot_group_axis="within_sequence", ffn_blocks="all")
    model = build_model(config).double().eval()
    ids = torch.randint(300, (3, 32))
    with torch.no_grad():
        alone = model(ids[1:2]).logits
        together = model(ids).logits[1:2]
        torch.testing.assert_close(alone, together)  # a row's output does not depend on the other rows
        with mot_mode(model, group_size=8):
            model(ids)


def test_audit_shows_it_leaking_under_causal_attention_and_coupling_no_sequence():
    results = {r.name: r for r in audit_layer_types()}
    within = results["mot within_sequence"]
    assert not within.expected_causal and within.future_leak and within.ok
    assert within.coupling == "none" and within.moved_sequences == [0]
    assert within.moved_positions == [12, 13, 14, 15]  # the perturbed last position's block of G = 4
    method = results["mot"]
    assert method.expected_causal and not method.future_leak and method.coupling != "none"


def test_mot_audit_of_the_preset(capsys):
    assert main(["audit", "--preset", "tiny-bert-mot-seq", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert not result["expected_causal"] and result["coupling"] == "none"
    assert get_preset("tiny-bert-mot-seq").model.mot_group_axis == "within_sequence"
