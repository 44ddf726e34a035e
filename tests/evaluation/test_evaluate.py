"""Perplexity in every MoT mode, the batch policies (the paper's isolated-batch protocol), continuation scoring,
`mot eval` end to end and the lm-eval adapter's request -> score functions (without lm_eval installed)."""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch
from helpers import EVAL_VOCAB, TASK_FIXTURES, eval_config, eval_model, make_checkpoint

from mixture_of_tokens.cli import main
from mixture_of_tokens.data import prepare_data
from mixture_of_tokens.evaluation import (
    BatchPolicy,
    Request,
    Scorer,
    eval_modes,
    evaluate_modes,
    isolated_batch,
    load_task_file,
    resolve_policy,
    text_request,
)
from mixture_of_tokens.evaluation.lm_eval_adapter import MoTBackend
from mixture_of_tokens.model import mot_mode


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, module_cache_dir):
    root = tmp_path_factory.mktemp("eval")
    checkpoints = {ffn: make_checkpoint(root, ffn) for ffn in ("mot", "dense")}
    data = prepare_data(f"text:{root / 'corpus'}", vocab_size=EVAL_VOCAB, progress=False)
    return {"root": root, "data": data, **checkpoints}


# ----------------------------------------------------------------------------------------------- batch policy


def test_policy_resolution_and_errors():
    mot, dense = eval_config("mot"), eval_config("dense")
    assert resolve_policy(mot).name == "protocol" and resolve_policy(mot).multiple == 4
    assert resolve_policy(mot, "discrete").name == "discrete"
    assert resolve_policy(dense).name == "plain"
    with pytest.raises(ValueError, match="allowed values for this model: auto, protocol, discrete"):
        resolve_policy(mot, "plain")
    with pytest.raises(ValueError, match="this model allows: plain"):
        resolve_policy(dense, "protocol")
    with pytest.raises(ValueError, match="protocol-rows=30"):
        resolve_policy(mot, rows=30)
    with pytest.raises(ValueError, match="allowed values: auto, plain, protocol, discrete"):
        resolve_policy(mot, "sometimes")
    # MoT only in the second half still makes the model batch-dependent
    assert resolve_policy(eval_config("mot", ffn_blocks="second-half")).name == "protocol"


def test_isolated_batch_is_seeded_by_the_query_identity():
    filler = np.arange(1000, dtype=np.int64) % 97 + 100
    policy = BatchPolicy("protocol", rows=32, seed=3, multiple=4)
    query = [1, 2, 3, 4, 5]
    ids, row = isolated_batch(query, filler, policy, ("piqa", "doc7", 0))
    assert ids.shape == (32, 5) and ids[row].tolist() == query
    others = [r for r in range(32) if r != row]
    for r in others:  # each filler row is a contiguous window of the filler text
        assert ids[r].min() >= 100 and bool((((ids[r, 1:] - ids[r, :-1]) % 97) == 1).all())
    again, row_again = isolated_batch(query, filler, policy, ("piqa", "doc7", 0))
    assert torch.equal(ids, again) and row == row_again
    layouts = {isolated_batch(query, filler, policy, ("piqa", "doc7", c))[1] for c in range(12)}
    assert len(layouts) > 1  # another identity, another row
    other_seed = dataclasses.replace(policy, seed=4)
    assert not torch.equal(isolated_batch(query, filler, other_seed, ("piqa", "doc7", 0))[0], ids)


def _requests(docs):
    return [
        Request(context, continuation, (doc.task, doc.doc_id, choice))
        for doc in docs
        for choice, (context, continuation) in enumerate(doc.requests)
    ]


@pytest.mark.parametrize("policy_name", ["protocol", "discrete"])
def test_a_query_score_does_not_depend_on_the_other_queries(workspace, policy_name):
    data = workspace["data"]
    model = eval_model("mot", dtype=torch.float32)
    policy = resolve_policy(model.config, policy_name, rows=16, seed=1)
    scorer = Scorer(model, data.tokenizer, policy, filler_tokens=data.train_tokens)
    requests = _requests(load_task_file("arc_easy", TASK_FIXTURES / "arc_easy.json"))
    requests += _requests(load_task_file("piqa", TASK_FIXTURES / "piqa.jsonl"))
    full = dict(zip([r.identity for r in requests], scorer.score(requests)))
    shuffled = list(requests)
    random.Random(5).shuffle(shuffled)
    subset = shuffled[: len(shuffled) // 3]
    for subset_requests in (shuffled, subset, [requests[4]]):
        for request, score in zip(subset_requests, scorer.score(subset_requests)):
            assert score == full[request.identity]  # bit-identical


def test_isolated_scores_depend_on_the_filler_and_match_a_manual_computation(workspace):
    """The scorer's number equals log-softmax of the query row of the isolated batch, computed by hand; computing
    only the query's group equals computing all rows; another seed (other filler rows) changes the score."""
    data = workspace["data"]
    model = eval_model("mot")
    policy = resolve_policy(model.config, rows=16, seed=0)
    scorer = Scorer(model, data.tokenizer, policy, filler_tokens=data.train_tokens)
    request = Request("Question: Which tool measures length?\nAnswer:", " a ruler", ("t", "d", 0))
    context_ids, continuation_ids = scorer.encode(request.context, request.continuation)
    whole = context_ids + continuation_ids
    ids, row = isolated_batch(whole[:-1], data.train_tokens, policy, request.identity)
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[row].double(), dim=-1)
    n = len(continuation_ids)
    expected = sum(float(logprobs[len(whole) - 1 - n + i, t]) for i, t in enumerate(continuation_ids))
    score = scorer.score([request])[0]
    assert score.logprob == pytest.approx(expected, abs=1e-9) and score.n_tokens == n
    scorer.compute_group_only = False
    assert scorer.score([request])[0].logprob == pytest.approx(expected, abs=1e-9)
    reseeded = Scorer(model, data.tokenizer, dataclasses.replace(policy, seed=9), filler_tokens=data.train_tokens)
    assert reseeded.score([request])[0].logprob != pytest.approx(expected, abs=1e-9)


def test_discrete_routing_still_depends_on_the_group():
    """Why `discrete` keeps isolated batches: the argmax is over the group, so another row can move a score."""
    model = eval_model("mot")
    ids = torch.randint(0, EVAL_VOCAB, (4, 6), generator=torch.Generator().manual_seed(0))
    changed = ids.clone()
    changed[1:] = torch.randint(0, EVAL_VOCAB, (3, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad(), mot_mode(model, routing="discrete"):
        first, second = model(ids).logits[0], model(changed).logits[0]
    assert (first - second).abs().max() > 1e-6


def test_plain_batches_equal_one_at_a_time_scoring_for_dense(workspace):
    data = workspace["data"]
    model = eval_model("dense", max_seq_len=128)
    policy = resolve_policy(model.config)
    requests = _requests(load_task_file("hellaswag", TASK_FIXTURES / "hellaswag.jsonl"))
    batched = Scorer(model, data.tokenizer, policy, batch_size=3).score(requests)
    single = Scorer(model, data.tokenizer, policy, batch_size=1).score(requests)
    for a, b in zip(batched, single):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-9) and a.is_greedy == b.is_greedy
    # by hand: the full forward of context + continuation
    context_ids, continuation_ids = Scorer(model, data.tokenizer, policy).encode(
        requests[0].context, requests[0].continuation
    )
    whole = torch.tensor([context_ids + continuation_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(whole[:, :-1]).logits[0], dim=-1)
    start = len(context_ids) - 1
    expected = sum(float(logprobs[start + i, t]) for i, t in enumerate(continuation_ids))
    assert single[0].logprob == pytest.approx(expected, abs=1e-9)


def test_encoding_follows_lm_eval(workspace):
    tokenizer = workspace["data"].tokenizer
    scorer = Scorer(eval_model("dense"), tokenizer, BatchPolicy("plain"))
    context_ids, continuation_ids = scorer.encode("The dog ", "slept")  # trailing space moves to the answer
    assert context_ids == tokenizer.encode_batch(["The dog"])[0]
    assert context_ids + continuation_ids == tokenizer.encode_batch(["The dog slept"])[0]
    assert scorer.encode("", " river")[0] == [tokenizer.eos_id]


def test_rolling_loglikelihood_sums_windows(workspace):
    tokenizer = workspace["data"].tokenizer
    model = eval_model("dense", max_seq_len=16)
    scorer = Scorer(model, tokenizer, BatchPolicy("plain"))
    text = "The old dog slept by the fire. The children sang a song in the garden while the river ran."
    tokens = [tokenizer.eos_id] + tokenizer.encode_batch([text])[0]
    assert len(tokens) > 2 * 16
    total = 0.0
    with torch.no_grad():
        for start in range(1, len(tokens), 16):  # disjoint windows of 16 predictions, as much context as fits
            end = min(start + 16, len(tokens))
            first = max(0, end - 17)
            logprobs = torch.log_softmax(model(torch.tensor([tokens[first : end - 1]])).logits[0], dim=-1)
            total += sum(float(logprobs[p - 1 - first, tokens[p]]) for p in range(start, end))
    assert scorer.rolling(text, ("doc",)) == pytest.approx(total, abs=1e-9)


# ------------------------------------------------------------------------------------------------- perplexity


def test_eval_modes_and_losses_per_mode():
    config = eval_config("mot", group_size=8, n_experts=8, expert_size=64)
    names = [m.name for m in eval_modes(config, batch_size=16)]
    assert names == ["trained (G=8, softmax)", "discrete G=8", "G=1", "G=2", "G=16"]
    assert [m.name for m in eval_modes(config, batch_size=8)][-1] == "G=2"  # 2G does not divide 8
    assert [m.name for m in eval_modes(eval_config("dense"), 8)] == ["trained"]
    model = eval_model("mot", group_size=8, n_experts=8, expert_size=64)
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randint(0, EVAL_VOCAB, (16, 10), generator=generator),) * 2 for _ in range(2)]
    results = evaluate_modes(model, batches, eval_modes(config, 16))
    for result in results:
        with torch.no_grad(), mot_mode(model, group_size=result.mode.group_size, routing=result.mode.routing):
            expected = sum(float(model(x, y, return_logits=False).lm_loss) for x, y in batches) / 2  # float64
        assert result.loss == pytest.approx(expected, abs=1e-12)
        assert result.perplexity == pytest.approx(np.exp(expected))
    assert len({round(r.loss, 9) for r in results}) == len(results)  # the modes really differ


MICRO_BATCH_CASES = {  # model overrides, inference routing, mode (MoT group size), expected rows per forward
    "dense": ("dense", {}, False, None, 4),
    "mot": ("mot", {}, False, None, 4),
    "mot at G=8 (rounded up to a group)": ("mot", {}, False, 8, 8),
    "token choice, dropless (inference)": ("token_choice", {}, True, None, 4),
    "token choice, capacity over the batch": ("token_choice", {"capacity_factor": 0.5}, False, None, 16),
    "token choice, capacity per group": ("token_choice", {"capacity_factor": 2.0, "tc_scope": "group"}, False, None, 4),
    "expert choice": ("expert_choice", {}, False, None, 4),
    "masked, mot": ("mot", {"objective": "masked"}, False, None, 4),
    "masked, mot within sequences": (
        "mot",
        {"objective": "masked", "mot_group_axis": "within_sequence"},
        False,
        None,
        4,
    ),
}


@pytest.mark.parametrize("case", MICRO_BATCH_CASES)
def test_micro_batches_with_the_chunked_loss_equal_whole_batches_with_full_logits(case):
    """The held-out loss run 4 rows at a time (rounded up to the rows the layers couple) with the chunked loss equals
    the whole batch's full-logits cross-entropy (float64); a masked LM's accuracy too."""
    from mixture_of_tokens.data.masking import IGNORE_INDEX, mask_tokens
    from mixture_of_tokens.evaluation import evaluate_loss
    from mixture_of_tokens.evaluation.loss import evaluate_masked_lm
    from mixture_of_tokens.layers import set_inference_routing

    ffn, overrides, inference, group_size, rows = MICRO_BATCH_CASES[case]
    model = set_inference_routing(eval_model(ffn, seed=3, **overrides), inference)
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, EVAL_VOCAB, (16, 12), generator=generator),) * 2 for _ in range(2)]
    if model.config.objective == "masked":
        rng = np.random.default_rng(0)
        batches = [mask_tokens(x, mask_token_id=model.config.mask_token_id, rng=rng) for x, _ in batches]
    forwards: list[int] = []
    model.register_forward_pre_hook(lambda module, args: forwards.append(args[0].shape[0]))
    with torch.no_grad(), mot_mode(model, group_size=group_size):
        logits = [model(x).logits for x, _ in batches]  # the old evaluation: whole batches, full logits
        losses = [torch.nn.functional.cross_entropy(z.flatten(0, 1), y.flatten(), reduction="none") for z, (_, y) in
                  zip(logits, batches)]  # fmt: skip
        forwards.clear()
        loss = evaluate_loss(model, batches, torch.device("cpu"), micro_batch=4)
    assert forwards == [rows] * (2 * 16 // rows)
    scored = [y != IGNORE_INDEX for _, y in batches]
    if model.config.objective == "causal":
        assert loss == pytest.approx(float(sum(each.mean() for each in losses) / 2), abs=1e-9)
        return
    n_scored = int(sum(map(torch.sum, scored)))
    expected = float(sum(each[keep.flatten()].sum() for each, keep in zip(losses, scored)) / n_scored)
    assert loss == pytest.approx(expected, abs=1e-9)
    with mot_mode(model, group_size=group_size):
        masked_loss, accuracy, n_masked = evaluate_masked_lm(model, batches, torch.device("cpu"), micro_batch=4)
    correct = sum(int((z.argmax(-1) == y)[keep].sum()) for z, (_, y), keep in zip(logits, batches, scored))
    assert masked_loss == pytest.approx(expected, abs=1e-9) and n_masked == n_scored
    assert accuracy == correct / n_scored


# ------------------------------------------------------------------------------------------------ command line


def test_mot_eval_end_to_end(workspace, capsys):
    checkpoint = workspace["mot"]
    out = workspace["root"] / "results.json"
    args = ["eval", "--checkpoint", str(checkpoint), "--tasks", "piqa,arc_easy", "--out", str(out)]
    args += [
        "--task-file",
        f"piqa={TASK_FIXTURES / 'piqa.jsonl'}",
        "--task-file",
        f"arc_easy={TASK_FIXTURES / 'arc_easy.json'}",
    ]
    assert main(args + ["--protocol-rows", "8"]) == 0
    printed = capsys.readouterr().out
    assert "protocol: each query alone in a batch of 8" in printed and "discrete G=4" in printed
    result = json.loads(out.read_text())
    assert [t["task"] for t in result["tasks"]] == ["piqa", "arc_easy"]
    assert result["tasks"][0]["n_docs"] == 3 and 0 <= result["tasks"][0]["metrics"]["acc"] <= 1
    assert [p["mode"] for p in result["perplexity"]] == ["trained (G=4, softmax)", "discrete G=4", "G=1", "G=8"]
    assert result["policy"]["name"] == "protocol" and result["policy"]["rows"] == 8
    # default output goes next to the checkpoint; dense gets plain batches
    assert (
        main(
            ["eval", "--checkpoint", str(workspace["dense"]), "--no-perplexity", "--tasks", "piqa"]
            + ["--task-file", f"piqa={TASK_FIXTURES / 'piqa.jsonl'}"]
        )
        == 0
    )
    assert "plain batches" in capsys.readouterr().out
    assert list(workspace["dense"].glob("eval-*.json"))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--tasks", "mmlu"], "task 'mmlu' is unknown"),
        (
            ["--tasks", "piqa", "--task-file", f"piqa={TASK_FIXTURES / 'piqa_wrong_schema.jsonl'}"],
            "not in the piqa schema",
        ),
        (["--mot-eval", "plain"], "would let one query's score depend"),
        (["--limit", "-1", "--tasks", "piqa"], "limit must be an integer >= 0"),
    ],
)
def test_mot_eval_bad_input_is_one_sentence(workspace, capsys, extra, message):
    assert main(["eval", "--checkpoint", str(workspace["mot"]), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_mot_eval_missing_or_incompatible_checkpoint(workspace, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    config = json.loads((workspace["mot"] / "config.json").read_text())
    config["model"]["d_model"] = 32
    (broken / "config.json").write_text(json.dumps(config))
    (broken / "model.safetensors").write_bytes((workspace["mot"] / "model.safetensors").read_bytes())
    assert main(["eval", "--checkpoint", str(broken)]) == 2
    err = capsys.readouterr().err
    assert "is incompatible" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------- lm-eval adapter


def test_lm_eval_backend_scores_like_the_scorer(workspace):
    backend = MoTBackend(str(workspace["mot"]), protocol_rows=8, device="cpu")
    assert backend.policy.name == "protocol"
    pairs = [("Question: What do plants need?\nAnswer:", " light"), ("The dog", " slept")]
    scores = backend.loglikelihood(pairs)
    again = backend.loglikelihood(list(reversed(pairs)))
    assert scores == list(reversed(again))  # independent of the other requests
    expected = backend.scorer.score([text_request(c, x) for c, x in pairs])
    assert scores == [(s.logprob, s.is_greedy) for s in expected]
    rolling = backend.loglikelihood_rolling(["The river ran under the old road."])
    assert len(rolling) == 1 and rolling[0] < 0
    texts = backend.generate_until([("The children", {"until": ["."], "max_gen_toks": 12})])
    assert len(texts) == 1 and "." not in texts[0]


def test_mot_eval_tc_capacity_adds_the_loss_with_the_trained_capacity(workspace, capsys):
    """Token Choice is evaluated dropless; --tc-capacity adds the held-out loss with the capacity it trained with
    (the authors evaluated so), equal to the loss of the model with its capacity restored."""
    from helpers import build_model

    from mixture_of_tokens.checkpoint import save_checkpoint
    from mixture_of_tokens.config import TrainConfig
    from mixture_of_tokens.data import eval_batches
    from mixture_of_tokens.evaluation import evaluate_loss
    from mixture_of_tokens.layers import set_inference_routing

    root, data = workspace["root"], workspace["data"]
    config = eval_config("token_choice", capacity_factor=0.5)  # binding: drops are certain
    model = build_model(config, seed=4)
    train_config = TrainConfig(steps=1, batch_size=8, eval_batches=2, data=f"text:{root / 'corpus'}", device="cpu")
    checkpoint = save_checkpoint(root / "ckpt-tc-capacity", model, config, train_config, data.tokenizer)
    out = root / "tc-capacity.json"
    assert main(["eval", "--checkpoint", str(checkpoint), "--tc-capacity", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    dropless, capacity = result["perplexity"]
    assert capacity["mode"] == "with capacity (capacity_factor 0.5)"
    assert "with capacity (capacity_factor 0.5)" in printed
    batches = eval_batches(data.eval_tokens, 8, config.max_seq_len, 2)
    model.eval()
    set_inference_routing(model, False)
    assert capacity["loss"] == pytest.approx(evaluate_loss(model, batches, torch.device("cpu")), rel=1e-6)
    set_inference_routing(model, True)
    assert dropless["loss"] == pytest.approx(evaluate_loss(model, batches, torch.device("cpu")), rel=1e-6)
    assert capacity["loss"] != pytest.approx(dropless["loss"], rel=1e-6)  # the drops change the loss
    # a model without Token Choice, or no held-out loss to measure: one sentence
    assert main(["eval", "--checkpoint", str(workspace["dense"]), "--tc-capacity"]) == 2
    assert "--tc-capacity evaluates Token Choice layers with their capacity" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(checkpoint), "--tc-capacity", "--no-perplexity", "--tasks", "piqa"]) == 2
    assert "--tc-capacity measures the held-out loss" in capsys.readouterr().err
