"""The paper's presets against docs/method.md §4, and their parameter counts from the architecture formula."""

from __future__ import annotations

import pytest
import torch

from mixture_of_tokens.counting import count_model
from mixture_of_tokens.model import Transformer
from mixture_of_tokens.presets import PRESETS, get_preset

# docs/method.md §4: model -> (blocks, d_model, d_ff, heads, G, E, h); None for the dense models
PAPER_TABLE = {
    "transformer-medium": (8, 512, 2048, 8, None, None, None),
    "mot-medium-32e": (8, 512, 2048, 8, 32, 32, 2048),
    "mot-medium-32e-8": (8, 512, 2048, 8, 32, 256, 256),
    "mot-medium-32e-16": (8, 512, 2048, 8, 32, 512, 128),
    "transformer-base": (12, 768, 3072, 12, None, None, None),
    "mot-base-32e": (12, 768, 3072, 12, 32, 32, 3072),
    "mot-base-64e-16": (12, 768, 3072, 12, 64, 1024, 192),
    "mot-medium-8e": (8, 512, 2048, 8, 8, 8, 2048),
    "mot-medium-128e": (8, 512, 2048, 8, 128, 128, 2048),
    "mot-medium-32e-uniform": (8, 512, 2048, 8, 32, 32, 2048),
    "mot-medium-32e-32": (8, 512, 2048, 8, 32, 1024, 64),
}
# the paper's text: Transformer-Medium 1e-3, Transformer-Base 4e-4; MoT 7e-4 (Medium), 2e-4 (Base)
PAPER_LR = {
    "transformer-medium": 1e-3,
    "mot-medium-8e": 7e-4,
    "mot-medium-128e": 7e-4,
    "mot-medium-32e-uniform": 7e-4,
    "mot-medium-32e-32": 7e-4,
    "mot-medium-32e": 7e-4,
    "mot-medium-32e-8": 7e-4,
    "mot-medium-32e-16": 7e-4,
    "transformer-base": 4e-4,
    "mot-base-32e": 2e-4,
    "mot-base-64e-16": 2e-4,
}
GPT2_VOCAB, CONTEXT = 50257, 256


def hand_count(vocab, seq, d, d_ff, kinds, n_experts, expert_size, tied=False, *, llama_kv_width=None) -> int:
    """Parameters of the pre-LN decoder from its formula. With `llama_kv_width` (the kv heads' width), the
    Llama-style block: no position table (RoPE), RMSNorms (weight only), grouped-query k and v projections,
    SwiGLU (three matrices) without biases."""
    llama = llama_kv_width is not None
    norm = d if llama else 2 * d
    matrices = 3 if llama else 2
    total = vocab * d + (0 if llama else seq * d)  # token (and position) embeddings
    for kind in kinds:
        total += (2 * d * d + 2 * d * llama_kv_width if llama else 4 * d * d) + 2 * norm  # attention, two norms
        if kind == "dense":
            total += matrices * d * d_ff + (0 if llama else d_ff + d)
        else:  # MoT controller / router and the experts
            total += d * n_experts + matrices * n_experts * d * expert_size
        if kind == "expert_choice":
            total += 2 * d  # its output LayerNorm
    total += norm  # final norm
    if not tied:
        total += d * vocab
    return total


def test_every_paper_preset_exists():
    assert set(PAPER_TABLE) <= set(PRESETS)


@pytest.mark.parametrize("name", sorted(PAPER_TABLE))
def test_paper_preset_matches_table(name):
    blocks, d, d_ff, heads, g, e, h = PAPER_TABLE[name]
    preset = get_preset(name)
    cfg = preset.model
    assert preset.name == name
    assert (cfg.n_blocks, cfg.d_model, cfg.d_ff, cfg.n_heads) == (blocks, d, d_ff, heads)
    assert d_ff == 4 * d
    assert (cfg.vocab_size, cfg.max_seq_len) == (GPT2_VOCAB, CONTEXT)
    if g is None:
        assert cfg.ffn == "dense"
        assert set(cfg.block_ffn_kinds()) == {"dense"}
    else:
        assert cfg.ffn == "mot"
        assert (cfg.group_size, cfg.n_experts, cfg.expert_size) == (g, e, h)
        assert cfg.n_experts * cfg.expert_size == cfg.group_size * cfg.d_ff
        # the authors' 2024 layout: dense first half, MoT second half
        assert cfg.block_ffn_kinds() == ["dense"] * (blocks // 2) + ["mot"] * (blocks - blocks // 2)
    train = preset.train
    assert (train.steps, train.batch_size, train.warmup_steps) == (150_000, 256, 2500)
    assert train.lr == pytest.approx(PAPER_LR[name])
    assert (train.beta1, train.beta2, train.weight_decay, train.grad_clip) == (0.9, 0.999, 0.1, 0.5)
    assert train.min_lr_ratio == pytest.approx(0.1)
    assert train.batch_size % (g or 1) == 0
    assert (train.data, train.tokenizer) == ("c4", "gpt2")
    assert cfg.mot_routing == ("uniform" if name.endswith("-uniform") else "softmax")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_parameter_count(name):
    cfg = get_preset(name).model
    with torch.device("meta"):
        model = Transformer(cfg)
    expected = hand_count(
        cfg.model_vocab_size,  # the masked objective's mask token is one more row
        cfg.max_seq_len,
        cfg.d_model,
        cfg.d_ff,
        cfg.block_ffn_kinds(),
        cfg.n_experts,
        cfg.expert_size,
        cfg.tie_embeddings,
        llama_kv_width=cfg.n_kv_heads * cfg.d_model // cfg.n_heads if "llama-" in name else None,
    )
    assert sum(p.numel() for p in model.parameters()) == expected
    counts = count_model(model)
    assert counts.total_params == expected
    if cfg.ffn == "mot":
        assert cfg.n_experts * cfg.expert_size == cfg.group_size * cfg.d_ff


def test_medium_parameter_counts_by_hand():
    """Spot values computed independently: MoT-Medium/32E holds 32x the FF of its four MoT blocks."""
    d, v, s = 512, GPT2_VOCAB, CONTEXT
    dense_ff = 2 * d * 2048 + 2048 + d
    block_common = 4 * d * d + 4 * d
    dense_total = 2 * v * d + s * d + 2 * d + 8 * (block_common + dense_ff)
    mot_ff = d * 32 + 2 * 32 * d * 2048
    mot_total = 2 * v * d + s * d + 2 * d + 8 * block_common + 4 * dense_ff + 4 * mot_ff
    for name, expected in (("transformer-medium", dense_total), ("mot-medium-32e", mot_total)):
        with torch.device("meta"):
            model = Transformer(get_preset(name).model)
        assert sum(p.numel() for p in model.parameters()) == expected


LLAMA_PRESETS = {"llama-tiny-dense": "dense", "llama-tiny-mot": "mot", "llama-tiny-token-choice": "token_choice"}


@pytest.mark.parametrize("name", sorted(LLAMA_PRESETS))
def test_llama_style_presets_are_tiny_in_the_llama_block(name):
    preset, tiny = get_preset(name), get_preset(name.removeprefix("llama-"))
    cfg = preset.model
    assert (cfg.positions, cfg.norm, cfg.ffn_activation, cfg.n_kv_heads) == ("rope", "rmsnorm", "swiglu", 2)
    assert not cfg.dense_bias and not cfg.qk_norm and not cfg.tc_norm_topk_prob
    assert cfg.d_ff == 344  # 2/3 of tiny's 512, rounded to a multiple of 8: the FLOPs of tiny's ReLU layer
    shape = ("vocab_size", "max_seq_len", "d_model", "n_blocks", "n_heads", "ffn", "ffn_blocks", "group_size")
    assert all(getattr(cfg, field) == getattr(tiny.model, field) for field in shape)
    assert cfg.ffn == LLAMA_PRESETS[name] and preset.train == tiny.train
    if cfg.ffn != "dense":  # /8E: 8 experts of width d_ff, the FLOPs of one SwiGLU layer per token (MoT), top-1 (TC)
        assert (cfg.n_experts, cfg.expert_size, cfg.top_k) == (8, 344, 1)
    with torch.device("meta"):
        counts = count_model(Transformer(cfg))
    with torch.device("meta"):
        relu_counts = count_model(Transformer(tiny.model))
    # SwiGLU at 2/3 width keeps the FF FLOPs within 1%; two kv heads save a quarter of attention's weights
    d = cfg.d_model
    assert 3 * d * 344 == pytest.approx(2 * d * 512, rel=0.01)
    saved = cfg.n_blocks * (2 * d * d - 2 * d * (2 * d // cfg.n_heads))
    ff_extra = cfg.n_blocks * (3 * d * 344 - 2 * d * 512)
    assert counts.active_params_per_token == relu_counts.active_params_per_token - saved + ff_extra


def test_unknown_preset():
    with pytest.raises(ValueError, match="nope") as info:
        get_preset("nope")
    message = str(info.value)
    for name in PRESETS:
        assert name in message
