"""BERT masking for the masked objective: which positions are scored and what the model sees there.

Each position is selected independently with probability 15%; of the selected ones 80% become the mask token,
10% a uniformly random token of the tokenizer's vocabulary, and 10% stay unchanged (BERT, Devlin et al. 2019;
Hugging Face's masked-LM collator draws the same way). The labels hold the original token at selected positions
and IGNORE_INDEX everywhere else, so the loss counts the selected positions only.

The mask token is the first id after the tokenizer's: id `vocab_size` of either tokenizer (the trained BPE or
GPT-2's), so token files, tokenizer files and fingerprints are the causal objective's; a masked model embeds and
predicts `vocab_size + 1` ids (`ModelConfig.model_vocab_size`). Masks are drawn from numpy generators seeded by
numbers, never by global state: training masks by (seed, step), like the batch windows, so a resumed run masks
exactly as an uninterrupted one; held-out masks by the batch index alone, so every evaluation of every run sees the
same masked positions.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "IGNORE_INDEX",
    "MASK_RATE",
    "MASK_TOKEN",
    "MASK_TOKEN_SHARE",
    "RANDOM_TOKEN_SHARE",
    "eval_mask_rng",
    "mask_tokens",
    "train_mask_rng",
]

IGNORE_INDEX = -100
"""Label of a position that is not scored (F.cross_entropy's default ignore_index)."""

MASK_TOKEN = "<|mask|>"
"""How the mask token reads in docs and decoded text; its id is the tokenizer's vocab_size."""

MASK_RATE = 0.15
"""Share of positions selected for prediction."""

MASK_TOKEN_SHARE = 0.8
"""Share of the selected positions replaced by the mask token."""

RANDOM_TOKEN_SHARE = 0.1
"""Share of the selected positions replaced by a random token (the rest stay unchanged)."""

_TRAIN_STREAM = 1
"""Masks draw from [seed, step, 1]: a stream apart from the batch windows' [seed, step], so the masked and causal
objectives read the same windows for the same seed."""

_EVAL_SEED = 20_190_524
"""Held-out masks draw from [this, batch index]: fixed for every run whatever its seed."""


def train_mask_rng(seed: int, step: int) -> np.random.Generator:
    """The generator of training step `step`'s masks."""
    return np.random.default_rng([int(seed), int(step), _TRAIN_STREAM])


def eval_mask_rng(batch_index: int) -> np.random.Generator:
    """The generator of held-out batch `batch_index`'s masks."""
    return np.random.default_rng([_EVAL_SEED, int(batch_index)])


def mask_tokens(
    tokens_BS: torch.Tensor, *, mask_token_id: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs[B, S], labels[B, S]) from token ids [B, S] under the BERT rule.

    inputs: the mask token at 80% of the selected positions, a random id in 0 .. mask_token_id - 1 at 10%, the
    original id elsewhere; labels: the original id at selected positions, IGNORE_INDEX elsewhere. Every call draws
    the same amount from `rng` whatever it selects, so one generator per batch gives reproducible masks.
    """
    if not isinstance(mask_token_id, int) or mask_token_id < 1:
        raise ValueError(
            f"mask_token_id must be a positive integer (the tokenizer's vocab_size), got {mask_token_id!r}."
        )
    if tokens_BS.numel() and int(tokens_BS.max()) >= mask_token_id:
        raise ValueError(
            f"token id {int(tokens_BS.max())} is not below mask_token_id={mask_token_id}: the mask token must be the "
            "first id after the tokenizer's vocabulary."
        )
    shape = tuple(tokens_BS.shape)
    selected_BS = torch.from_numpy(rng.random(shape) < MASK_RATE)
    action_BS = torch.from_numpy(rng.random(shape))
    random_BS = torch.from_numpy(rng.integers(0, mask_token_id, size=shape)).to(tokens_BS.dtype)
    masked_BS = selected_BS & (action_BS < MASK_TOKEN_SHARE)
    randomised_BS = selected_BS & ~masked_BS & (action_BS < MASK_TOKEN_SHARE + RANDOM_TOKEN_SHARE)
    inputs_BS = torch.where(masked_BS, torch.full_like(tokens_BS, mask_token_id), tokens_BS)
    inputs_BS = torch.where(randomised_BS, random_BS, inputs_BS)
    labels_BS = torch.where(selected_BS, tokens_BS, torch.full_like(tokens_BS, IGNORE_INDEX))
    return inputs_BS, labels_BS
