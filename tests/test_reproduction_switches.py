"""Reproduction switches for the authors' architecture and evaluation protocol (all off by default): no final
LayerNorm, the authors' embedding init, zero-shot contexts prefixed with eos, protocol rows max(32, G)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math

import pytest
import torch
from torch import nn

from mixture_of_tokens.checkpoint import CONFIG_FILE, MANIFEST_FILE, load_model, save_checkpoint
from mixture_of_tokens.cli import build_parser
from mixture_of_tokens.cli import eval as eval_cli
from mixture_of_tokens.cli.config_args import configs_from_args, overrides
from mixture_of_tokens.config import ModelConfig, TrainConfig
from mixture_of_tokens.evaluation import BatchPolicy, Request, Scorer, default_protocol_rows, resolve_policy
from mixture_of_tokens.inference_config import EvalConfig, ScoringConfig, config_from_strings
from mixture_of_tokens.layers.init import AUTHORS_EMBEDDING_BOUND
from mixture_of_tokens.model import LayerNorm, Transformer

VOCAB = 64


def small_config(**overrides) -> ModelConfig:
    base = dict(vocab_size=VOCAB, max_seq_len=12, d_model=16, n_blocks=2, n_heads=2, d_ff=32)
    return ModelConfig(**{**base, **overrides})


def build(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    return Transformer(small_config(**overrides)).double().eval()


# ----------------------------------------------------------------------------------------------- final norm


@pytest.mark.parametrize("final_norm", [True, False])
def test_final_norm_switch(final_norm):
    model = build(final_norm=final_norm)
    assert isinstance(model.final_norm, LayerNorm if final_norm else nn.Identity)
    assert any(name.startswith("final_norm.") for name in model.state_dict()) == final_norm
    last_block_output = {}
    model.blocks[-1].register_forward_hook(lambda module, inputs, output: last_block_output.update(x=output))
    ids = torch.randint(VOCAB, (3, 12))
    logits = model(ids).logits
    x = last_block_output["x"]
    if final_norm:
        weight, bias = model.final_norm.weight.float(), model.final_norm.bias.float()
        x = torch.nn.functional.layer_norm(x.float(), (16,), weight, bias, 1e-5).double()  # LayerNorm runs in fp32
    torch.testing.assert_close(logits, x @ model.head.weight.T, atol=1e-12, rtol=1e-12)


# ----------------------------------------------------------------------------------------------- embedding init


def truncated_std(std: float, bound: float) -> float:
    """Std of a normal of std `std` cut at +-bound."""
    a = bound / std
    pdf = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    return std * math.sqrt(1 - 2 * a * pdf / math.erf(a / math.sqrt(2)))


def test_authors_embedding_init_has_the_authors_effective_std():
    config = dict(vocab_size=8192, max_seq_len=512, d_model=64)
    authors = build(embedding_init="authors", **config)
    expected = truncated_std(math.sqrt(0.1), 0.2)
    assert expected == pytest.approx(0.112, abs=5e-4)
    for table in (authors.token_embedding.weight, authors.position_embedding.weight):
        assert table.abs().max() <= AUTHORS_EMBEDDING_BOUND
        assert table.std().item() == pytest.approx(expected, rel=0.01)
        assert table.mean().item() == pytest.approx(0.0, abs=3e-3)
    ours = build(**config)  # the default: fan-in d, std sqrt(0.1 / 64) = 0.040
    assert ours.token_embedding.weight.std().item() == pytest.approx(math.sqrt(0.1 / 64), rel=0.01)


def test_authors_embedding_init_changes_only_the_embeddings():
    """Every other weight keeps std sqrt(init_scale / fan_in)."""
    model = build(embedding_init="authors", d_model=64, d_ff=256, vocab_size=1024)
    for module in (model.head, model.blocks[0].attn.qkv, model.blocks[1].ffn.down):
        std = math.sqrt(0.1 / module.in_features)
        assert module.weight.std().item() == pytest.approx(std, rel=0.03)


def test_authors_embedding_init_follows_init_scale():
    model = build(embedding_init="authors", init_scale=0.02, vocab_size=8192)
    expected = truncated_std(math.sqrt(0.02), AUTHORS_EMBEDDING_BOUND)
    assert model.token_embedding.weight.std().item() == pytest.approx(expected, rel=0.01)


def test_invalid_embedding_init():
    with pytest.raises(ValueError, match="embedding_init='xavier' is not supported; allowed values: fan_in_d, authors"):
        small_config(embedding_init="xavier")


def test_switches_are_command_line_flags():
    parser = build_parser()
    args = parser.parse_args(
        ["train", "--preset", "tiny-dense", "--no-final-norm", "--embedding-init", "authors", "--load-balance-reduce",
         "mean"]
    )  # fmt: skip
    model, _ = configs_from_args(args)
    assert (model.final_norm, model.embedding_init, model.load_balance_reduce) == (False, "authors", "mean")
    defaults, _ = configs_from_args(parser.parse_args(["train", "--preset", "tiny-dense"]))
    assert (defaults.final_norm, defaults.embedding_init, defaults.load_balance_reduce) == (True, "fan_in_d", "sum")


class CharTokenizer:
    """A tiny tokenizer: one id per character (codes folded into the vocabulary), eos = VOCAB - 1."""

    vocab_size = VOCAB
    eos_id = VOCAB - 1
    name = "chars"

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [[ord(c) % (VOCAB - 1) for c in text] for text in texts]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)

    def fingerprint(self) -> str:
        return "chars"


def test_old_checkpoints_load_with_the_defaults(tmp_path):
    """A config.json written before these fields existed loads: the new fields take their defaults."""
    model = build()
    save_checkpoint(tmp_path, model, model.config, TrainConfig(), CharTokenizer())
    config = json.loads((tmp_path / CONFIG_FILE).read_text())
    new_fields = ("final_norm", "embedding_init", "load_balance_reduce")
    for name in new_fields:
        config["model"].pop(name)
    (tmp_path / CONFIG_FILE).write_text(json.dumps(config))
    manifest = json.loads((tmp_path / MANIFEST_FILE).read_text())
    del manifest["sha256"][CONFIG_FILE]  # written before config.json had a digest too
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    loaded, loaded_config, _ = load_model(tmp_path)
    assert dataclasses.asdict(loaded_config) == dataclasses.asdict(model.config)
    ids = torch.randint(VOCAB, (2, 12))
    torch.testing.assert_close(loaded.double()(ids).logits, model(ids).logits, atol=0, rtol=0)


# ----------------------------------------------------------------------------------------------- eos prefix


def test_prefix_eos_encoding():
    tokenizer = CharTokenizer()
    plain = Scorer(build(), tokenizer, BatchPolicy("plain"))
    prefixed = Scorer(build(), tokenizer, BatchPolicy("plain"), prefix_eos=True)
    context, continuation = plain.encode("The dog ", "slept")
    assert prefixed.encode("The dog ", "slept") == ([tokenizer.eos_id, *context], continuation)
    empty = ([tokenizer.eos_id], tokenizer.encode_batch([" river"])[0])
    assert prefixed.encode("", " river") == plain.encode("", " river") == empty  # eos once, not twice


def test_prefix_eos_scores_the_continuation_after_eos_and_context():
    tokenizer = CharTokenizer()
    model = build(max_seq_len=32)
    request = Request("Question: dogs?", " yes", ("t", 0, 0))
    scorer = Scorer(model, tokenizer, BatchPolicy("plain"), prefix_eos=True)
    score = scorer.score([request])[0]
    whole = [tokenizer.eos_id] + tokenizer.encode_batch([request.context + request.continuation])[0]
    with torch.no_grad():
        logprobs = torch.log_softmax(model(torch.tensor([whole[:-1]])).logits[0], dim=-1)
    n = len(request.continuation)
    expected = sum(float(logprobs[len(whole) - 1 - n + i, t]) for i, t in enumerate(whole[-n:]))
    assert score.n_tokens == n and score.logprob == pytest.approx(expected, abs=1e-9)
    unprefixed = Scorer(model, tokenizer, BatchPolicy("plain")).score([request])[0]
    assert unprefixed.logprob != pytest.approx(expected, abs=1e-6)


def test_mot_eval_flags():
    parser = argparse.ArgumentParser()
    eval_cli.register(parser.add_subparsers())
    args = parser.parse_args(["eval", "--checkpoint", "x"])
    config = EvalConfig(**overrides(args, EvalConfig))
    assert config.prefix_eos is False and config.protocol_rows == 0  # 0: the smallest multiple of G >= 32
    args = parser.parse_args(["eval", "--checkpoint", "x", "--prefix-eos", "--protocol-rows", "96"])
    config = EvalConfig(**overrides(args, EvalConfig))
    assert config.prefix_eos is True and config.protocol_rows == 96


def test_lm_eval_prefix_eos_model_arg():
    def prefix_eos(value):
        return config_from_strings(ScoringConfig, {"prefix_eos": value}).prefix_eos

    assert prefix_eos(True) is True and prefix_eos("True") is True
    assert prefix_eos("false") is False and prefix_eos(False) is False
    with pytest.raises(ValueError, match="prefix_eos='maybe' is not a boolean; allowed values: true, false"):
        prefix_eos("maybe")


# ----------------------------------------------------------------------------------------------- protocol rows


@pytest.mark.parametrize("group_size,rows", [(1, 32), (8, 32), (32, 32), (64, 64), (128, 128), (24, 48)])
def test_default_protocol_rows_is_max_32_g(group_size, rows):
    config = small_config(ffn="mot", group_size=group_size, n_experts=4, expert_size=16)
    assert default_protocol_rows(config) == rows
    policy = resolve_policy(config)
    assert policy.name == "protocol" and policy.rows == rows and policy.rows % group_size == 0


def test_explicit_protocol_rows_still_win_and_are_checked():
    config = small_config(ffn="mot", group_size=64, n_experts=4, expert_size=16)
    assert resolve_policy(config, rows=128).rows == 128
    with pytest.raises(ValueError, match="protocol-rows=32"):
        resolve_policy(config, rows=32)


# ----------------------------------------------------------------------------------------------- weight decay


def _decayed(optimizer: torch.optim.Optimizer) -> set[int]:
    return {id(p) for group in optimizer.param_groups if group["weight_decay"] > 0 for p in group["params"]}


def test_weight_decay_params_all_decays_every_parameter_as_the_authors_code():
    """matrices (default): tensors of dim >= 2 only; all: also biases, norm gains and the learnable log tau. With
    zero gradients one AdamW step moves only what decays, by the factor 1 - lr * weight_decay."""
    from mixture_of_tokens.training.step import build_optimizer

    model = build(ffn="mot", group_size=2, n_experts=2, expert_size=32, mot_learnable_temperature="per_expert")
    parameters = list(model.parameters())
    assert any(p.dim() < 2 for p in parameters)
    matrices = build_optimizer(model, TrainConfig(lr=0.5, weight_decay=0.1))
    every = build_optimizer(model, TrainConfig(lr=0.5, weight_decay=0.1, weight_decay_params="all"))
    assert _decayed(matrices) == {id(p) for p in parameters if p.dim() >= 2}
    assert _decayed(every) == {id(p) for p in parameters}
    gain = next(m.weight for m in model.modules() if isinstance(m, LayerNorm))
    tau = model.blocks[0].ffn.log_temperature
    with torch.no_grad():
        tau.fill_(0.5)
    for optimizer, factor in ((matrices, 1.0), (every, 1 - 0.5 * 0.1)):
        before = [gain.detach().clone(), tau.detach().clone()]
        for p in parameters:
            p.grad = torch.zeros_like(p)
        optimizer.step()
        torch.testing.assert_close(gain.detach(), before[0] * factor)
        torch.testing.assert_close(tau.detach(), before[1] * factor)
    with pytest.raises(ValueError, match="weight_decay_params='some' is not supported; allowed values: matrices, all"):
        TrainConfig(weight_decay_params="some")


def test_weight_decay_params_all_also_decays_what_a_switch_adds():
    """Expert Choice's output LayerNorm, added at a switch, joins the decaying group under `all` (not under
    matrices)."""
    from mixture_of_tokens.training.step import build_optimizer
    from mixture_of_tokens.training.switch import switch_in_place

    for rule, decays in (("matrices", False), ("all", True)):
        model = build(ffn="mot", group_size=2, n_experts=2, expert_size=32).float()
        optimizer = build_optimizer(model, TrainConfig(weight_decay_params=rule))
        switch_in_place(model, optimizer, "expert-choice")
        norm = model.blocks[0].ffn.norm
        assert (id(norm.weight) in _decayed(optimizer)) == decays, rule
        assert _decayed(optimizer) == {id(p) for p in model.parameters() if decays or p.dim() >= 2}


def test_a_setting_of_an_older_version_loads_under_its_new_name():
    """`mot_recompute: true/false` (before the compute selector) reads as mot_compute recompute / plain."""
    from mixture_of_tokens.checkpoint import saved_configs

    model = dataclasses.asdict(build().config)
    for old, new in ((True, "recompute"), (False, "plain")):
        fields = {k: v for k, v in model.items() if k != "mot_compute"} | {"mot_recompute": old}
        config, _ = saved_configs({"model": fields, "train": {}})
        assert config.mot_compute == new
