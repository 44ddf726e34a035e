"""Zero-shot multiple choice: score every choice, report accuracy (acc, acc_norm) with lm-eval's standard error."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .scoring import Scorer, text_request
from .tasks import Doc

__all__ = ["TaskResult", "evaluate_docs", "mean_stderr"]


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of the mean with the sample standard deviation (n - 1), as lm-eval reports it."""
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(variance / n)


@dataclass
class TaskResult:
    task: str
    n_docs: int
    metrics: dict[str, float]
    stderr: dict[str, float]
    seconds: float
    source: str = ""
    per_doc: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "n_docs": self.n_docs,
            "metrics": self.metrics,
            "stderr": self.stderr,
            "seconds": self.seconds,
            "source": self.source,
        }


def evaluate_docs(task: str, docs: Sequence[Doc], scorer: Scorer, *, progress: bool = False) -> TaskResult:
    """Score every (doc, choice) request once and aggregate per document.

    acc: the choice with the highest summed log-likelihood; acc_norm: highest log-likelihood per character of the
    answer (lm-eval's normalisation). Greedy tasks (LAMBADA): acc = the continuation is the argmax at every token,
    perplexity = exp(-mean log-likelihood).
    """
    started = time.perf_counter()
    requests = [text_request(context, continuation) for doc in docs for context, continuation in doc.requests]
    scores = iter(scorer.score(requests, progress=progress))
    per_doc: list[dict[str, Any]] = []
    for doc in docs:
        doc_scores = [next(scores) for _ in doc.requests]
        lls = [s.logprob for s in doc_scores]
        if doc.kind == "greedy":
            entry = {"acc": float(doc_scores[0].is_greedy), "loglikelihood": lls[0]}
        else:
            normed = [ll / max(length, 1) for ll, length in zip(lls, doc.norm_lengths)]
            entry = {"acc": float(max(range(len(lls)), key=lls.__getitem__) == doc.gold)}
            if doc.kind == "choice":
                entry["acc_norm"] = float(max(range(len(normed)), key=normed.__getitem__) == doc.gold)
        per_doc.append({"doc_id": doc.doc_id, "loglikelihoods": lls, **entry})
    names = ["acc"] + (["acc_norm"] if docs and docs[0].kind == "choice" else [])
    metrics = {name: sum(d[name] for d in per_doc) / len(per_doc) for name in names}
    stderr = {name: mean_stderr([d[name] for d in per_doc]) for name in names}
    if docs and docs[0].kind == "greedy":
        metrics["perplexity"] = math.exp(-sum(d["loglikelihood"] for d in per_doc) / len(per_doc))
    return TaskResult(task, len(docs), metrics, stderr, time.perf_counter() - started, per_doc=per_doc)
