"""The leakage audit: every causal layer shows no future-token leakage, batch-scope Token Choice is caught, and the
coupling each layer reports is the one docs/method.md describes. Also the `mot audit` command."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from helpers import build_model, tiny_model_config
from safetensors.torch import save_model

from mixture_of_tokens.audit import (
    AuditResult,
    audit_layer_types,
    audit_model,
    capacity_binding_input,
    compare_outputs,
    format_table,
    layer_suite,
)
from mixture_of_tokens.cli import main
from mixture_of_tokens.config import ModelConfig, TrainConfig

GROUP = 4


def _by_name(results: list[AuditResult]) -> dict[str, AuditResult]:
    return {r.name: r for r in results}


@pytest.mark.parametrize("sequence,position", [(0, 15), (5, 10), (2, 12)])
def test_layer_types(sequence, position):
    results = _by_name(audit_layer_types(batch=8, seq_len=16, group_size=GROUP, sequence=sequence, position=position))
    group = set(range((sequence // GROUP) * GROUP, (sequence // GROUP + 1) * GROUP))
    for name in ("dense", "mot", "expert_choice", "token_choice[group]", "token_choice[dropless]"):
        result = results[name]
        assert result.expected_causal and not result.future_leak and result.ok, name
        assert result.max_change_before == 0.0, name
        assert result.moved_positions == [position], name  # a feed-forward layer never moves other positions
        assert sequence in result.moved_sequences, name
    # per-token layers: only the perturbed token moves
    for name in ("dense", "token_choice[dropless]"):
        assert results[name].moved_sequences == [sequence] and results[name].coupling == "none"
    # grouped layers: only same-position members of the perturbed token's group
    for name in ("mot", "expert_choice", "token_choice[group]"):
        assert set(results[name].moved_sequences) <= group, name
    assert len(results["mot"].moved_sequences) == GROUP  # MoT mixes every member of the group
    # batch-wide capacity: an earlier token of some sequence lost its slot
    leaky = results["token_choice[batch]"]
    assert not leaky.expected_causal and leaky.future_leak and leaky.max_change_before > 1e-3
    assert min(leaky.moved_positions) < position


def test_capacity_binding_input_really_binds():
    """The audit input routes every token to expert 0, and the audited token starts dropped."""
    layers = layer_suite(d_model=16, group_size=GROUP)
    layer, _ = layers["token_choice[batch]"]
    x, x_perturbed = capacity_binding_input(8, 16, 16, 0, 15)
    out = layer(x)
    assert layer.expert_load[0] == 1.0 and layer.stats["dropped_ratio"] > 0.5
    assert torch.all(out[0, 15] == 0)
    assert layer(x_perturbed)[0, 15].abs().max() > 0


def test_compare_outputs_detects_what_moved():
    y = torch.randn(3, 5, 4, dtype=torch.float64)
    y2 = y.clone()
    y2[1, 3] += 1.0  # perturbed token itself
    y2[2, 3] += 1.0  # another sequence, same position
    result = compare_outputs("x", y, y2, sequence=1, position=3, expected_causal=True)
    assert not result.future_leak and result.moved_sequences == [1, 2] and result.coupling == "sequences 2"
    y2[0, 1] += 1e-6  # an earlier position moves: a leak, even a small one
    result = compare_outputs("x", y, y2, sequence=1, position=3, expected_causal=True)
    assert result.future_leak and not result.ok and result.moved_positions == [1, 3]
    assert result.max_change_before == pytest.approx(1e-6)
    assert "FAIL" in format_table([result])


def _tiny_config(ffn: str, **kwargs) -> ModelConfig:
    return tiny_model_config(
        vocab_size=64, max_seq_len=16, d_model=16, d_ff=32, ffn=ffn, ffn_blocks="all", group_size=GROUP,
        expert_size=32, **kwargs,
    )  # fmt: skip


@pytest.mark.parametrize(
    "ffn,kwargs",
    [
        ("dense", {}),
        ("mot", {}),
        ("expert_choice", {}),
        ("token_choice", {"tc_scope": "group", "capacity_factor": 1.0}),
        ("token_choice", {"capacity_factor": 0.0}),
    ],
)
def test_causal_models_do_not_leak(ffn, kwargs):
    model = build_model(_tiny_config(ffn, **kwargs))
    for position in (5, 15):
        result = audit_model(model, batch=8, seq_len=16, sequence=1, position=position)
        assert result.expected_causal and not result.future_leak, (ffn, position)
        assert set(result.moved_positions) == set(range(position, 16))  # attention carries it forward
        if ffn in ("mot", "expert_choice") or kwargs.get("tc_scope") == "group":
            assert set(result.moved_sequences) <= set(range(GROUP))
        else:
            assert result.moved_sequences == [1]


LLAMA_STYLE = dict(positions="rope", norm="rmsnorm", ffn_activation="swiglu", n_kv_heads=2, dense_bias=False)


@pytest.mark.parametrize("qk_norm", [False, True])
@pytest.mark.parametrize(
    "ffn,kwargs",
    [
        ("dense", {}),
        ("mot", {}),
        ("expert_choice", {}),
        ("token_choice", {"tc_scope": "group", "capacity_factor": 1.0}),
        ("token_choice", {"capacity_factor": 0.0, "top_k": 2, "tc_norm_topk_prob": True}),
    ],
)
def test_llama_style_models_do_not_leak(ffn, kwargs, qk_norm):
    """RoPE + grouped-query attention (2 kv heads for 4 query heads) + RMSNorm + SwiGLU, each feed-forward kind."""
    model = build_model(_tiny_config(ffn, n_heads=4, qk_norm=qk_norm, **LLAMA_STYLE, **kwargs))
    for position in (0, 7, 15):
        result = audit_model(model, batch=8, seq_len=16, sequence=5, position=position)
        assert result.expected_causal and not result.future_leak and result.ok, (ffn, position)
        assert set(result.moved_positions) == set(range(position, 16))
        grouped = ffn in ("mot", "expert_choice") or kwargs.get("tc_scope") == "group"
        assert set(result.moved_sequences) <= (set(range(4, 8)) if grouped else {5})


def test_swiglu_layers_are_audited_like_their_relu_twins():
    results = _by_name(audit_layer_types(batch=8, seq_len=16, group_size=GROUP, sequence=5, position=9))
    for name in (
        "dense[swiglu]",
        "mot[swiglu]",
        "expert_choice[swiglu]",
        "token_choice[swiglu, top-2 renormalised, dropless]",
    ):
        result = results[name]
        assert result.expected_causal and not result.future_leak and result.moved_positions == [9], name
    assert results["dense[swiglu]"].moved_sequences == [5]
    assert results["token_choice[swiglu, top-2 renormalised, dropless]"].moved_sequences == [5]
    assert results["mot[swiglu]"].moved_sequences == [4, 5, 6, 7]
    assert set(results["expert_choice[swiglu]"].moved_sequences) <= {4, 5, 6, 7}


def test_batch_scope_token_choice_model_is_flagged():
    model = build_model(_tiny_config("token_choice", capacity_factor=0.5))
    results = [audit_model(model, batch=8, seq_len=16, sequence=0, position=15, seed=seed) for seed in range(3)]
    assert all(not r.expected_causal for r in results)
    assert any(r.future_leak for r in results)


def test_cli_layer_audit(capsys):
    assert main(["audit", "--json", "--seq-len", "8"]) == 0
    payload = json.loads(capsys.readouterr().out)
    verdicts = {row["name"]: (row["future_leak"], row["ok"]) for row in payload}
    leaky = ("token_choice[batch]", "mot within_sequence")  # both meant non-causal, so "ok" with their leak
    assert all(verdicts[name] == (True, True) for name in leaky)
    assert all(not leak and ok for name, (leak, ok) in verdicts.items() if name not in leaky)
    assert main(["audit"]) == 0
    table = capsys.readouterr().out
    assert "LEAK" in table and "token_choice[group]" in table


def test_cli_checkpoint_audit(tmp_path, capsys):
    config = _tiny_config("expert_choice")
    model = build_model(config)
    save_model(model, str(tmp_path / "model.safetensors"))
    payload = {"model": dataclasses.asdict(config), "train": dataclasses.asdict(TrainConfig(batch_size=8))}
    (tmp_path / "config.json").write_text(json.dumps(payload))
    assert main(["audit", str(tmp_path), "--json", "--sequence", "2", "--position", "9"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["expected_causal"] and not row["future_leak"] and row["position"] == 9
    assert set(row["moved_sequences"]) <= set(range(GROUP)) and 2 in row["moved_sequences"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["audit", "--position", "99"], "position=99 is out of range; allowed values: 0..15"),
        (["audit", "--sequence", "8"], "sequence=8 is out of range; allowed values: 0..7"),
        (["audit", "--batch-size", "6"], "batch=6 must be a multiple of group_size=4"),
        (["audit", "--preset", "nope"], "preset 'nope' is unknown"),
    ],
)
def test_cli_bad_input(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
