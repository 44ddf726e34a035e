"""The Python API a user meets first: the README's train -> load -> score -> generate snippet, run as written;
`load_model` / `Transformer.from_pretrained`; `Predictor` scoring and generating one sequence of a batch-dependent
model exactly as `mot eval` and `mot generate` do."""

from __future__ import annotations

import pytest
import torch
from doc_snippets import ROOT, python_blocks, run_blocks, write_corpus_txt
from helpers import TASK_FIXTURES, make_checkpoint

from mixture_of_tokens import Predictor, TokenChoice, Transformer, load_model, load_tokenizer
from mixture_of_tokens.cli import main
from mixture_of_tokens.data import prepare_data
from mixture_of_tokens.evaluation import Scorer, evaluate_docs, load_task_file, resolve_policy
from mixture_of_tokens.evaluation.runner import load_checkpoint


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, module_cache_dir):
    root = tmp_path_factory.mktemp("api")
    return {ffn: make_checkpoint(root, ffn) for ffn in ("mot", "dense", "token_choice")}


def test_the_readme_snippets_run_as_written(tmp_path, cache_dir, monkeypatch, capsys):
    """Every Python block of the README (test_doc_snippets.py leaves the README to this test), exactly as printed
    there, in a fresh directory holding corpus.txt; the "From Python" one trains, loads, scores and generates."""
    blocks = python_blocks(ROOT / "README.md")
    (block,) = [b for b in blocks if "Predictor(" in b.code]
    assert block.not_run is None and len(block.code.strip().splitlines()) <= 12
    monkeypatch.chdir(tmp_path)
    write_corpus_txt(tmp_path)
    namespace = run_blocks(blocks)
    printed = capsys.readouterr().out.strip().splitlines()
    score, generated = float(printed[-2]), printed[-1]
    predictor = namespace["predictor"]
    assert predictor.policy.name == "protocol" and score < 0 and generated.strip()
    assert score == predictor.score("The cat sees", " the river")  # reproducible: seeded by the text


def test_load_model_is_ready_for_inference(checkpoints):
    directory = checkpoints["token_choice"]
    model = load_model(directory)
    assert isinstance(model, Transformer) and not model.training and model.name_or_path == str(directory)
    assert next(model.parameters()).device.type == "cpu" and next(model.parameters()).dtype == torch.float32
    assert all(m.capacity_factor is None for m in model.modules() if isinstance(m, TokenChoice))  # dropless
    same = Transformer.from_pretrained(directory, dtype=torch.float64)
    assert next(same.parameters()).dtype == torch.float64
    for (name, a), (_, b) in zip(model.state_dict().items(), same.state_dict().items()):
        assert torch.equal(a.double(), b), name
    assert load_tokenizer(directory).fingerprint() == load_checkpoint(directory, "cpu").tokenizer.fingerprint()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(directory.parent / "nope")


def test_one_mot_sequence_fails_alone_and_the_predictor_scores_it_as_mot_eval(checkpoints):
    """A MoT model cannot run one row; Predictor puts it among filler rows and gets mot eval's number."""
    directory = checkpoints["mot"]
    model = load_model(directory)
    with pytest.raises(ValueError, match="group_size=4 must divide the batch size 1"):
        model(torch.zeros(1, 5, dtype=torch.long))
    predictor = Predictor(model, load_tokenizer(directory))
    assert predictor.policy.name == "protocol" and "batch of 32" in predictor.describe()

    loaded = load_checkpoint(directory, "cpu")
    data = prepare_data(loaded.train_config.data, vocab_size=loaded.model_config.vocab_size, progress=False)
    policy = resolve_policy(loaded.model_config)
    scorer = Scorer(loaded.model, loaded.tokenizer, policy, filler_tokens=data.train_tokens)
    docs = load_task_file("piqa", TASK_FIXTURES / "piqa.jsonl")
    per_doc = evaluate_docs("piqa", docs, scorer).per_doc  # what `mot eval --tasks piqa` computes
    for doc, result in zip(docs, per_doc):
        assert [predictor.score(*request) for request in doc.requests] == result["loglikelihoods"]  # bit-identical

    discrete = Predictor(directory, policy="discrete")
    assert discrete.score("The cat", " sees") != predictor.score("The cat", " sees")


def test_predictor_generates_as_mot_generate(checkpoints, capsys):
    directory = checkpoints["mot"]
    assert main(["generate", "--checkpoint", str(directory), "--prompt", "The cat", "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out
    text = Predictor(directory).generate("The cat", max_new_tokens=6)
    assert f"--- 'The cat'\nThe cat{text}\n" in printed


@pytest.mark.parametrize("ffn", ["dense", "token_choice"])
def test_batch_independent_models_need_no_filler(checkpoints, ffn):
    model = load_model(checkpoints[ffn])
    predictor = Predictor(model, load_tokenizer(checkpoints[ffn]))
    assert predictor.policy.name == "plain" and predictor.score_filler is None
    before = predictor.score("The cat sees", " the river")
    predictor.generate("The cat", max_new_tokens=4)
    assert predictor.score("The cat sees", " the river") == before  # generation leaves inference routing on
    ids = torch.tensor([load_tokenizer(checkpoints[ffn]).encode_batch(["The cat sees the river"])[0]])
    with torch.no_grad():
        assert model(ids).logits.shape[0] == 1  # one sequence runs as it is


def test_a_mot_model_without_its_directory_needs_filler_text(checkpoints):
    directory = checkpoints["mot"]
    model, tokenizer = load_model(directory), load_tokenizer(directory)
    del model.name_or_path
    with pytest.raises(ValueError, match="pass filler_tokens="):
        Predictor(model, tokenizer)
    with pytest.raises(ValueError, match="needs the model's tokenizer"):
        Predictor(model)
    filler = torch.randint(0, tokenizer.vocab_size, (500,)).numpy()
    predictor = Predictor(model, tokenizer, filler_tokens=filler, protocol_rows=8)
    assert predictor.score("The cat", " sees") < 0 and isinstance(predictor.generate("The", max_new_tokens=3), str)


@pytest.mark.parametrize("ffn", ["mot", "dense"])
def test_lists_give_one_result_per_prompt_or_pair_in_order(checkpoints, ffn):
    """A list is many single requests, each under the single-request policy: never one joined prompt."""
    predictor = Predictor(checkpoints[ffn])
    prompts = ["The cat", "A dog"]
    for options in ({"temperature": 1.0, "seed": 3}, {}):
        texts = predictor.generate(prompts, max_new_tokens=4, **options)
        assert texts == [predictor.generate(prompt, max_new_tokens=4, **options) for prompt in prompts]
    assert predictor.generate((prompts[1],), max_new_tokens=4) == [texts[1]] and predictor.generate([]) == []
    with pytest.raises(ValueError, match=r"takes a string or a list of strings; got a list of 1 \(list\)"):
        predictor.generate([prompts])
    contexts, continuations = ["The cat sees", "A dog"], [" the river", " follows"]
    scores = predictor.score(contexts, continuations)
    assert scores == [predictor.score(c, x) for c, x in zip(contexts, continuations)]
    refusal = r"two lists of strings of the same length for one score per \(context, continuation\) pair; got "
    for context, continuation in ((contexts, continuations[:1]), ("The cat", continuations), (contexts, " sees")):
        with pytest.raises(ValueError, match=refusal):
            predictor.score(context, continuation)
