"""The paper's presets are pinned: every field of each paper preset's ModelConfig and TrainConfig equals the values
written here (copied from the presets on 2026-05, after Token Choice's authors' drop rule entered them). A field
added later must be off by default: the paper presets hold its default. Changing a paper preset means changing
this file on purpose."""

from __future__ import annotations

import dataclasses

import pytest

from mixture_of_tokens.config import ModelConfig, TrainConfig
from mixture_of_tokens.presets import PRESETS

# The defaults of the fields that existed when the presets were pinned, and each paper preset's other values.
# fmt: off
MODEL_DEFAULTS = {
    "vocab_size": 8192, "max_seq_len": 128, "d_model": 128, "n_blocks": 4, "n_heads": 4, "d_ff": 512,
    "objective": "causal", "ffn": "dense", "ffn_blocks": "all", "group_size": 8, "n_experts": 8, "expert_size": 512,
    "mot_temperature": 1.0, "mot_temperature_schedule": "constant", "mot_temperature_final": 0.0,
    "mot_temperature_anneal_steps": 0, "mot_learnable_temperature": "none", "mot_routing": "softmax",
    "mot_discrete_rule": "project", "mot_emit": "group", "mot_separate_emit_controller": False,
    "mot_grouping": "consecutive", "mot_group_axis": "across_batch", "mot_compute": "plain",
    "mot_temperature_freeze_steps": 0, "tc_top_k": 1, "tc_capacity_factor": 1.25, "tc_drop_rule": "probability",
    "tc_scope": "batch", "tc_load_balance_weight": 0.01, "tc_z_loss_weight": 0.0, "load_balance_reduce": "sum",
    "ec_tokens_per_expert": 1, "expert_dispatch": "auto", "tie_embeddings": False, "init_scale": 0.1,
    "final_norm": True, "embedding_init": "fan_in_d", "positions": "learned", "rope_base": 10000.0,
    "norm": "layernorm", "norm_eps": 1e-05, "ffn_activation": "relu", "n_kv_heads": 0, "qk_norm": False,
    "dense_bias": True, "tc_norm_topk_prob": False,
}
TRAIN_DEFAULTS = {
    "steps": 400, "batch_size": 32, "lr": 0.003, "min_lr_ratio": 0.1, "warmup_steps": 40, "lr_schedule_offset": 0,
    "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.999, "grad_clip": 0.5, "eval_every": 100, "eval_batches": 8,
    "log_every": 10, "seed": 0, "data": "packaged", "tokenizer": "bpe", "text_column": "text", "device": "auto",
    "out_dir": "", "threads": 0, "precision": "auto", "grad_accum_steps": 1, "parallel": "ddp",
    "checkpoint_every": 0, "keep_checkpoints": 2, "compile": None, "deterministic": False, "tensorboard": False,
    "collapse_share": 0.5, "collapse_patience": 100, "switch_to": "", "switch_at": 0, "eval_also": "",
}
PAPER_PRESETS = {
    "transformer-medium": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.001, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2",
        },
    ),
    "mot-medium-8e": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "ffn": "mot", "ffn_blocks": "second-half", "expert_size": 2048, "tc_drop_rule": "authors",
            "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.0007, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2",
        },
    ),
    "mot-medium-32e": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "ffn": "mot", "ffn_blocks": "second-half", "group_size": 32, "n_experts": 32, "expert_size": 2048,
            "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.0007, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2",
        },
    ),
    "mot-medium-128e": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "ffn": "mot", "ffn_blocks": "second-half", "group_size": 128, "n_experts": 128, "expert_size": 2048,
            "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.0007, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2",
        },
    ),
    "mot-medium-32e-uniform": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "ffn": "mot", "ffn_blocks": "second-half", "group_size": 32, "n_experts": 32, "expert_size": 2048,
            "mot_routing": "uniform", "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.0007, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2",
        },
    ),
    "mot-medium-32e-8": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "ffn": "mot", "ffn_blocks": "second-half", "group_size": 32, "n_experts": 256, "expert_size": 256,
            "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.0007, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2",
        },
    ),
    "mot-medium-32e-16": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "ffn": "mot", "ffn_blocks": "second-half", "group_size": 32, "n_experts": 512, "expert_size": 128,
            "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.0007, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2",
        },
    ),
    "mot-medium-32e-32": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "ffn": "mot", "ffn_blocks": "second-half", "group_size": 32, "n_experts": 1024, "expert_size": 64,
            "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.0007, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2",
        },
    ),
    "sparse-mot-medium-32e-16": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "ffn": "mot", "ffn_blocks": "second-half", "group_size": 32, "n_experts": 512, "expert_size": 128,
            "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 100000, "batch_size": 256, "lr": 0.0007, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2",
        },
    ),
    "token-choice-medium": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "ffn": "token_choice", "ffn_blocks": "second-half", "group_size": 32, "n_experts": 32,
            "expert_size": 2048, "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 100000, "batch_size": 256, "lr": 0.0007, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2",
        },
    ),
    "expert-choice-medium": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "ffn": "expert_choice", "ffn_blocks": "second-half", "group_size": 32, "n_experts": 32,
            "expert_size": 2048, "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 100000, "batch_size": 256, "lr": 0.0007, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2",
        },
    ),
    "transformer-base": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 768, "n_blocks": 12, "n_heads": 12, "d_ff": 3072,
            "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.0004, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2",
        },
    ),
    "mot-base-32e": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 768, "n_blocks": 12, "n_heads": 12, "d_ff": 3072,
            "ffn": "mot", "ffn_blocks": "second-half", "group_size": 32, "n_experts": 32, "expert_size": 3072,
            "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.0002, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2",
        },
    ),
    "mot-base-64e-16": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 768, "n_blocks": 12, "n_heads": 12, "d_ff": 3072,
            "ffn": "mot", "ffn_blocks": "second-half", "group_size": 64, "n_experts": 1024, "expert_size": 192,
            "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.0002, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2",
        },
    ),
    "mot-medium-32e-bf16-mixed": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "ffn": "mot", "ffn_blocks": "second-half", "group_size": 32, "n_experts": 32, "expert_size": 2048,
            "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.0007, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2", "precision": "bf16-mixed",
        },
    ),
    "mot-medium-32e-bf16-only": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "ffn": "mot", "ffn_blocks": "second-half", "group_size": 32, "n_experts": 32, "expert_size": 2048,
            "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.0007, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2", "precision": "bf16-pure",
        },
    ),
    "expert-choice-medium-32e-bf16-mixed": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "ffn": "expert_choice", "ffn_blocks": "second-half", "group_size": 32, "n_experts": 32,
            "expert_size": 2048, "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.0007, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2", "precision": "bf16-mixed",
        },
    ),
    "expert-choice-medium-32e-bf16-only": (
        {
            "vocab_size": 50257, "max_seq_len": 256, "d_model": 512, "n_blocks": 8, "n_heads": 8, "d_ff": 2048,
            "ffn": "expert_choice", "ffn_blocks": "second-half", "group_size": 32, "n_experts": 32,
            "expert_size": 2048, "tc_drop_rule": "authors", "load_balance_reduce": "mean",
        },
        {
            "steps": 150000, "batch_size": 256, "lr": 0.0007, "warmup_steps": 2500, "eval_every": 1000,
            "eval_batches": 16, "log_every": 50, "data": "c4", "tokenizer": "gpt2", "precision": "bf16-pure",
        },
    ),
}
# fmt: on


def _expected(pinned: dict, defaults: dict, config_class: type) -> dict:
    """The pinned values over the pinned defaults; a field added since holds its current default."""
    current = {f.name: f.default for f in dataclasses.fields(config_class)}
    removed = set(defaults) - set(current)
    assert not removed, f"fields of the pinned paper presets were removed: {sorted(removed)}"
    return {**current, **defaults, **pinned}


def test_every_paper_preset_is_pinned():
    paper = {name for name, preset in PRESETS.items() if not preset.figure.startswith("CPU")}
    assert paper == set(PAPER_PRESETS)


@pytest.mark.parametrize("name", sorted(PAPER_PRESETS))
def test_paper_preset_equals_its_pinned_values(name):
    model, train = PAPER_PRESETS[name]
    preset = PRESETS[name]
    assert dataclasses.asdict(preset.model) == _expected(model, MODEL_DEFAULTS, ModelConfig)
    assert dataclasses.asdict(preset.train) == _expected(train, TRAIN_DEFAULTS, TrainConfig)
