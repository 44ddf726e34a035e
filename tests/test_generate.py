"""KV-cached lock-step decoding: cached logits equal a full forward at every step (dense and MoT, float64),
forced prompt tokens, filler rows, sampling options, and `mot generate`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import EVAL_VOCAB, TASK_FIXTURES, eval_model, make_checkpoint

from mixture_of_tokens.cli import main
from mixture_of_tokens.generate import generate_tokens, sample_next
from mixture_of_tokens.model import KVCache, ModelOutput, inference_routing

FILLER = (np.arange(5000, dtype=np.int64) * 7919) % EVAL_VOCAB


def _prompts(lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, EVAL_VOCAB, (n,), generator=generator).tolist() for n in lengths]


@pytest.mark.parametrize(
    "ffn, lengths",
    [("dense", [5, 9, 3]), ("mot", [6, 4, 10, 6, 7]), ("mot", [8])],  # MoT: G=4, so filler rows fill the groups
)
def test_cached_decoding_matches_a_full_forward_at_every_step(ffn, lengths):
    model = eval_model(ffn)
    prompts = _prompts(lengths)
    result = generate_tokens(model, prompts, max_new_tokens=7, filler_tokens=FILLER, keep_logits=True)
    tokens = result.tokens_BS
    n_rows = -(-len(prompts) // 4) * 4 if ffn == "mot" else len(prompts)
    assert tokens.shape[0] == n_rows and result.n_filler_rows == n_rows - len(prompts)
    start = min(lengths)
    assert tokens.shape[1] == max(lengths) + 7
    with torch.no_grad():
        full = model(tokens).logits
    assert len(result.step_logits) == tokens.shape[1] - start
    for step, cached in enumerate(result.step_logits):
        torch.testing.assert_close(cached, full[:, start - 1 + step], rtol=0, atol=1e-9)
    for prompt, row, new in zip(prompts, tokens, result.new_tokens):
        assert row[: len(prompt)].tolist() == prompt  # longer prompts were forced, not sampled
        assert len(new) == 7 and row[len(prompt) : len(prompt) + 7].tolist() == new
        for offset, token in enumerate(new):  # greedy: each new token is the argmax of the full forward
            assert token == int(full[prompts.index(prompt), len(prompt) - 1 + offset].argmax())


LLAMA_STYLE = dict(positions="rope", norm="rmsnorm", ffn_activation="swiglu", n_kv_heads=1, dense_bias=False)


@pytest.mark.parametrize(
    "ffn, overrides, lengths",
    [
        ("dense", {}, [5, 9, 3]),
        ("mot", {"qk_norm": True}, [6, 4, 10, 6, 7]),
        ("token_choice", {"top_k": 2, "tc_norm_topk_prob": True, "qk_norm": True}, [4, 8]),
    ],
)
def test_cached_decoding_under_rope_and_gqa_matches_a_full_forward(ffn, overrides, lengths):
    """RoPE angles follow the cache length; the cache holds the one kv head of grouped-query attention."""
    model = eval_model(ffn, n_heads=2, **LLAMA_STYLE, **overrides)
    prompts = _prompts(lengths, seed=4)
    result = generate_tokens(model, prompts, max_new_tokens=6, filler_tokens=FILLER, keep_logits=True)
    with torch.no_grad(), inference_routing(model):  # Token Choice decodes dropless
        full = model(result.tokens_BS).logits
    start = min(lengths)
    for step, cached in enumerate(result.step_logits):
        torch.testing.assert_close(cached, full[:, start - 1 + step], rtol=0, atol=1e-9)
    for index, (prompt, new) in enumerate(zip(prompts, result.new_tokens)):
        for offset, token in enumerate(new):
            assert token == int(full[index, len(prompt) - 1 + offset].argmax())


def test_chunked_prefill_with_an_offset_uses_the_causal_mask():
    model = eval_model("mot")
    ids = torch.randint(0, EVAL_VOCAB, (4, 12), generator=torch.Generator().manual_seed(2))
    cache = KVCache(len(model.blocks))
    with torch.no_grad():
        parts = [model(ids[:, a:b], cache=cache).logits for a, b in ((0, 3), (3, 8), (8, 9), (9, 12))]
        full = model(ids).logits
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=0, atol=1e-9)
    assert cache.length == 12
    with pytest.raises(ValueError, match="exceeds max_seq_len=48"):
        model(ids[:, :1], cache=cache_with_length(model, 48))


def cache_with_length(model, length):
    cache = KVCache(len(model.blocks))
    cache.length = length
    return cache


def test_forward_without_cache_is_unchanged():
    model = eval_model("dense")
    ids = torch.randint(0, EVAL_VOCAB, (2, 6), generator=torch.Generator().manual_seed(3))
    out = model(ids, ids)
    assert isinstance(out, ModelOutput) and out.loss is not None
    expected = torch.nn.functional.cross_entropy(out.logits.detach().flatten(0, 1), ids.flatten())
    assert float(out.loss.detach()) == pytest.approx(float(expected), abs=1e-6)  # the model's loss is in float32
    with torch.no_grad():
        cached = model(ids, cache=KVCache(len(model.blocks))).logits
    torch.testing.assert_close(cached, out.logits.detach(), rtol=0, atol=1e-9)


def test_eos_stops_a_row_and_prompts_must_fit():
    model = eval_model("dense")
    prompt = _prompts([4])[0]
    greedy = generate_tokens(model, [prompt], max_new_tokens=6).new_tokens[0]
    stopped = generate_tokens(model, [prompt], max_new_tokens=6, eos_id=greedy[2]).new_tokens[0]
    assert stopped == greedy[: greedy.index(greedy[2])]
    with pytest.raises(ValueError, match="leaves no room to generate: the context is 48 tokens"):
        generate_tokens(model, [[1] * 48], max_new_tokens=2)
    with pytest.raises(ValueError, match="needs held-out filler text"):
        generate_tokens(eval_model("mot"), [prompt], max_new_tokens=2)
    with pytest.raises(ValueError, match="top_p must be in"):
        generate_tokens(model, [prompt], top_p=0.0)


def test_sampling_options():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.5, -1.0]] * 200, dtype=torch.float64)
    draw = lambda seed, **kw: sample_next(logits, torch.Generator().manual_seed(seed), **kw)  # noqa: E731
    assert torch.equal(draw(0, temperature=0.0), torch.full((200,), 1))
    assert set(draw(0, temperature=1.0, top_k=2).tolist()) == {1, 3}
    assert torch.equal(draw(0, temperature=1.0, top_k=1), torch.full((200,), 1))
    assert torch.equal(draw(0, temperature=1.0, top_p=0.01), torch.full((200,), 1))  # the top token always stays
    # top-p 0.7: p(1) = 0.53 < 0.7, so token 3 (p = 0.32) is needed too and nothing else
    assert set(draw(1, temperature=1.0, top_p=0.7).tolist()) == {1, 3}
    assert len(set(draw(2, temperature=1.0).tolist())) >= 4
    assert torch.equal(draw(3, temperature=0.8), draw(3, temperature=0.8))


def test_mot_generate_command(tmp_path, cache_dir, capsys):
    checkpoint = make_checkpoint(tmp_path, "mot")
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("The river\nA small dog\n")
    args = ["generate", "--checkpoint", str(checkpoint), "--prompt", "The old", "--prompts-file", str(prompts_file)]
    assert main(args + ["--max-new-tokens", "5", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "held-out filler rows" in out and out.count("--- ") == 3
    assert main(args + ["--max-new-tokens", "5", "--temperature", "0.9", "--top-k", "5", "--seed", "1"]) == 0
    assert main(["generate", "--checkpoint", str(checkpoint), "--prompt", "river " * 60]) == 2
    err = capsys.readouterr().err
    assert "the context is 48 tokens (prompts must be shorter)" in err and "Traceback" not in err
    assert main(["generate", "--checkpoint", str(checkpoint), "--prompts-file", str(TASK_FIXTURES / "nope.txt")]) == 2
