"""Batched lock-step decoding with a KV cache.

MoT mixes the tokens of a group at one position, so every sequence of a group must advance one position per step
and positions must line up. Prompts are left-aligned (prompt i starts at position 0); decoding starts at the
shortest prompt's length and, at each position, a row whose prompt is longer gets its own next prompt token forced
instead of a sampled one (so nothing is padded and every row sees only real tokens). When rows couple (MoT) they
are filled up to a multiple of the model's batch multiple (MoT: the group size) with held-out text windows (forced
throughout, seeded), so a single prompt can be decoded. The output then depends on those filler rows, reproducibly
for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .inference_config import GenerateConfig
from .layers import batch_multiple, rows_couple_at_inference
from .model import KVCache, Transformer, inference_routing

__all__ = ["Generation", "check_sampling", "generate_text", "generate_tokens", "sample_next"]


@dataclass
class Generation:
    """new_tokens[i]: the tokens generated after prompt i (eos excluded); tokens_BS: every row, fillers included."""

    new_tokens: list[list[int]]
    tokens_BS: torch.Tensor
    n_filler_rows: int
    step_logits: list[torch.Tensor] = field(default_factory=list)


def sample_next(
    logits_BV: torch.Tensor, generator: torch.Generator, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """Next token per row: greedy at temperature 0, else sampled from softmax(logits / T) cut to top-k / top-p."""
    if temperature == 0:
        return logits_BV.argmax(dim=-1)
    scaled_BV = logits_BV.double().cpu() / temperature
    if 0 < top_k < scaled_BV.shape[-1]:
        kth_B1 = scaled_BV.topk(top_k, dim=-1).values[:, -1:]
        scaled_BV = scaled_BV.masked_fill(scaled_BV < kth_B1, float("-inf"))
    if top_p < 1.0:
        sorted_BV, order_BV = scaled_BV.sort(dim=-1, descending=True)
        cumulative_BV = sorted_BV.softmax(dim=-1).cumsum(dim=-1)
        # drop a token when the tokens before it already reach top_p (the first token always stays)
        drop_BV = (cumulative_BV - sorted_BV.softmax(dim=-1)) >= top_p
        scaled_BV = scaled_BV.scatter(-1, order_BV, sorted_BV.masked_fill(drop_BV, float("-inf")))
    probs_BV = scaled_BV.softmax(dim=-1)
    return torch.multinomial(probs_BV, 1, generator=generator)[:, 0].to(logits_BV.device)


def check_sampling(max_new_tokens: int, temperature: float, top_k: int, top_p: float) -> None:
    """The sampling settings' one check (GenerateConfig's) for callers that pass them one by one."""
    GenerateConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p)


@torch.no_grad()
def generate_tokens(
    model: Transformer,
    prompts: list[list[int]],
    *,
    max_new_tokens: int = 32,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    eos_id: int | None = None,
    filler_tokens: np.ndarray | None = None,
    keep_logits: bool = False,
) -> Generation:
    """Decode every prompt by max_new_tokens (fewer where eos comes first), all rows in lock-step. Token Choice
    layers are switched to dropless routing (inference), which makes them batch-independent."""
    model.config.check_causal("generation")
    check_sampling(max_new_tokens, temperature, top_k, top_p)
    with inference_routing(model):
        return _generate(
            model, prompts, max_new_tokens, temperature, top_k, top_p, seed, eos_id, filler_tokens, keep_logits
        )


def _generate(model, prompts, max_new_tokens, temperature, top_k, top_p, seed, eos_id, filler_tokens, keep_logits):
    config = model.config
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token.")
    longest = max(len(p) for p in prompts)
    if longest > config.max_seq_len - 1:
        raise ValueError(
            f"a prompt of {longest} tokens leaves no room to generate: the context is {config.max_seq_len} tokens."
        )
    total = min(longest + max_new_tokens, config.max_seq_len)
    n_real = len(prompts)
    group = batch_multiple(config) if rows_couple_at_inference(config) else 1
    n_rows = -(-n_real // group) * group
    rows = [list(p) for p in prompts]
    if n_rows > n_real:
        if filler_tokens is None or len(filler_tokens) <= total:
            raise ValueError(f"MoT decoding of {n_real} prompt(s) needs held-out filler text for {n_rows} rows.")
        generator = np.random.default_rng([seed, n_rows])
        starts = generator.integers(0, len(filler_tokens) - total, size=n_rows - n_real)
        rows += [np.asarray(filler_tokens[s : s + total], dtype=np.int64).tolist() for s in starts]

    device = next(model.parameters()).device
    forced_len = torch.tensor([len(r) for r in rows], device=device)
    forced_BS = torch.zeros(n_rows, total, dtype=torch.long, device=device)
    for r, row in enumerate(rows):
        forced_BS[r, : min(len(row), total)] = torch.tensor(row[:total])
    limit_B = (forced_len[:n_real] + max_new_tokens).clamp(max=total)
    start = min(len(p) for p in prompts)
    tokens_BS = forced_BS[:, :start].clone()
    done_B = torch.zeros(n_real, dtype=torch.bool, device=device)
    sampler = torch.Generator().manual_seed(seed)
    cache = KVCache(len(model.blocks))
    step_logits: list[torch.Tensor] = []
    logits_BV = model(tokens_BS, cache=cache).logits[:, -1]
    for position in range(start, total):
        if keep_logits:
            step_logits.append(logits_BV)
        sampled_B = sample_next(logits_BV, sampler, temperature=temperature, top_k=top_k, top_p=top_p)
        next_B = torch.where(position < forced_len, forced_BS[:, position], sampled_B)
        tokens_BS = torch.cat([tokens_BS, next_B[:, None]], dim=1)
        generated_B = position >= forced_len[:n_real]
        if eos_id is not None:
            done_B |= generated_B & (next_B[:n_real] == eos_id)
        done_B |= position + 1 >= limit_B
        if bool(done_B.all()) or position + 1 == total:
            break
        logits_BV = model(next_B[:, None], cache=cache).logits[:, -1]

    new_tokens = []
    for r, prompt in enumerate(prompts):
        produced = tokens_BS[r, len(prompt) : int(limit_B[r])].tolist()
        if eos_id is not None and eos_id in produced:
            produced = produced[: produced.index(eos_id)]
        new_tokens.append(produced)
    return Generation(new_tokens, tokens_BS, n_rows - n_real, step_logits)


def generate_text(model: Transformer, tokenizer, prompts: list[str], **options) -> list[str]:
    """Decode text prompts (an empty prompt starts from the eos token); options as for `generate_tokens`."""
    encoded = [ids or [tokenizer.eos_id] for ids in tokenizer.encode_batch(list(prompts))]
    result = generate_tokens(model, encoded, eos_id=tokenizer.eos_id, **options)
    return [tokenizer.decode(ids) for ids in result.new_tokens]
