"""The Transformer around the MoT layer: shapes, loss, causal/group leakage audit, layouts, config checks."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from helpers import build_model, mot_layers_of, tiny_model_config

from mixture_of_tokens.config import ModelConfig
from mixture_of_tokens.counting import count_model

VOCAB, D, SEQ, BATCH, GROUP = 50, 16, 8, 8, 4


def small_config(**overrides) -> ModelConfig:
    # E*h = 8*32 = 4*64 = G*d_ff
    base = dict(
        vocab_size=VOCAB, max_seq_len=SEQ, d_model=D, n_blocks=4, d_ff=4 * D, ffn="mot", ffn_blocks="all",
        group_size=GROUP, n_experts=8, expert_size=2 * D,
    )  # fmt: skip
    return tiny_model_config(**{**base, **overrides})


@pytest.mark.parametrize("ffn_blocks", ["all", "second-half", "first-half", "every-other", "0,2"])
def test_logits_and_loss(ffn_blocks):
    model = build_model(small_config(ffn_blocks=ffn_blocks))
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    targets = torch.randint(0, VOCAB, (BATCH, SEQ))
    out = model(ids)
    assert out.logits.shape == (BATCH, SEQ, VOCAB) and out.loss is None
    out = model(ids, targets)
    assert out.aux_losses == {}
    assert torch.equal(out.loss, out.lm_loss)
    # cross entropy by hand, token by token, in float64
    logits = out.logits.detach().double()
    total = 0.0
    for b in range(BATCH):
        for s in range(SEQ):
            row = [float(v) for v in logits[b, s]]
            top = max(row)
            lse = top + math.log(sum(math.exp(v - top) for v in row))
            total += lse - row[int(targets[b, s])]
    assert float(out.lm_loss.detach()) == pytest.approx(total / (BATCH * SEQ), rel=1e-5)
    assert len(mot_layers_of(model)) == config_mot_count(model.config)


def config_mot_count(config: ModelConfig) -> int:
    return sum(kind == "mot" for kind in config.block_ffn_kinds())


def test_routing_stats_are_reported_per_mot_block():
    model = build_model(small_config(ffn_blocks="second-half"))
    model(torch.randint(0, VOCAB, (BATCH, SEQ)))
    stats = model.routing_stats()
    assert {key.split(".")[0] for key in stats} == {"block2", "block3"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values())


@pytest.mark.parametrize("ffn,ffn_blocks", [("dense", "all"), ("mot", "all"), ("mot", "second-half")])
@pytest.mark.parametrize("b,t", [(0, 0), (5, 3), (2, 7), (7, 5)])
def test_no_leakage_across_positions_or_groups(ffn, ffn_blocks, b, t):
    model = build_model(small_config(ffn=ffn, ffn_blocks=ffn_blocks), seed=b + 10 * t).double()
    with torch.no_grad():  # larger MoT logits than the small init, so routing really depends on the tokens
        for layer in mot_layers_of(model):
            layer.controller.mul_(10.0)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    ids2 = ids.clone()
    ids2[b, t] = (ids[b, t] + 1) % VOCAB
    with torch.no_grad():
        moved = (model(ids2).logits - model(ids).logits).abs().amax(dim=-1)  # [B, S]
    if t > 0:
        assert moved[:, :t].max() <= 1e-12, "a logit before the changed position moved"
    group = b // GROUP
    outside = torch.ones(BATCH, dtype=torch.bool)
    if ffn == "mot":
        outside[group * GROUP : (group + 1) * GROUP] = False
    else:
        outside[b] = False  # dense: no sequence sees another one
    assert moved[outside].max() <= 1e-12, "a logit of a sequence outside the changed sequence's group moved"
    assert moved[b, t] > 1e-6
    if ffn == "mot":  # MoT does couple the sequences of a group at the changed position
        others = [i for i in range(group * GROUP, (group + 1) * GROUP) if i != b]
        assert moved[others, t].max() > 1e-9


@pytest.mark.parametrize(
    "n_blocks,pattern,expected",
    [
        (4, "all", "MMMM"),
        (4, "second-half", "DDMM"),
        (5, "second-half", "DDMMM"),
        (4, "first-half", "MMDD"),
        (5, "first-half", "MMDDD"),
        (4, "every-other", "DMDM"),
        (5, "every-other", "DMDMD"),
        (4, "0,2", "MDMD"),
        (4, " 3 ", "DDDM"),
        (4, "1,1,2", "DMMD"),
    ],
)
def test_block_ffn_kinds(n_blocks, pattern, expected):
    config = small_config(n_blocks=n_blocks, ffn_blocks=pattern)
    kinds = {"M": "mot", "D": "dense"}
    assert config.block_ffn_kinds() == [kinds[c] for c in expected]
    model = build_model(config)
    assert [type(block.ffn).__name__ for block in model.blocks] == [
        "MixtureOfTokens" if c == "M" else "FeedForward" for c in expected
    ]
    dense_config = dataclasses.replace(config, ffn="dense")
    assert dense_config.block_ffn_kinds() == ["dense"] * n_blocks


@pytest.mark.parametrize("pattern", ["4", "-1", "0,4", "a,b", "", "half", "second_half", "1.5"])
def test_invalid_ffn_blocks(pattern):
    with pytest.raises(ValueError, match="ffn_blocks"):
        small_config(ffn_blocks=pattern)


@pytest.mark.parametrize(
    "overrides,setting",
    [
        ({"n_heads": 3}, "n_heads"),
        ({"ffn": "moe"}, "ffn"),
        ({"d_model": 0}, "d_model"),
        ({"vocab_size": -1}, "vocab_size"),
        ({"n_blocks": 0}, "n_blocks"),
    ],
)
def test_invalid_model_config(overrides, setting):
    with pytest.raises(ValueError, match=setting):
        small_config(**overrides)


def test_sequence_longer_than_context_raises():
    model = build_model(small_config())
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.randint(0, VOCAB, (BATCH, SEQ + 1)))


def test_batch_not_divisible_by_group_raises():
    model = build_model(small_config())
    with pytest.raises(ValueError, match="group_size"):
        model(torch.randint(0, VOCAB, (6, SEQ)))


def test_tie_embeddings():
    tied = build_model(small_config(tie_embeddings=True))
    untied = build_model(small_config(tie_embeddings=False))
    assert tied.head.weight is tied.token_embedding.weight
    assert untied.head.weight is not untied.token_embedding.weight
    n_tied = sum(p.numel() for p in tied.parameters())
    n_untied = sum(p.numel() for p in untied.parameters())
    assert n_untied - n_tied == VOCAB * D
    counts = count_model(tied)
    assert counts.total_params == n_tied
    assert counts.embedding_params == VOCAB * D + SEQ * D


def test_gradient_reaches_every_parameter():
    model = build_model(small_config(mot_learnable_temperature="per_expert"))
    ids = torch.randint(0, VOCAB, (BATCH, SEQ))
    out = model(ids, torch.randint(0, VOCAB, (BATCH, SEQ)))
    out.loss.backward()
    names = [name for name, _ in model.named_parameters()]
    assert any(name.endswith("log_temperature") for name in names)
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_count_model():
    dense = build_model(small_config(ffn="dense"))
    mot = build_model(small_config(ffn="mot", ffn_blocks="all"))
    for model in (dense, mot):
        counts = count_model(model)
        assert counts.total_params == sum(p.numel() for p in model.parameters())
        embeddings = 2 * VOCAB * D + SEQ * D  # token table, positions, untied head
        assert counts.embedding_params == embeddings
        assert counts.non_embedding_params == counts.total_params - embeddings
        assert counts.train_flops_per_token == 3 * counts.forward_flops_per_token
    dense_counts, mot_counts = count_model(dense), count_model(mot)
    assert mot_counts.total_params > 2 * dense_counts.total_params - 2 * VOCAB * D  # MoT holds ~G x the FF
    # FLOP-matched: only the controller's d*E per MoT block is extra
    assert mot_counts.active_params_per_token - dense_counts.active_params_per_token == 4 * D * 8
    assert mot_counts.active_params_per_token == pytest.approx(dense_counts.active_params_per_token, rel=0.05)
