"""Plain-loop float64 references of the sparse baselines, written from docs/method.md §2.

Deliberately slow and explicit: loops over routing groups, tokens and experts; the only vectorised operation is
one token's vector-matrix product. Used by the tests to check the batched Token Choice and Expert Choice layers,
under each `expert_dispatch` (`with_dispatch`: the grouped GEMM has no float64 kernel, so it is checked in float32).
"""

from __future__ import annotations

import math

import torch
from helpers import FLOAT64_TOL
from reference import expert_output, plain_softmax, reference_logits
from torch import nn

DISPATCHES: tuple[str, ...] = ("padded", "grouped")
"""The expert_dispatch values the routing-rule tests run under (`with_dispatch`)."""

FLOAT32_TOL = 1e-5
"""How closely a float32 layer must match the float64 reference, or the other dispatch (absolute and relative)."""


def with_dispatch(layer: nn.Module, dispatch: str) -> nn.Module:
    """A float64 test layer set to run its experts by `dispatch`; "grouped" also turns it into float32, as
    torch._grouped_mm has no float64 kernel (its d_model and expert_size must then be multiples of 4)."""
    layer.expert_dispatch = dispatch
    return layer.float() if dispatch == "grouped" else layer


def tolerance(dtype: torch.dtype) -> float:
    """FLOAT64_TOL for float64 tensors, FLOAT32_TOL for float32 ones."""
    return FLOAT64_TOL if dtype == torch.float64 else FLOAT32_TOL


def _router_logits(x: torch.Tensor, router: torch.Tensor) -> dict[tuple[int, int], list[float]]:
    """Each token's router logits z[e] as a list of floats, keyed by (example, position)."""
    z = reference_logits(x, router)
    batch, seq_len, _ = x.shape
    return {(b, s): [float(v) for v in z[b, s]] for b in range(batch) for s in range(seq_len)}


def reference_token_choice(
    x: torch.Tensor,
    router: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    *,
    top_k: int = 1,
    capacity_factor: float | None = 1.25,
    scope: str = "batch",
    group_size: int | None = None,
    load_balance_weight: float = 0.01,
    z_loss_weight: float = 0.0,
    drop_rule: str = "probability",
    norm_topk_prob: bool = False,
) -> tuple[torch.Tensor, dict[str, float], set[tuple[int, int, int]]]:
    """Token Choice, docs/method.md §2: returns (dx[B, S, D] float64, aux losses, kept (b, s, expert) assignments).

    Routing groups: "batch" = all tokens in (example, position) order; "group" = for each group g of G
    consecutive examples and each position s, the G tokens (g*G + i, s) in order of i. Dropless uses one group.
    Each token picks its k most probable experts (ties: lower expert index). Each expert keeps, per routing group,
    the C = min(floor(cf*T*k/E), T) assignments of highest probability; equal probabilities: earlier token first.
    drop_rule "authors": each expert keeps its first C - 1 assignments in group order instead (first come, first
    served, as the authors' code).
    A kept assignment adds p[e] * expert_e(x), or with norm_topk_prob p[e] / (sum of the token's top-k p) (the
    ranking still by p). SwiGLU experts (W1 [E, D, 2H]) through `expert_output`.
    """
    x = x.double()
    router, w1, w2 = router.double(), w1.double(), w2.double()
    batch, seq_len, dim = x.shape
    n_experts = router.shape[1]
    logits = _router_logits(x, router)
    probs = {token: plain_softmax(z) for token, z in logits.items()}

    if not capacity_factor or scope == "batch":
        groups = [[(b, s) for b in range(batch) for s in range(seq_len)]]
    else:
        assert batch % group_size == 0
        groups = [
            [(g * group_size + i, s) for i in range(group_size)]
            for g in range(batch // group_size)
            for s in range(seq_len)
        ]

    out = torch.zeros(batch, seq_len, dim, dtype=torch.float64)
    kept: set[tuple[int, int, int]] = set()
    counts = [0] * n_experts
    for members in groups:
        n_tokens = len(members)
        if capacity_factor:
            capacity = min(math.floor(capacity_factor * n_tokens * top_k / n_experts), n_tokens)
        else:
            capacity = n_tokens
        if capacity_factor and drop_rule == "authors":
            capacity -= 1
        # per expert: (probability, order in the group, token) of the tokens that chose it
        queues: list[list[tuple[float, int, tuple[int, int]]]] = [[] for _ in range(n_experts)]
        combine: dict[tuple[tuple[int, int], int], float] = {}
        for order, token in enumerate(members):
            p = probs[token]
            choices = sorted(range(n_experts), key=lambda e: (-p[e], e))[:top_k]
            top_total = sum(p[e] for e in choices)
            for e in choices:
                queues[e].append((p[e], order, token))
                combine[(token, e)] = p[e] / top_total if norm_topk_prob else p[e]
                counts[e] += 1
        for e in range(n_experts):
            by_order = drop_rule == "authors"
            ranked = sorted(queues[e], key=lambda item: item[1] if by_order else (-item[0], item[1]))
            for _, _, (b, s) in ranked[:capacity]:
                out[b, s] = out[b, s] + combine[((b, s), e)] * expert_output(x[b, s], w1, w2, e)
                kept.add((b, s, e))

    n_all = batch * seq_len
    aux: dict[str, float] = {}
    if load_balance_weight > 0:
        mean_p = [sum(p[e] for p in probs.values()) / n_all for e in range(n_experts)]
        aux["load_balance"] = (
            load_balance_weight * n_experts * sum(mean_p[e] * counts[e] / n_all for e in range(n_experts))
        )
    if z_loss_weight > 0:
        lse = [max(z) + math.log(sum(math.exp(v - max(z)) for v in z)) for z in logits.values()]
        aux["router_z"] = z_loss_weight * sum(v * v for v in lse) / n_all
    return out, aux, kept


def reference_expert_choice(
    x: torch.Tensor,
    router: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    group_size: int,
    *,
    tokens_per_expert: int = 1,
    ln_weight: torch.Tensor | None = None,
    ln_bias: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, set[tuple[int, int, int]]]:
    """Expert Choice, docs/method.md §2: returns (dx[B, S, D] float64, picked (b, s, expert) triples).

    For each group of G consecutive examples at position s: p[t] = softmax over experts; expert e picks the K
    tokens with the largest p[t][e]; a picked token's update is LayerNorm(sum_e p[t][e] * expert_e(x_t)) (biased
    variance, eps); an unpicked token's update is zero.
    """
    x = x.double()
    router, w1, w2 = router.double(), w1.double(), w2.double()
    batch, seq_len, dim = x.shape
    n_experts = router.shape[1]
    ln_weight = torch.ones(dim, dtype=torch.float64) if ln_weight is None else ln_weight.double()
    ln_bias = torch.zeros(dim, dtype=torch.float64) if ln_bias is None else ln_bias.double()
    probs = {token: plain_softmax(z) for token, z in _router_logits(x, router).items()}

    out = torch.zeros(batch, seq_len, dim, dtype=torch.float64)
    picked: set[tuple[int, int, int]] = set()
    for g in range(batch // group_size):
        for s in range(seq_len):
            members = [(g * group_size + i, s) for i in range(group_size)]
            total = {token: torch.zeros(dim, dtype=torch.float64) for token in members}
            chosen_tokens = set()
            for e in range(n_experts):
                ranked = sorted(members, key=lambda token: -probs[token][e])[:tokens_per_expert]
                for b, pos in ranked:
                    total[(b, pos)] = total[(b, pos)] + probs[(b, pos)][e] * expert_output(x[b, pos], w1, w2, e)
                    chosen_tokens.add((b, pos))
                    picked.add((b, pos, e))
            for b, pos in chosen_tokens:
                v = total[(b, pos)]
                mean = sum(float(c) for c in v) / dim
                var = sum((float(c) - mean) ** 2 for c in v) / dim
                out[b, pos] = (v - mean) / math.sqrt(var + eps) * ln_weight + ln_bias
    return out, picked
