"""Named presets: small CPU runs (causal and masked LM) and one preset per result of the paper (docs/method.md §4),
grouped by figure."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .config import ModelConfig, TrainConfig
from .layers import sized_config
from .layers.sizing import feed_forward_width

CPU = "CPU presets (packaged corpus, minutes on 2 cores)"
CPU_CAPACITY = "CPU presets, capacity-bound (narrow models trained long: about 10-20 minutes a run on one core)"
CPU_MASKED = "CPU presets, masked LM (BERT-style; packaged corpus, minutes on 2 cores)"
CPU_LLAMA = (
    "CPU presets, Llama-style block (RoPE, RMSNorm, SwiGLU at 2/3 width, 2 kv heads, no biases; packaged corpus, "
    "minutes on 2 cores)"
)
FIG_EXPERTS = 'paper, Fig. "more experts": MoT-Medium with G = E in 8, 32, 128 against dense and uniform routing'
FIG_GRANULARITY = 'paper, Fig. "mixtures per expert": MoT-Medium/32E split k = 1, 8, 16, 32 ways'
FIG_SPARSE = 'paper, Fig. "vs sparse MoE": MoT-Medium/32E/16, Token Choice and Expert Choice at dense FLOPs, 100K steps'
FIG_BASE = 'paper, Fig. "Base": Transformer-Base, MoT-Base/32E, MoT-Base/64E/16'
TABLE_BF16 = "paper, bf16-only table: MoT-Medium/32E and Expert-Choice-Medium/32E, mixed precision and bf16-only"


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: ModelConfig
    train: TrainConfig
    figure: str = CPU
    """The figure or table of the paper this preset reproduces (or the CPU group)."""


def _mot(base: ModelConfig, size_name: str, ffn_blocks: str = "second-half", **fields: object) -> ModelConfig:
    """MoT "/nE" or "/nE/k" in the given blocks (the authors' 2024 runs: the second half)."""
    return sized_config(base, "mot", size=size_name, blocks=ffn_blocks, **fields)


def _sparse(
    base: ModelConfig, kind: str, n_experts: int, ffn_blocks: str = "second-half", **fields: object
) -> ModelConfig:
    """Token Choice / Expert Choice with n_experts experts of width d_ff in the given blocks ("/nE"): dense FLOPs
    with top-1 (Token Choice) or one token per expert per group of n_experts (Expert Choice)."""
    return sized_config(base, kind, size=f"/{n_experts}E", blocks=ffn_blocks, **fields)


_TINY = ModelConfig(vocab_size=8192, max_seq_len=128, d_model=128, n_blocks=4, n_heads=4, d_ff=512)
_TINY_TRAIN = TrainConfig(steps=400, batch_size=32, lr=3e-3, warmup_steps=40, eval_every=100, eval_batches=8)
_TINY_BERT = dataclasses.replace(_TINY, objective="masked")
# tiny-dense's shape in the Llama-style block: rotary positions, RMSNorm, SwiGLU of the FLOPs of tiny's ReLU layer
# (d_ff 344 = 2/3 of 512, rounded to a multiple of 8), grouped-query attention with 2 kv heads for 4 query heads,
# no biases.
_LLAMA_TINY = dataclasses.replace(
    _TINY, positions="rope", norm="rmsnorm", ffn_activation="swiglu", n_kv_heads=2, dense_bias=False,
    d_ff=feed_forward_width(_TINY.d_model, "swiglu"),
)  # fmt: skip
# The capacity-bound size of `mot compare --suite claims-capacity` (docs/compare.md): 2 x d_model 64, about 0.1M
# non-embedding parameters, 20.5M tokens (about 200 per dense non-embedding parameter, two passes over
# packaged+brown at BPE 1,024); every mixture in every block.
_NARROW = ModelConfig(vocab_size=1024, max_seq_len=64, d_model=64, n_blocks=2, n_heads=2, d_ff=256)
# The same shape in the Llama-style block (stage (e) of claims-capacity): one key/value head for the two query heads
_NARROW_LLAMA = dataclasses.replace(
    _NARROW, positions="rope", norm="rmsnorm", ffn_activation="swiglu", n_kv_heads=1, dense_bias=False,
    d_ff=feed_forward_width(_NARROW.d_model, "swiglu"),
)  # fmt: skip
_NARROW_TRAIN = TrainConfig(steps=5000, batch_size=64, lr=4e-3, warmup_steps=500, eval_every=500, eval_batches=32,
                            log_every=50, data="packaged+brown")  # fmt: skip
# Each narrow preset trains at the best rate claims-capacity measured for its model (docs/results/claims-capacity-cpu:
# dense, MoT /8E/4 and /32E/4 at tau = 0.1 4e-3; MoT /8E at tau = 1, Token Choice and Expert Choice 2e-3; in the
# Llama-style block dense 8e-3, MoT and Token Choice 4e-3), so a preset pair compares tuned models.
_NARROW_RATES = {
    "dense": 4e-3, "mot": 4e-3, "mot-32e-4": 4e-3, "mot-8e": 2e-3, "token-choice": 2e-3, "expert-choice": 2e-3,
    "llama-dense": 8e-3, "llama-mot": 4e-3, "llama-token-choice": 4e-3,
}  # fmt: skip


def _narrow_train(model: str) -> TrainConfig:
    return dataclasses.replace(_NARROW_TRAIN, lr=_NARROW_RATES[model])


# The paper's models: GPT-2 vocabulary, context 256; Token Choice (its own presets and the transition from MoT) as
# in the authors' paper-era code: the load-balancing loss averaged over its layers, and overflow dropped first come,
# first served in (example, position) order, C - 1 kept per expert.
_MEDIUM = ModelConfig(
    vocab_size=50257, max_seq_len=256, d_model=512, n_blocks=8, n_heads=8, d_ff=2048, load_balance_reduce="mean",
    tc_drop_rule="authors",
)  # fmt: skip
_BASE = dataclasses.replace(_MEDIUM, d_model=768, n_blocks=12, n_heads=12, d_ff=3072)

# The paper's text: Transformer-Medium 1e-3, Transformer-Base 4e-4; MoT and sparse MoE 7e-4 (Medium), 2e-4 (Base).
LR_DENSE_MEDIUM, LR_DENSE_BASE, LR_MOE_MEDIUM, LR_MOE_BASE = 1e-3, 4e-4, 7e-4, 2e-4


def _paper_train(lr: float, steps: int = 150_000, **fields: object) -> TrainConfig:
    """C4 with the GPT-2 tokenizer, batch 256 x 256, AdamW (0.9, 0.999), wd 0.1, cosine with 2,500 warmup steps to
    0.1x, clipping 0.5."""
    return TrainConfig(
        steps=steps,
        batch_size=256,
        lr=lr,
        warmup_steps=2500,
        min_lr_ratio=0.1,
        weight_decay=0.1,
        grad_clip=0.5,
        eval_every=1000,
        eval_batches=16,
        log_every=50,
        data="c4",
        tokenizer="gpt2",
        **fields,
    )


def _presets() -> list[Preset]:
    tiny_second_half = _mot(_TINY, "/8E")
    llama_second_half = _mot(_LLAMA_TINY, "/8E")
    medium_moe, base_moe = _paper_train(LR_MOE_MEDIUM), _paper_train(LR_MOE_BASE)
    sparse_steps = _paper_train(LR_MOE_MEDIUM, steps=100_000)
    return [
        Preset("tiny-dense", "4 x 128 dense Transformer, a few minutes on 2 CPU cores", _TINY, _TINY_TRAIN),
        Preset(
            "tiny-mot",
            "tiny-dense with MoT /8E (G = E = 8, full-width experts) in the second half of the blocks",
            tiny_second_half,
            _TINY_TRAIN,
        ),
        Preset(
            "tiny-token-choice",
            "tiny-mot's layout with Token Choice (Switch top-1, E = 8 experts of width d_ff, capacity 1.25, "
            "batch-wide routing, load balancing 0.01): the FLOPs of tiny-dense",
            dataclasses.replace(tiny_second_half, ffn="token_choice", tc_top_k=1),
            _TINY_TRAIN,
        ),
        Preset(
            "tiny-expert-choice",
            "tiny-mot's layout with Expert Choice (E = 8 experts of width d_ff, one token per expert per group of 8): "
            "the FLOPs of tiny-dense",
            dataclasses.replace(tiny_second_half, ffn="expert_choice", ec_tokens_per_expert=1),
            _TINY_TRAIN,
        ),
        Preset(
            "narrow-dense",
            "2 x 64 dense Transformer trained long (20.5M tokens)",
            _NARROW,
            _narrow_train("dense"),
            CPU_CAPACITY,
        ),
        Preset(
            "narrow-mot",
            "narrow-dense with MoT /8E/4 (32 experts of width d_ff / 4, groups of 8) at tau = 0.1 in every block: the "
            "best MoT of claims-capacity, ahead of narrow-dense",
            _mot(_NARROW, "/8E/4", ffn_blocks="all", mot_temperature=0.1),
            _narrow_train("mot"),
            CPU_CAPACITY,
        ),
        Preset(
            "narrow-mot-32e-4",
            "narrow-dense with MoT /32E/4 (128 experts of width d_ff / 4, groups of 32) at tau = 0.1 in every block: "
            "more and finer experts together (stage f of claims-capacity)",
            _mot(_NARROW, "/32E/4", ffn_blocks="all", mot_temperature=0.1),
            _narrow_train("mot-32e-4"),
            CPU_CAPACITY,
        ),
        Preset(
            "narrow-mot-8e",
            "narrow-dense with MoT /8E (G = E = 8, full-width experts) at the paper's tau = 1 in every block: behind "
            "narrow-dense at this size",
            _mot(_NARROW, "/8E", ffn_blocks="all"),
            _narrow_train("mot-8e"),
            CPU_CAPACITY,
        ),
        Preset(
            "narrow-token-choice",
            "narrow-dense with Token Choice top-1 over 8 experts of width d_ff in every block (capacity 1.25, load "
            "balancing 0.01): the capacity suite's positive control",
            _sparse(_NARROW, "token_choice", 8, ffn_blocks="all"),
            _narrow_train("token-choice"),
            CPU_CAPACITY,
        ),
        Preset(
            "narrow-expert-choice",
            "narrow-dense with Expert Choice in every block (8 experts of width d_ff, one token per expert per group "
            "of 8: MoT's sharp limit)",
            _sparse(_NARROW, "expert_choice", 8, ffn_blocks="all"),
            _narrow_train("expert-choice"),
            CPU_CAPACITY,
        ),
        Preset(
            "narrow-llama-dense",
            "narrow-dense in the Llama-style block (rotary positions, RMSNorm, SwiGLU, one key/value head)",
            _NARROW_LLAMA,
            _narrow_train("llama-dense"),
            CPU_CAPACITY,
        ),
        Preset(
            "narrow-llama-mot",
            "narrow-llama-dense with MoT /8E/4 (32 SwiGLU experts of width d_ff / 4) at tau = 0.1 in every block",
            _mot(_NARROW_LLAMA, "/8E/4", ffn_blocks="all", mot_temperature=0.1),
            _narrow_train("llama-mot"),
            CPU_CAPACITY,
        ),
        Preset(
            "narrow-llama-token-choice",
            "narrow-llama-dense with Token Choice top-1 over 8 SwiGLU experts of width d_ff in every block",
            _sparse(_NARROW_LLAMA, "token_choice", 8, ffn_blocks="all"),
            _narrow_train("llama-token-choice"),
            CPU_CAPACITY,
        ),
        Preset(
            "tiny-bert-dense",
            "tiny-dense as a BERT-style masked LM: bidirectional attention, 15% of the tokens masked (80% mask token, "
            "10% random, 10% kept), loss and accuracy on those",
            _TINY_BERT,
            _TINY_TRAIN,
            CPU_MASKED,
        ),
        Preset(
            "tiny-bert-mot",
            "tiny-bert-dense with MoT /8E in the second half, grouped across the batch (the same position of 8 "
            "consecutive examples)",
            _mot(_TINY_BERT, "/8E"),
            _TINY_TRAIN,
            CPU_MASKED,
        ),
        Preset(
            "tiny-bert-mot-seq",
            "tiny-bert-mot grouped within each sequence (8 consecutive positions of one sequence): no sequence "
            "depends on another; masked LM only",
            _mot(_TINY_BERT, "/8E", mot_group_axis="within_sequence"),
            _TINY_TRAIN,
            CPU_MASKED,
        ),
        Preset(
            "llama-tiny-dense",
            "tiny-dense in the Llama-style block (RoPE, RMSNorm, SwiGLU d_ff 344, 2 kv heads, no biases): "
            "exports natively as LlamaForCausalLM",
            _LLAMA_TINY,
            _TINY_TRAIN,
            CPU_LLAMA,
        ),
        Preset(
            "llama-tiny-mot",
            "llama-tiny-dense with MoT /8E (G = E = 8 SwiGLU experts of width d_ff) in the second half of the blocks",
            llama_second_half,
            _TINY_TRAIN,
            CPU_LLAMA,
        ),
        Preset(
            "llama-tiny-token-choice",
            "llama-tiny-mot's layout with Token Choice (Switch top-1 over 8 SwiGLU experts of width d_ff, capacity "
            "1.25, load balancing 0.01): the FLOPs of llama-tiny-dense; exports natively as Qwen2MoeForCausalLM",
            dataclasses.replace(llama_second_half, ffn="token_choice", tc_top_k=1),
            _TINY_TRAIN,
            CPU_LLAMA,
        ),
        # Fig. "more experts"
        Preset("transformer-medium", "Transformer-Medium", _MEDIUM, _paper_train(LR_DENSE_MEDIUM), FIG_EXPERTS),
        Preset("mot-medium-8e", "MoT-Medium/8E", _mot(_MEDIUM, "/8E"), medium_moe, FIG_EXPERTS),
        Preset("mot-medium-32e", "MoT-Medium/32E (= /32E/1)", _mot(_MEDIUM, "/32E"), medium_moe, FIG_EXPERTS),
        Preset("mot-medium-128e", "MoT-Medium/128E", _mot(_MEDIUM, "/128E"), medium_moe, FIG_EXPERTS),
        Preset(
            "mot-medium-32e-uniform",
            "MoT-Medium/32E with uniform routing (every merge weight 1/G: plain averaging)",
            _mot(_MEDIUM, "/32E", mot_routing="uniform"),
            medium_moe,
            FIG_EXPERTS,
        ),
        # Fig. "mixtures per expert" (its /32E/1 is mot-medium-32e)
        Preset("mot-medium-32e-8", "MoT-Medium/32E/8", _mot(_MEDIUM, "/32E/8"), medium_moe, FIG_GRANULARITY),
        Preset("mot-medium-32e-16", "MoT-Medium/32E/16", _mot(_MEDIUM, "/32E/16"), medium_moe, FIG_GRANULARITY),
        Preset("mot-medium-32e-32", "MoT-Medium/32E/32", _mot(_MEDIUM, "/32E/32"), medium_moe, FIG_GRANULARITY),
        # Fig. "vs sparse MoE"
        Preset(
            "sparse-mot-medium-32e-16",
            "MoT-Medium/32E/16 on the sparse comparison's 100K steps",
            _mot(_MEDIUM, "/32E/16"),
            sparse_steps,
            FIG_SPARSE,
        ),
        Preset(
            "token-choice-medium",
            "Token Choice Medium: top-1 over 32 experts of width d_ff, capacity 1.25, load balancing 0.01",
            _sparse(_MEDIUM, "token_choice", 32, tc_top_k=1, tc_capacity_factor=1.25, tc_load_balance_weight=0.01),
            sparse_steps,
            FIG_SPARSE,
        ),
        Preset(
            "expert-choice-medium",
            "Expert Choice Medium: 32 experts of width d_ff, one token per expert per group of 32",
            _sparse(_MEDIUM, "expert_choice", 32, ec_tokens_per_expert=1),
            sparse_steps,
            FIG_SPARSE,
        ),
        # Fig. "Base"
        Preset("transformer-base", "Transformer-Base", _BASE, _paper_train(LR_DENSE_BASE), FIG_BASE),
        Preset("mot-base-32e", "MoT-Base/32E", _mot(_BASE, "/32E"), base_moe, FIG_BASE),
        Preset(
            "mot-base-64e-16",
            "MoT-Base/64E/16 by the paper's naming rule (E = 1024 experts of width 192); the authors' config file "
            "has E = 2048 experts of width 96 instead",
            _mot(_BASE, "/64E/16"),
            base_moe,
            FIG_BASE,
        ),
        # bf16-only table
        Preset(
            "mot-medium-32e-bf16-mixed",
            "MoT-Medium/32E, bf16 autocast with fp32 weights",
            _mot(_MEDIUM, "/32E"),
            dataclasses.replace(medium_moe, precision="bf16-mixed"),
            TABLE_BF16,
        ),
        Preset(
            "mot-medium-32e-bf16-only",
            "MoT-Medium/32E, parameters and optimizer state in bf16 (LayerNorms kept in fp32)",
            _mot(_MEDIUM, "/32E"),
            dataclasses.replace(medium_moe, precision="bf16-pure"),
            TABLE_BF16,
        ),
        Preset(
            "expert-choice-medium-32e-bf16-mixed",
            "Expert-Choice-Medium/32E, bf16 autocast with fp32 weights",
            _sparse(_MEDIUM, "expert_choice", 32),
            dataclasses.replace(medium_moe, precision="bf16-mixed"),
            TABLE_BF16,
        ),
        Preset(
            "expert-choice-medium-32e-bf16-only",
            "Expert-Choice-Medium/32E, parameters and optimizer state in bf16 (LayerNorms kept in fp32)",
            _sparse(_MEDIUM, "expert_choice", 32),
            dataclasses.replace(medium_moe, precision="bf16-pure"),
            TABLE_BF16,
        ),
    ]


PRESETS: dict[str, Preset] = {preset.name: preset for preset in _presets()}


def presets_by_figure() -> dict[str, list[Preset]]:
    """The presets grouped by the figure or table they reproduce, in order."""
    groups: dict[str, list[Preset]] = {}
    for preset in PRESETS.values():
        groups.setdefault(preset.figure, []).append(preset)
    return groups


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} is unknown; allowed values: {', '.join(PRESETS)}.")
    return PRESETS[name]
