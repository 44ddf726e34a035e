"""The Llama-style block options against float64 plain-loop references: SwiGLU experts under MoT's merge and emit
(plain and recomputing paths), SwiGLU Token Choice (top-k renormalised or not, with and without capacity, both
dispatches), SwiGLU Expert Choice and dense layer; rotary, grouped-query attention with and without query/key
norms; RMSNorm. Counts against hand counts; bad settings are one sentence; the paper's block is unchanged."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from helpers import assert_close, build_model, gradcheck_layer, random_float64_layer
from reference import reference_mot
from reference_blocks import reference_attention, reference_rms_norm, reference_swiglu_feed_forward
from reference_sparse import DISPATCHES, reference_expert_choice, reference_token_choice, tolerance, with_dispatch

from mixture_of_tokens.blocks import RMSNorm, attention_params, rotary_cos_sin
from mixture_of_tokens.config import ModelConfig
from mixture_of_tokens.counting import count_model
from mixture_of_tokens.layers import ExpertChoice, FeedForward, MixtureOfTokens, TokenChoice
from mixture_of_tokens.layers.conversion import convert_config, convert_model_in_place
from mixture_of_tokens.model import CausalSelfAttention, KVCache, LayerKVCache, Transformer
from mixture_of_tokens.runtime.precision import Precision

LLAMA_STYLE = dict(positions="rope", norm="rmsnorm", ffn_activation="swiglu", n_kv_heads=2, dense_bias=False)


def _x(batch: int, seq_len: int, d: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, seq_len, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------- SwiGLU experts


def test_swiglu_expert_weights_hold_gate_and_up():
    layer = MixtureOfTokens(8, n_experts=3, expert_size=5, group_size=2, activation="swiglu")
    assert layer.w1.shape == (3, 8, 10) and layer.w2.shape == (3, 5, 8)
    assert TokenChoice(8, n_experts=3, expert_size=5, activation="swiglu").w1.shape == (3, 8, 10)


@pytest.mark.parametrize("routing", ["softmax", "uniform", "discrete"])
@pytest.mark.parametrize("emit", ["group", "experts"])
@pytest.mark.parametrize("seed", [0, 1])
def test_swiglu_mot_matches_reference(routing, emit, seed):
    layer = random_float64_layer(
        MixtureOfTokens, 6, n_experts=4, expert_size=5, group_size=3, seed=seed, routing=routing, emit=emit,
        activation="swiglu", temperature=0.7,
    )  # fmt: skip
    x = _x(6, 3, 6, seed)
    expected = reference_mot(x, layer.controller.detach(), layer.w1.detach(), layer.w2.detach(), 3, 0.7, routing, emit)
    assert_close(layer(x), expected)


def test_swiglu_mot_recompute_equals_the_plain_path_forward_and_gradients():
    torch.manual_seed(0)
    plain = random_float64_layer(
        MixtureOfTokens, 8, n_experts=6, expert_size=4, group_size=4, seed=3, activation="swiglu"
    )
    recomputing = random_float64_layer(
        MixtureOfTokens, 8, n_experts=6, expert_size=4, group_size=4, seed=3, activation="swiglu", compute="recompute"
    )
    x = _x(8, 5, 8, 1).requires_grad_(True)
    x2 = x.detach().clone().requires_grad_(True)
    out, out2 = plain(x), recomputing(x2)
    assert_close(out2, out)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()
    (out2 * weights).sum().backward()
    assert_close(x2.grad, x.grad)
    for (name, p), p2 in zip(plain.named_parameters(), recomputing.parameters(), strict=True):
        assert_close(p2.grad, p.grad), name


@pytest.mark.parametrize("layer_class", [MixtureOfTokens, TokenChoice])
def test_swiglu_gradcheck(layer_class):
    extra = {"group_size": 2} if layer_class is MixtureOfTokens else {"top_k": 2, "capacity_factor": None}
    layer = random_float64_layer(layer_class, 3, n_experts=3, expert_size=2, seed=0, activation="swiglu", **extra)
    assert gradcheck_layer(layer, _x(2, 2, 3).requires_grad_(True))


@pytest.mark.parametrize("dispatch", DISPATCHES)
@pytest.mark.parametrize(
    "top_k, norm_topk_prob, capacity_factor, scope",
    [(1, False, 1.0, "batch"), (2, True, None, "batch"), (2, True, 1.0, "group"), (2, False, 0.5, "batch"),
     (3, True, 1.25, "batch")],
)  # fmt: skip
def test_swiglu_token_choice_matches_reference(dispatch, top_k, norm_topk_prob, capacity_factor, scope):
    layer = random_float64_layer(
        TokenChoice, 8, n_experts=4, expert_size=4, seed=top_k, router_std=2.0, top_k=top_k,
        capacity_factor=capacity_factor, scope=scope, group_size=4, activation="swiglu",
        norm_topk_prob=norm_topk_prob,
    )  # fmt: skip
    layer = with_dispatch(layer, dispatch)
    x = _x(8, 3, 8, top_k).to(layer.w1.dtype)
    expected, aux, _ = reference_token_choice(
        x, layer.router.detach(), layer.w1.detach(), layer.w2.detach(), top_k=top_k,
        capacity_factor=capacity_factor, scope=scope, group_size=4, norm_topk_prob=norm_topk_prob,
    )  # fmt: skip
    tol = tolerance(x.dtype)
    assert_close(layer(x), expected.to(x.dtype), tol)
    assert layer.aux_losses["load_balance"].item() == pytest.approx(aux["load_balance"], rel=tol)


def test_renormalised_top_k_weights_sum_to_one():
    """With every expert the identity-like same function, a renormalised top-k sum is one expert's output."""
    layer = random_float64_layer(
        TokenChoice, 4, n_experts=3, expert_size=2, seed=0, top_k=2, capacity_factor=None, norm_topk_prob=True,
        activation="swiglu",
    )  # fmt: skip
    with torch.no_grad():
        layer.w1.copy_(layer.w1[:1].expand_as(layer.w1))
        layer.w2.copy_(layer.w2[:1].expand_as(layer.w2))
    single = TokenChoice(4, n_experts=1, expert_size=2, capacity_factor=None, activation="swiglu").double()
    with torch.no_grad():
        single.router.zero_()
        single.w1.copy_(layer.w1[:1])
        single.w2.copy_(layer.w2[:1])
    x = _x(2, 3, 4)
    assert_close(layer(x), single(x))


@pytest.mark.parametrize("dispatch", DISPATCHES)
def test_swiglu_expert_choice_matches_reference(dispatch):
    layer = random_float64_layer(
        ExpertChoice, 8, n_experts=4, expert_size=4, group_size=4, seed=2, tokens_per_expert=2, activation="swiglu"
    )
    layer = with_dispatch(layer, dispatch)
    x = _x(8, 3, 8, 5).to(layer.w1.dtype)
    expected, _ = reference_expert_choice(
        x, layer.router.detach(), layer.w1.detach(), layer.w2.detach(), 4, tokens_per_expert=2
    )
    assert_close(layer(x), expected.to(x.dtype), tolerance(x.dtype))


def test_swiglu_dense_layer_matches_reference():
    torch.manual_seed(0)
    layer = FeedForward(6, d_ff=10, activation="swiglu", bias=False).double()
    assert [name for name, _ in layer.named_parameters()] == ["gate.weight", "up.weight", "down.weight"]
    x = _x(2, 4, 6)
    expected = reference_swiglu_feed_forward(x, layer.gate.weight, layer.up.weight, layer.down.weight)
    assert_close(layer(x), expected)


# ----------------------------------------------------------------------------------------------------- attention


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("rope", [True, False])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_attention_matches_reference(n_kv_heads, rope, qk_norm):
    torch.manual_seed(n_kv_heads)
    attention = CausalSelfAttention(16, 4, n_kv_heads=n_kv_heads, qk_norm=qk_norm, norm_eps=1e-6).double()
    if qk_norm:
        with torch.no_grad():
            attention.q_norm.weight.uniform_(0.5, 1.5)
            attention.k_norm.weight.uniform_(0.5, 1.5)
    x = _x(2, 7, 16)
    rotary = rotary_cos_sin(torch.arange(7), 4, 500.0, torch.float64) if rope else None
    expected = reference_attention(
        x, attention.qkv.weight, attention.out.weight, n_heads=4, n_kv_heads=n_kv_heads,
        rope_base=500.0 if rope else None, q_norm=attention.q_norm.weight if qk_norm else None,
        k_norm=attention.k_norm.weight if qk_norm else None, eps=1e-6,
    )  # fmt: skip
    assert_close(attention(x, None, rotary), expected)
    # the same positions decoded in two chunks through the KV cache (kv heads only in the cache)
    cache = LayerKVCache()
    first = attention(x[:, :4], cache, None if not rope else rotary_cos_sin(torch.arange(4), 4, 500.0, x.dtype))
    later_rotary = None if not rope else rotary_cos_sin(torch.arange(4, 7), 4, 500.0, x.dtype)
    second = attention(x[:, 4:], cache, later_rotary)
    assert cache.keys_BMLW.shape == (2, n_kv_heads, 7, 4)
    assert_close(torch.cat([first, second], dim=1), expected)


def test_rms_norm_matches_reference_and_stays_float32_under_bf16_pure():
    norm = RMSNorm(6, eps=1e-6).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = _x(2, 3, 6)
    expected = torch.stack([torch.stack([reference_rms_norm(v, norm.weight, 1e-6) for v in row]) for row in x])
    assert_close(norm(x), expected)
    model = Precision("bf16-pure").prepare_model(build_model(_llama(ffn="dense")))
    assert model.blocks[0].attn_norm.weight.dtype == torch.float32
    assert model.blocks[0].attn.q_norm.weight.dtype == torch.float32
    assert model.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert model(torch.zeros(2, 5, dtype=torch.long)).logits.dtype == torch.bfloat16


def test_rotary_positions_follow_the_cache_offset():
    """A Llama-style model's logits for positions 3..5 are the same whether computed alone after a cached prefix
    or in one full forward (RoPE angles start at the cache length)."""
    model = build_model(_llama(ffn="dense")).double().eval()
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    cache = KVCache(len(model.blocks))
    with torch.no_grad():
        model(ids[:, :3], cache=cache)
        tail = model(ids[:, 3:], cache=cache).logits
        full = model(ids).logits
    assert_close(tail, full[:, 3:])


# -------------------------------------------------------------------------------------------------- the model


def _llama(**overrides) -> ModelConfig:
    fields = dict(
        vocab_size=64, max_seq_len=16, d_model=16, n_blocks=2, n_heads=4, d_ff=40, ffn="mot", ffn_blocks="all",
        group_size=4, n_experts=4, expert_size=20, qk_norm=True, **LLAMA_STYLE,
    )  # fmt: skip
    return ModelConfig(**{**fields, **overrides})


@pytest.mark.parametrize("ffn", ["dense", "mot", "token_choice", "expert_choice"])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_counts_by_hand(ffn, qk_norm):
    config = _llama(ffn=ffn, qk_norm=qk_norm, top_k=2, ffn_blocks="second-half")
    model = build_model(config)
    d, v, f, e, h, g = 16, 64, 40, 4, 20, 4
    kv_width = 2 * (d // 4)  # two kv heads of width 4
    attention = 2 * d * d + 2 * d * kv_width
    assert attention_params(config) == attention
    norms = 2 * d + (2 * (d // 4) if qk_norm else 0)  # two RMSNorms (no bias), per-head q and k norms
    dense = 3 * d * f  # gate, up, down; no biases
    sparse = {"mot": d * e + 3 * e * d * h, "token_choice": d * e + 3 * e * d * h,
              "expert_choice": d * e + 3 * e * d * h + 2 * d, "dense": dense}[ffn]  # fmt: skip
    total = v * d + 2 * (attention + norms) + dense + sparse + d + v * d  # no position table; final RMSNorm; head
    counts = count_model(model)
    assert counts.total_params == total and counts.embedding_params == 2 * v * d
    active_ffn = {"dense": dense, "mot": 3 * d * e * h // g + d * e, "token_choice": 3 * d * h * 2 + d * e,
                  "expert_choice": 3 * d * h * e // g + d * e}[ffn]  # fmt: skip
    assert counts.active_params_per_token == 2 * attention + dense + active_ffn
    ffn_flops = 2 * active_ffn + (2 * 2 * d * e if ffn == "mot" else 0)  # MoT's merge and emit
    seq = config.max_seq_len
    assert counts.forward_flops_per_token == 2 * d * v + 2 * (2 * attention + 2 * 2 * seq * d) + 2 * dense + ffn_flops


def test_the_paper_block_is_unchanged():
    """The default block keeps its parameters (names and shapes) and its counts."""
    config = ModelConfig(vocab_size=64, max_seq_len=16, d_model=16, n_blocks=1, n_heads=4, d_ff=64)
    shapes = {name: tuple(p.shape) for name, p in build_model(config).named_parameters()}
    assert shapes == {
        "token_embedding.weight": (64, 16), "position_embedding.weight": (16, 16),
        "blocks.0.attn_norm.weight": (16,), "blocks.0.attn_norm.bias": (16,), "blocks.0.attn.qkv.weight": (48, 16),
        "blocks.0.attn.out.weight": (16, 16), "blocks.0.ffn_norm.weight": (16,), "blocks.0.ffn_norm.bias": (16,),
        "blocks.0.ffn.up.weight": (64, 16), "blocks.0.ffn.up.bias": (64,), "blocks.0.ffn.down.weight": (16, 64),
        "blocks.0.ffn.down.bias": (16,), "final_norm.weight": (16,), "final_norm.bias": (16,),
        "head.weight": (64, 16),
    }  # fmt: skip
    assert attention_params(config) == 4 * 16 * 16


def test_llama_style_mot_switches_to_token_choice_reusing_its_swiglu_experts():
    config = _llama(ffn_blocks="second-half")
    model = build_model(config).double()
    w1 = model.blocks[1].ffn.w1
    converted = convert_config(config, "token-choice", tc_norm_topk_prob=True, top_k=2)
    assert convert_model_in_place(model, converted) == []
    layer = model.blocks[1].ffn
    assert isinstance(layer, TokenChoice) and layer.w1 is w1 and layer.activation == "swiglu"
    assert layer.norm_topk_prob and layer.top_k == 2
    assert model(torch.zeros(4, 5, dtype=torch.long)).logits.shape == (4, 5, 64)


def test_llama_style_model_trains():
    model = build_model(_llama(ffn="token_choice", top_k=2, tc_norm_topk_prob=True))
    ids = torch.randint(0, 64, (4, 16), generator=torch.Generator().manual_seed(0))
    output = model(ids, ids)
    output.loss.backward()
    unused = [name for name, p in model.named_parameters() if p.grad is None]
    assert unused == [] and torch.isfinite(output.loss)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"n_kv_heads": 3}, "n_kv_heads=3 must divide n_heads=4 (0: n_heads, plain multi-head attention)."),
        ({"n_kv_heads": -1}, "n_kv_heads=-1 must divide n_heads=4"),
        ({"positions": "alibi"}, "positions='alibi' is not supported; allowed values: learned, rope."),
        ({"norm": "batchnorm"}, "norm='batchnorm' is not supported; allowed values: layernorm, rmsnorm."),
        ({"ffn_activation": "gelu"}, "ffn_activation='gelu' is not supported; allowed values: relu, swiglu."),
        ({"rope_base": 0.0}, "rope_base must be positive, got 0.0."),
        ({"norm_eps": -1e-6}, "norm_eps must be positive"),
        ({"d_model": 12, "n_heads": 4}, "positions='rope' needs an even head width d_model / n_heads, got 3."),
    ],
)
def test_bad_block_options_are_one_sentence(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        _llama(**overrides)


def test_transformer_without_position_table_names_no_position_embedding():
    model = Transformer(_llama(ffn="dense"))
    assert model.position_embedding is None
    assert not any("position_embedding" in name for name, _ in model.named_parameters())


def test_gqa_keeps_fewer_cached_values():
    config = dataclasses.replace(_llama(ffn="dense"), n_kv_heads=1)
    model = build_model(config).eval()
    cache = KVCache(len(model.blocks))
    with torch.no_grad():
        model(torch.zeros(2, 5, dtype=torch.long), cache=cache)
    assert cache.layers[0].keys_BMLW.shape == (2, 1, 5, 4)
