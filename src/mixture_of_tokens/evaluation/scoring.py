"""Log-likelihood of continuations under a batch policy: the one scoring function behind zero-shot tasks and the
lm-eval adapter.

Tokenisation follows lm-eval: trailing spaces of the context move to the continuation, the pair is encoded
whole, and the continuation is what the whole has beyond the context's tokens (an empty context becomes the eos
token). With `prefix_eos` every context starts with the eos token, as the authors' harness did. Inputs longer than
the context window keep their last max_seq_len + 1 tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data import Tokenizer
from ..layers import check_group_size
from ..model import Transformer
from ..progress import progress_bar
from .batch_policy import BatchPolicy, isolated_batch

__all__ = ["ContinuationScore", "Request", "Scorer", "text_request"]


@dataclass(frozen=True)
class Request:
    """A continuation to score after a context; `identity` seeds its isolated batch (`text_request`: the text)."""

    context: str
    continuation: str
    identity: tuple[object, ...]


def text_request(context: str, continuation: str) -> Request:
    """A request identified by its text: the same (context, continuation) gets the same isolated batch wherever it
    is scored (`mot eval`, the lm-eval adapter, `Predictor`), whatever task, file or position it comes from."""
    return Request(context, continuation, ("text", context, continuation))


@dataclass(frozen=True)
class ContinuationScore:
    logprob: float
    is_greedy: bool
    n_tokens: int


@contextlib.contextmanager
def _only_rows(model: Transformer, rows: torch.Tensor) -> Iterator[None]:
    """Apply the output head to the selected rows only: the scored row of an isolated batch needs no others."""
    handle = model.final_norm.register_forward_hook(lambda module, inputs, output: output[rows])
    try:
        yield
    finally:
        handle.remove()


class Scorer:
    """Scores token continuations with `model` under `policy`.

    plain: requests are sorted by length and right-padded into batches of `batch_size` (causal attention keeps
    padding from reaching earlier positions). protocol / discrete: one isolated batch per request, of which just
    the query's block of rows is computed: rows couple only within consecutive blocks of the model's batch multiple
    (MoT: its group of G rows), so rows of other blocks cannot reach it (identical up to float rounding to computing
    all rows, which `compute_group_only = False` does). `prefix_eos`: every context
    starts with the eos token (an empty context is that token alone), as in the authors' harness.
    """

    def __init__(
        self,
        model: Transformer,
        tokenizer: Tokenizer,
        policy: BatchPolicy,
        *,
        filler_tokens: np.ndarray | None = None,
        batch_size: int = 32,
        device: torch.device | str | None = None,
        prefix_eos: bool = False,
    ) -> None:
        model.config.check_causal("log-likelihood scoring")
        if policy.isolated and filler_tokens is None:
            raise ValueError(f"batch policy {policy.name!r} needs filler_tokens (training-set text).")
        if policy.isolated and policy.multiple is not None:
            check_group_size(policy.rows, policy.multiple)
        self.model = model
        self.tokenizer = tokenizer
        self.policy = policy
        self.filler_tokens = filler_tokens
        self.batch_size = batch_size
        self.prefix_eos = prefix_eos
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.max_len = model.config.max_seq_len
        self.compute_group_only = True

    def encode(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        spaces = len(context) - len(context.rstrip(" "))
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        if not context:
            return [self.tokenizer.eos_id], self.tokenizer.encode_batch([continuation])[0]
        whole, context_ids = self.tokenizer.encode_batch([context + continuation, context])
        prefix = [self.tokenizer.eos_id] if self.prefix_eos else []
        return prefix + context_ids, whole[len(context_ids) :]

    def score(self, requests: Sequence[Request], *, progress: bool = False) -> list[ContinuationScore]:
        pairs = [self.encode(r.context, r.continuation) for r in requests]
        return self.score_tokens(pairs, [r.identity for r in requests], progress=progress)

    def score_tokens(
        self,
        pairs: Sequence[tuple[list[int], list[int]]],
        identities: Sequence[tuple[object, ...]],
        *,
        progress: bool = False,
    ) -> list[ContinuationScore]:
        """Score (context ids, continuation ids) pairs; each continuation must have at least one token."""
        windows = []
        for context_ids, continuation_ids in pairs:
            if not continuation_ids:
                raise ValueError("a continuation encodes to no tokens; every answer must be non-empty.")
            whole = (list(context_ids) + list(continuation_ids))[-(self.max_len + 1) :]
            windows.append((whole, min(len(continuation_ids), len(whole) - 1)))
        results: list[ContinuationScore | None] = [None] * len(windows)
        bar = progress_bar(len(windows), f"scoring ({self.policy.name})", disable=not progress, leave=False)
        with torch.no_grad(), self.policy.applied(self.model):
            if self.policy.isolated:
                for index, ((whole, n_scored), identity) in enumerate(zip(windows, identities)):
                    results[index] = self._score_isolated(whole, n_scored, identity)
                    bar.update()
            else:
                order = sorted(range(len(windows)), key=lambda i: -len(windows[i][0]))
                for start in range(0, len(order), self.batch_size):
                    chunk = order[start : start + self.batch_size]
                    for index, result in zip(chunk, self._score_plain([windows[i] for i in chunk])):
                        results[index] = result
                    bar.update(len(chunk))
        bar.close()
        return [r for r in results if r is not None]

    def _score_isolated(self, whole: list[int], n_scored: int, identity: tuple[object, ...]) -> ContinuationScore:
        ids_BS, row = isolated_batch(whole[:-1], self.filler_tokens, self.policy, identity)
        if self.compute_group_only:
            group = self.policy.multiple or 1
            first = row // group * group
            ids_BS, row = ids_BS[first : first + group], row - first
        ids_BS = ids_BS.to(self.device)
        with _only_rows(self.model, torch.tensor([row], device=self.device)):
            logits_SV = self.model(ids_BS).logits[0]
        return _continuation_score(logits_SV, whole, n_scored)

    def _score_plain(self, windows: list[tuple[list[int], int]]) -> list[ContinuationScore]:
        width = max(len(whole) - 1 for whole, _ in windows)
        ids_BS = torch.zeros(len(windows), width, dtype=torch.long)
        for b, (whole, _) in enumerate(windows):
            ids_BS[b, : len(whole) - 1] = torch.tensor(whole[:-1])
        logits_BSV = self.model(ids_BS.to(self.device)).logits
        return [
            _continuation_score(logits_BSV[b, : len(whole) - 1], whole, n_scored)
            for b, (whole, n_scored) in enumerate(windows)
        ]

    def rolling(self, text: str, identity: tuple[object, ...]) -> float:
        """Sum log-probability of a whole text (lm-eval's loglikelihood_rolling): eos as the first context, then
        disjoint windows of max_seq_len predicted tokens, the last window taking as much earlier context as fits."""
        tokens = [self.tokenizer.eos_id] + self.tokenizer.encode_batch([text])[0]
        pairs, identities = [], []
        for start in range(1, len(tokens), self.max_len):
            end = min(start + self.max_len, len(tokens))
            first = max(0, end - self.max_len - 1)
            pairs.append((tokens[first:start], tokens[start:end]))
            identities.append((*identity, start))
        return sum(s.logprob for s in self.score_tokens(pairs, identities))


def _continuation_score(logits_SV: torch.Tensor, whole: list[int], n_scored: int) -> ContinuationScore:
    """Log-probability of the last n_scored tokens of `whole` from logits at the positions predicting them."""
    length = len(whole) - 1
    logprobs_NV = torch.log_softmax(logits_SV[length - n_scored : length].double(), dim=-1)
    targets_N = torch.tensor(whole[-n_scored:], device=logprobs_NV.device)
    picked = logprobs_NV.gather(1, targets_N[:, None]).sum()
    greedy = bool((logprobs_NV.argmax(dim=-1) == targets_N).all())
    return ContinuationScore(float(picked), greedy, n_scored)
