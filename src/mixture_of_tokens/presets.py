"""Named presets: small CPU runs and the paper's table (docs/method.md §4)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .config import ModelConfig, TrainConfig
from .layers import ExpertChoice, MixtureOfTokens, TokenChoice, mot_sizing


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    model: ModelConfig
    train: TrainConfig


def _mot(base: ModelConfig, size_name: str, ffn_blocks: str) -> ModelConfig:
    sizing = mot_sizing(size_name, base.d_ff)
    return dataclasses.replace(
        base,
        ffn=MixtureOfTokens.kind,
        ffn_blocks=ffn_blocks,
        group_size=sizing.group_size,
        n_experts=sizing.n_experts,
        expert_size=sizing.expert_size,
    )


_TINY = ModelConfig(vocab_size=8192, max_seq_len=128, d_model=128, n_blocks=4, n_heads=4, d_ff=512)
_TINY_TRAIN = TrainConfig(steps=400, batch_size=32, lr=3e-3, warmup_steps=40, eval_every=100, eval_batches=8)
_MEDIUM = ModelConfig(vocab_size=50257, max_seq_len=256, d_model=512, n_blocks=8, n_heads=8, d_ff=2048)
_BASE = ModelConfig(vocab_size=50257, max_seq_len=256, d_model=768, n_blocks=12, n_heads=12, d_ff=3072)


def _paper_train(lr: float) -> TrainConfig:
    return TrainConfig(
        steps=150_000, batch_size=256, lr=lr, warmup_steps=2500, eval_every=1000, eval_batches=16, log_every=50
    )


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset("tiny-dense", "4 x 128 dense Transformer, a few minutes on 2 CPU cores", _TINY, _TINY_TRAIN),
        Preset(
            "tiny-mot",
            "tiny-dense with MoT /8E (G = E = 8, full-width experts) in the second half of the blocks",
            _mot(_TINY, "/8E", "second-half"),
            _TINY_TRAIN,
        ),
        Preset(
            "tiny-token-choice",
            "tiny-mot's layout with Token Choice (Switch top-1, E = 8 experts of width d_ff, capacity 1.25, "
            "batch-wide routing, load balancing 0.01): the FLOPs of tiny-dense",
            dataclasses.replace(_mot(_TINY, "/8E", "second-half"), ffn=TokenChoice.kind, top_k=1),
            _TINY_TRAIN,
        ),
        Preset(
            "tiny-expert-choice",
            "tiny-mot's layout with Expert Choice (E = 8 experts of width d_ff, one token per expert per group of 8): "
            "the FLOPs of tiny-dense",
            dataclasses.replace(_mot(_TINY, "/8E", "second-half"), ffn=ExpertChoice.kind, ec_tokens_per_expert=1),
            _TINY_TRAIN,
        ),
        Preset("transformer-medium", "paper: Transformer-Medium", _MEDIUM, _paper_train(7e-4)),
        Preset("mot-medium-32e", "paper: MoT-Medium/32E", _mot(_MEDIUM, "/32E", "second-half"), _paper_train(7e-4)),
        Preset(
            "mot-medium-32e-8", "paper: MoT-Medium/32E/8", _mot(_MEDIUM, "/32E/8", "second-half"), _paper_train(7e-4)
        ),
        Preset(
            "mot-medium-32e-16",
            "paper: MoT-Medium/32E/16",
            _mot(_MEDIUM, "/32E/16", "second-half"),
            _paper_train(7e-4),
        ),
        Preset("transformer-base", "paper: Transformer-Base", _BASE, _paper_train(4e-4)),
        Preset("mot-base-32e", "paper: MoT-Base/32E", _mot(_BASE, "/32E", "second-half"), _paper_train(2e-4)),
        Preset("mot-base-64e-16", "paper: MoT-Base/64E/16", _mot(_BASE, "/64E/16", "second-half"), _paper_train(2e-4)),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} is unknown; allowed values: {', '.join(PRESETS)}.")
    return PRESETS[name]
