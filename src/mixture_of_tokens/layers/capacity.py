"""Token Choice's capacity rule: how many token-expert assignments an expert keeps per routing group, and the
check of k. The refusals name the settings as the caller wrote them: the layer's (`top_k`, `capacity_factor`) or
ModelConfig's (`tc_top_k`, `tc_capacity_factor`: `prefix="tc_"`)."""

from __future__ import annotations

import math


def check_top_k(top_k: int, n_experts: int, *, prefix: str = "") -> None:
    """k in 1..E; `prefix` is the settings' prefix in the message (`tc_` for ModelConfig's, none for the layer's)."""
    if not isinstance(top_k, int) or not 1 <= top_k <= n_experts:
        raise ValueError(f"{prefix}top_k must be an integer in 1..n_experts={n_experts}, got {top_k!r}.")


def expert_capacity(
    capacity_factor: float | None,
    n_tokens: int,
    top_k: int,
    n_experts: int,
    drop_rule: str = "probability",
    *,
    prefix: str = "",
) -> int | None:
    """The assignments an expert keeps per routing group: C = min(floor(cf * T * k / E), T), or C - 1 under the
    authors' drop rule; None when dropless (cf None or 0). `prefix` as in `check_top_k`."""
    if not capacity_factor:
        return None
    lost = 1 if drop_rule == "authors" else 0
    capacity = min(math.floor(capacity_factor * n_tokens * top_k / n_experts), n_tokens) - lost
    if capacity < 1:
        rule = f" with {prefix}drop_rule='authors', which keeps C - 1" if lost else ""
        raise ValueError(
            f"{prefix}capacity_factor={capacity_factor} gives every expert 0 slots for {n_tokens} tokens per routing "
            f"group ({prefix}top_k={top_k}, n_experts={n_experts}{rule}); use {prefix}capacity_factor >= "
            f"{(1 + lost) * n_experts / (n_tokens * top_k):.3g} or 0 (dropless)."
        )
    return capacity
