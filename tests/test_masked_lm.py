"""The masked objective (issue 14): BERT masking statistics and determinism, the masked-LM loss, the refusals of
what only a causal model can do, the presets, and a trained masked checkpoint through load, `mot eval` and
`mot audit`."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus import write_corpus
from helpers import build_model, tiny_model_config, tiny_train_config

from mixture_of_tokens.audit import audit_model
from mixture_of_tokens.checkpoint import load_model, load_tokenizer
from mixture_of_tokens.cli import main
from mixture_of_tokens.cli.train import next_steps
from mixture_of_tokens.config import ModelConfig
from mixture_of_tokens.data import BatchSampler, eval_batches, prepare_data
from mixture_of_tokens.data.masking import (
    IGNORE_INDEX,
    MASK_RATE,
    MASK_TOKEN_SHARE,
    RANDOM_TOKEN_SHARE,
    mask_tokens,
)
from mixture_of_tokens.evaluation import Scorer, evaluate_loss, resolve_policy
from mixture_of_tokens.evaluation.lm_eval_adapter import MoTBackend
from mixture_of_tokens.generate import generate_tokens
from mixture_of_tokens.inference import Predictor
from mixture_of_tokens.layers import MixtureOfTokens
from mixture_of_tokens.model import KVCache
from mixture_of_tokens.presets import get_preset
from mixture_of_tokens.training.loop import train

MASKED_SEQ = dict(objective="masked", mot_group_axis="within_sequence")


def within(observed: float, expected: float, n: int, sigmas: float = 5.0) -> bool:
    """|observed - expected| within `sigmas` binomial standard deviations of a share over n trials."""
    return abs(observed - expected) <= sigmas * math.sqrt(expected * (1 - expected) / n)


# --------------------------------------------------------------------------------------------------- masking


def test_masking_follows_the_bert_rule_over_many_draws():
    vocab, shape, draws = 1000, (64, 128), 40
    tokens = torch.from_numpy(np.random.default_rng(0).integers(0, vocab, size=shape))
    selected = masked = randomised = kept = total = 0
    for draw in range(draws):
        inputs, labels = mask_tokens(tokens, mask_token_id=vocab, rng=np.random.default_rng([7, draw]))
        chosen = labels != IGNORE_INDEX
        assert torch.equal(labels[chosen], tokens[chosen])  # the label of a selected position is its own token
        assert torch.equal(inputs[~chosen], tokens[~chosen])  # unselected positions are untouched
        assert int(inputs.max()) <= vocab and int(inputs.min()) >= 0
        selected += int(chosen.sum())
        masked += int((inputs[chosen] == vocab).sum())
        kept += int((inputs[chosen] == tokens[chosen]).sum())
        randomised += int(((inputs[chosen] != vocab) & (inputs[chosen] != tokens[chosen])).sum())
        total += tokens.numel()
    assert masked + kept + randomised == selected
    assert within(selected / total, MASK_RATE, total)
    # a random replacement draws the original token again with probability 1 / vocab: it then reads as kept
    random_share = RANDOM_TOKEN_SHARE * (1 - 1 / vocab)
    assert within(masked / selected, MASK_TOKEN_SHARE, selected)
    assert within(randomised / selected, random_share, selected)
    assert within(kept / selected, 1 - MASK_TOKEN_SHARE - random_share, selected)


def test_random_replacements_are_uniform_over_the_vocabulary_and_never_the_mask():
    vocab = 10
    tokens = torch.zeros(256, 256, dtype=torch.int64)
    inputs, labels = mask_tokens(tokens, mask_token_id=vocab, rng=np.random.default_rng(3))
    replaced = inputs[(labels != IGNORE_INDEX) & (inputs != vocab)]
    counts = torch.bincount(replaced, minlength=vocab).double()
    n = float(counts.sum())
    # id 0 also collects the kept positions; ids 1..9 only random replacements, each 1/vocab of them
    n_random = n / (1 + (1 - MASK_TOKEN_SHARE - RANDOM_TOKEN_SHARE) / RANDOM_TOKEN_SHARE)
    for token in range(1, vocab):
        assert within(float(counts[token]) / n_random, 1 / vocab, round(n_random))


def test_masking_is_reproducible_and_refuses_a_mask_inside_the_vocabulary():
    tokens = torch.arange(40).view(2, 20)
    first = mask_tokens(tokens, mask_token_id=50, rng=np.random.default_rng(1))
    again = mask_tokens(tokens, mask_token_id=50, rng=np.random.default_rng(1))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    with pytest.raises(ValueError, match="first id after the tokenizer's vocabulary"):
        mask_tokens(tokens, mask_token_id=39, rng=np.random.default_rng(1))


def test_training_masks_resume_by_step_and_read_the_causal_windows():
    tokens = np.random.default_rng(0).integers(0, 100, size=5000)
    sampler = BatchSampler(tokens, 4, 16, seed=5, mask_token_id=100)
    batches = [sampler.next_batch() for _ in range(3)]
    resumed = BatchSampler(tokens, 4, 16, seed=5, mask_token_id=100)
    resumed.load_state_dict(sampler.state_dict() | {"step": 2})
    assert all(torch.equal(a, b) for a, b in zip(resumed.next_batch(), batches[2], strict=True))
    assert not torch.equal(batches[0][1], batches[1][1])  # a fresh mask every step
    causal_inputs, _ = BatchSampler(tokens, 4, 16, seed=5).next_batch()
    inputs, labels = batches[0]
    original = torch.where(labels != IGNORE_INDEX, labels, inputs)
    assert torch.equal(original, causal_inputs)  # the same text as the causal objective's inputs, no shift


def test_held_out_masks_are_fixed():
    tokens = np.random.default_rng(0).integers(0, 100, size=5000)
    first = eval_batches(tokens, 4, 16, 3, mask_token_id=100)
    second = eval_batches(tokens, 4, 16, 3, mask_token_id=100)
    assert len(first) == 3
    for (a_in, a_lab), (b_in, b_lab) in zip(first, second, strict=True):
        assert torch.equal(a_in, b_in) and torch.equal(a_lab, b_lab)
        assert bool((a_lab != IGNORE_INDEX).any())


# ------------------------------------------------------------------------------------------------------ model


def masked_batch(config: ModelConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    tokens = torch.randint(config.vocab_size, (8, config.max_seq_len), generator=generator)
    return mask_tokens(tokens, mask_token_id=config.mask_token_id, rng=np.random.default_rng(seed))


def test_the_loss_counts_masked_positions_only():
    config = tiny_model_config(**MASKED_SEQ)
    model = build_model(config).double()
    inputs, labels = masked_batch(config)
    out = model(inputs, labels)
    scored = labels != IGNORE_INDEX
    log_probs = torch.log_softmax(out.logits.double(), dim=-1)
    by_hand = -log_probs[scored].gather(-1, labels[scored][:, None]).mean()
    torch.testing.assert_close(out.lm_loss.double(), by_hand)
    logits = out.logits.detach().requires_grad_(True)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)
    (grad,) = torch.autograd.grad(loss, logits)
    assert bool((grad[~scored] == 0).all()) and bool((grad[scored] != 0).any())
    # changing what an unscored position's label would have been changes nothing; scoring it does
    other = torch.where(scored, labels, torch.full_like(labels, IGNORE_INDEX))
    with torch.no_grad():
        assert float(model(inputs, other).lm_loss) == float(out.lm_loss)
        other[0, (~scored[0]).nonzero()[0, 0]] = 1
        assert float(model(inputs, other).lm_loss) != float(out.lm_loss)


def test_a_batch_without_masked_positions_has_zero_loss_not_nan():
    config = tiny_model_config(objective="masked")
    inputs = torch.randint(config.vocab_size, (8, config.max_seq_len))
    with torch.no_grad():
        out = build_model(config)(inputs, torch.full_like(inputs, IGNORE_INDEX))
    assert float(out.lm_loss) == 0.0


def test_masked_models_attend_both_ways_and_embed_the_mask_token():
    causal = build_model(tiny_model_config(ffn="dense"))
    masked = build_model(tiny_model_config(ffn="dense", objective="masked"))
    assert masked.token_embedding.num_embeddings == masked.head.out_features == 301
    assert causal.token_embedding.num_embeddings == 300
    ids = torch.randint(300, (4, 32))
    moved = ids.clone()
    moved[:, -1] = (ids[:, -1] + 1) % 300
    with torch.no_grad():
        assert torch.equal(causal(ids).logits[:, :-1], causal(moved).logits[:, :-1])
        assert not torch.allclose(masked(ids).logits[:, 0], masked(moved).logits[:, 0])
        masked(torch.full((4, 32), 300))  # the mask token id is a valid input
    assert causal.is_causal() and not masked.is_causal()


# -------------------------------------------------------------------------------------------------- refusals


def test_within_sequence_groups_under_causal_attention_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="future tokens") as info:
        tiny_model_config(mot_group_axis="within_sequence")
    assert str(info.value).count(". ") == 0  # one sentence
    with pytest.raises(ValueError, match=r"must divide the sequence length 32.*\[1, 2, 4, 8, 16, 32\]"):
        tiny_model_config(**MASKED_SEQ, group_size=3, n_experts=3)
    with pytest.raises(ValueError, match="objective='bert' is not supported; allowed values: causal, masked"):
        tiny_model_config(objective="bert")
    with pytest.raises(ValueError, match="allowed values: across_batch, within_sequence"):
        tiny_model_config(objective="masked", mot_group_axis="sequence")
    with pytest.raises(ValueError, match="allowed value is consecutive"):
        tiny_model_config(**MASKED_SEQ, mot_grouping="random")


def test_mot_train_refuses_within_sequence_causal_before_any_compute(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOT_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["train", "--preset", "tiny-bert-mot-seq", "--objective", "causal", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "future tokens" in err
    assert not (tmp_path / "cache").exists() and not (tmp_path / "runs").exists()


def test_causal_only_uses_refuse_a_masked_model_in_one_sentence():
    model = build_model(tiny_model_config(objective="masked")).eval()
    with pytest.raises(ValueError, match="generation needs next-token probabilities.*`mot eval`"):
        generate_tokens(model, [[1, 2, 3]] * 4, max_new_tokens=2)
    with pytest.raises(ValueError, match="KV cache"):
        model(torch.zeros(4, 1, dtype=torch.long), cache=KVCache(model.config.n_blocks))
    dense = build_model(tiny_model_config(ffn="dense", objective="masked")).eval()
    with pytest.raises(ValueError, match="log-likelihood scoring"):
        Scorer(dense, object(), resolve_policy(dense.config, "plain"))
    with pytest.raises(ValueError, match="Predictor"):
        Predictor(model, object())


# --------------------------------------------------------------------------------------------------- presets


def test_bert_presets():
    dense, mot, seq = (get_preset(n) for n in ("tiny-bert-dense", "tiny-bert-mot", "tiny-bert-mot-seq"))
    for preset in (dense, mot, seq):
        assert preset.model.objective == "masked" and preset.figure.startswith("CPU presets, masked LM")
        assert (preset.train.data, preset.train.tokenizer) == ("packaged", "bpe")
        assert preset.train == get_preset("tiny-dense").train
    assert dense.model == dataclasses.replace(get_preset("tiny-dense").model, objective="masked")
    assert mot.model == dataclasses.replace(get_preset("tiny-mot").model, objective="masked")
    assert (mot.model.ffn, mot.model.mot_group_axis) == (MixtureOfTokens.kind, "across_batch")
    assert seq.model == dataclasses.replace(mot.model, mot_group_axis="within_sequence")
    assert MixtureOfTokens.batch_multiple(seq.model) == 1 and not MixtureOfTokens.rows_couple_at_inference(seq.model)


# ------------------------------------------------------------------------------------- a trained masked run


@pytest.fixture(scope="module")
def masked_run(module_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("masked")
    source = f"text:{write_corpus(root / 'corpus', n_documents=20)}"
    model_config = tiny_model_config(**MASKED_SEQ)
    train_config = tiny_train_config(source, root / "run", steps=4, eval_every=4)
    result = train(model_config, train_config, run_name="masked", progress=False)
    return {"root": root, "source": source, "result": result, "run": root / "run"}


def test_a_checkpoint_round_trips_the_objective_and_its_eval_loss(masked_run):
    model, model_config, train_config = load_model(masked_run["run"])
    assert (model_config.objective, model_config.mot_group_axis) == ("masked", "within_sequence")
    tokenizer = load_tokenizer(masked_run["run"])
    assert model_config.vocab_size == tokenizer.vocab_size
    assert model.token_embedding.num_embeddings == tokenizer.vocab_size + 1
    data = prepare_data(masked_run["source"], vocab_size=model_config.vocab_size, progress=False)
    batches = eval_batches(
        data.eval_tokens, train_config.batch_size, model_config.max_seq_len, train_config.eval_batches,
        mask_token_id=model_config.mask_token_id,
    )  # fmt: skip
    loss = evaluate_loss(model, batches, torch.device("cpu"))
    assert loss == pytest.approx(masked_run["result"].final_eval_loss, rel=1e-5)
    reloaded, _, _ = load_model(masked_run["run"])
    inputs, _ = batches[0]
    with torch.no_grad():
        assert torch.equal(model(inputs).logits, reloaded(inputs).logits)


def test_mot_eval_reports_masked_loss_and_accuracy(masked_run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(masked_run["run"]), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "masked positions" in printed and "accuracy" in printed
    results = json.loads(out.read_text())["perplexity"]
    trained = results[0]
    assert trained["loss"] == pytest.approx(masked_run["result"].final_eval_loss, rel=1e-5)
    assert 0.0 <= trained["accuracy"] <= 1.0
    assert 0 < trained["tokens"] < 2 * 8 * 32  # masked positions only
    group_sizes = {r["group_size"] for r in results} - {None}
    assert group_sizes and all(32 % g == 0 for g in group_sizes)  # other group sizes tile the sequence


@pytest.mark.parametrize(
    "command",
    [["eval", "--tasks", "piqa"], ["generate", "--prompt", "The cat"]],
    ids=["zero-shot", "generate"],
)
def test_cli_refuses_causal_only_commands_for_a_masked_checkpoint(masked_run, command, capsys):
    name, *rest = command
    assert main([name, "--checkpoint", str(masked_run["run"]), *rest]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "masked language model" in err


def test_mot_train_offers_a_masked_run_eval_and_not_generate(masked_run):
    lines = next_steps(masked_run["run"], generates=False)
    assert "mot eval --checkpoint" in lines and "mot generate" not in lines
    assert "mot generate" in next_steps(masked_run["run"])


def test_python_and_lm_eval_entry_points_refuse_a_masked_checkpoint(masked_run):
    with pytest.raises(ValueError, match="the lm-eval adapter needs next-token probabilities"):
        MoTBackend(str(masked_run["run"]), device="cpu")
    with pytest.raises(ValueError, match="Predictor"):
        Predictor(masked_run["run"])


def test_audit_of_a_masked_model_expects_no_causality(masked_run):
    model, _, _ = load_model(masked_run["run"])
    result = audit_model(model, batch=4, seq_len=16, sequence=1, position=9)
    assert not result.expected_causal and result.future_leak
    assert result.coupling == "none"  # within-sequence groups and attention stay inside the sequence
