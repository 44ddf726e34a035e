"""Training and evaluation batches cut from a flat token array.

Training windows start at random offsets drawn from a generator seeded by (seed, step), so a resumed
run needs only the step counter to continue with exactly the batches it would have seen.

With `mask_token_id` (the masked objective, `ModelConfig.mask_token_id`) a batch is (inputs, labels) of one window
under the BERT rule (`masking.mask_tokens`) instead of a window and its shift by one token.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .masking import eval_mask_rng, mask_tokens, train_mask_rng

__all__ = ["BatchSampler", "entropy_from_counts", "eval_batches", "unigram_entropy"]


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gather windows of seq_len + 1 tokens; inputs are the first seq_len, targets the last seq_len."""
    rows = np.asarray(tokens[starts[:, None] + np.arange(seq_len + 1)], dtype=np.int64)
    window = torch.from_numpy(rows)
    return window[:, :-1].contiguous(), window[:, 1:].contiguous()


class BatchSampler:
    """Random (inputs, targets) batches, deterministic in (seed, step) and resumable by step alone; with
    `mask_token_id`, BERT-masked (inputs, labels), their masks deterministic in (seed, step) too."""

    def __init__(
        self, tokens: np.ndarray, batch_size: int, seq_len: int, seed: int, *, mask_token_id: int | None = None
    ) -> None:
        _check_positive("batch_size", batch_size)
        _check_positive("seq_len", seq_len)
        if len(tokens) < seq_len + 1:
            raise ValueError(
                f"The train split has {len(tokens)} tokens, fewer than seq_len + 1 = {seq_len + 1}; "
                "use a shorter seq_len or more data."
            )
        self.tokens = tokens
        self.batch_size = int(batch_size)
        self.seq_len = int(seq_len)
        self.seed = int(seed)
        self.mask_token_id = mask_token_id
        self.step = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs[B, S] and targets[B, S] (int64), targets being inputs shifted left by one token; masked: the
        masked window and its labels."""
        generator = np.random.default_rng([self.seed, self.step])
        high = len(self.tokens) - self.seq_len  # last valid start is len - (seq_len + 1)
        starts = generator.integers(0, high, size=self.batch_size)
        batch = _windows(self.tokens, starts, self.seq_len)
        if self.mask_token_id is not None:
            batch = mask_tokens(batch[0], mask_token_id=self.mask_token_id, rng=train_mask_rng(self.seed, self.step))
        self.step += 1
        return batch

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: the step counter (and the seed, checked on load)."""
        return {"step": self.step, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at `state["step"]`; the next batch equals the uninterrupted sampler's batch at that step."""
        step = state.get("step")
        if not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"BatchSampler state 'step' must be a non-negative integer, got {step!r}.")
        if "seed" in state and int(state["seed"]) != self.seed:
            raise ValueError(
                f"BatchSampler state was saved with seed {state['seed']}, but this sampler has seed "
                f"{self.seed}; resume with the same seed."
            )
        self.step = int(step)


def eval_batches(
    tokens: np.ndarray, batch_size: int, seq_len: int, n_batches: int, *, mask_token_id: int | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Fixed, evenly spaced, non-overlapping windows; fewer than n_batches when the split is small. With
    `mask_token_id`: (inputs, labels) of each window under fixed BERT masks (the same for every run)."""
    _check_positive("batch_size", batch_size)
    _check_positive("seq_len", seq_len)
    _check_positive("n_batches", n_batches)
    window = seq_len + 1
    available = len(tokens) // window
    count = min(n_batches, available // batch_size)
    if count == 0:
        raise ValueError(
            f"The eval split has {len(tokens)} tokens, fewer than batch_size * (seq_len + 1) = "
            f"{batch_size * window}; use a smaller eval batch_size or seq_len, or more eval data."
        )
    n_windows = count * batch_size
    slots = (np.arange(n_windows, dtype=np.int64) * available) // n_windows
    starts = slots * window
    batches = [_windows(tokens, starts[i * batch_size : (i + 1) * batch_size], seq_len) for i in range(count)]
    if mask_token_id is None:
        return batches
    return [
        mask_tokens(inputs, mask_token_id=mask_token_id, rng=eval_mask_rng(i)) for i, (inputs, _) in enumerate(batches)
    ]


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
    """Entropy in nats of the token frequencies: the best loss of a model that ignores context."""
    _check_positive("vocab_size", vocab_size)
    if len(tokens) == 0:
        raise ValueError("unigram_entropy needs at least one token, got an empty array.")
    counts = np.bincount(np.asarray(tokens), minlength=vocab_size)
    if counts.size > vocab_size:
        raise ValueError(f"tokens contain id {counts.size - 1}, outside vocab_size {vocab_size}.")
    return entropy_from_counts(counts)


def entropy_from_counts(counts: np.ndarray) -> float:
    """Entropy in nats of the distribution proportional to non-negative `counts` (at least one positive)."""
    probabilities = counts[counts > 0] / counts.sum()
    entropy = float(-(probabilities * np.log(probabilities)).sum())
    return 0.0 if math.isclose(entropy, 0.0, abs_tol=1e-12) else entropy
