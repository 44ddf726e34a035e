"""Routing statistics of the sparse layers and a monitor that warns when routing collapses onto one expert.

A sparse layer keeps a few detached tensors of its last forward (a `SparseRouting` record); the statistics are
computed only when read (`layer.stats`), so a training step that does not log pays nothing for them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class SparseRouting:
    """What one forward of a sparse layer decided, detached. A = token-expert assignments asked for.

    probs_NE: router probabilities (softmax over experts) of the N routed tokens.
    expert_A, token_A: the expert and the token (0..N-1) of each assignment; kept_A: False where capacity
    dropped it.
    """

    probs_NE: torch.Tensor
    expert_A: torch.Tensor
    token_A: torch.Tensor
    kept_A: torch.Tensor

    @property
    def n_experts(self) -> int:
        return self.probs_NE.shape[-1]


def expert_load(record: SparseRouting | None) -> torch.Tensor | None:
    """Share of the assignments each expert was asked to take (before drops), [E], sums to 1."""
    if record is None:
        return None
    assigned_E = torch.bincount(record.expert_A, minlength=record.n_experts).float()
    return assigned_E / assigned_E.sum().clamp_min(1.0)


@torch.no_grad()
def sparse_routing_statistics(record: SparseRouting | None) -> dict[str, torch.Tensor]:
    """Scalar diagnostics of one forward (0-d tensors, so `Transformer.routing_stats` can log them).

    dropped_ratio: assignments dropped by capacity / assignments; unrouted_ratio: tokens no expert updated;
    router_entropy: mean over tokens of H(p)/log E (1 = uniform; defined as 1 when E = 1);
    max_load: largest expert share of the assignments (1/E when balanced); max_over_mean_load: max_load * E.
    """
    if record is None:
        return {}
    probs_NE = record.probs_NE.float()
    n_tokens, n_experts = probs_NE.shape
    if n_experts > 1:
        entropy = (-torch.special.xlogy(probs_NE, probs_NE).sum(dim=-1) / math.log(n_experts)).mean()
    else:
        entropy = torch.ones((), device=probs_NE.device)
    load_E = expert_load(record)
    n_assigned = max(record.kept_A.numel(), 1)
    updated_N = torch.zeros(n_tokens, dtype=torch.bool, device=probs_NE.device)
    updated_N[record.token_A[record.kept_A]] = True
    return {
        "dropped_ratio": (~record.kept_A).sum().float() / n_assigned,
        "unrouted_ratio": 1.0 - updated_N.sum().float() / max(n_tokens, 1),
        "router_entropy": entropy,
        "max_load": load_E.max(),
        "max_over_mean_load": load_E.max() * n_experts,
    }


@torch.no_grad()
def routing_statistics(
    logits_RGE: torch.Tensor, merge_RGE: torch.Tensor, *, learned_temperature: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Mean/std of the normalised entropy H(w)/log G of merge weights along the group axis (dim 1), of the
    weights themselves and of the logits. With G = 1 the normalised entropy is defined as 1 (uniform)."""
    weights = merge_RGE.float()
    group_size = weights.shape[1]
    if group_size > 1:
        entropy_RE = -torch.special.xlogy(weights, weights).sum(dim=1) / math.log(group_size)
    else:
        entropy_RE = torch.ones_like(weights[:, 0])
    entropy_std, entropy_mean = torch.std_mean(entropy_RE, correction=0)
    weight_std, weight_mean = torch.std_mean(weights, correction=0)
    logit_std, logit_mean = torch.std_mean(logits_RGE.float(), correction=0)
    stats = {
        "entropy_mean": entropy_mean,
        "entropy_std": entropy_std,
        "weight_mean": weight_mean,
        "weight_std": weight_std,
        "logit_mean": logit_mean,
        "logit_std": logit_std,
    }
    if learned_temperature is not None:
        stats["temperature_mean"] = learned_temperature.float().mean()
    return stats


class CollapseMonitor:
    """Warns when one expert of a sparse layer takes more than `share` of its layer's assignments for
    `patience` consecutive checks (routing collapse: the other experts stop learning).

    `update(model, step)` reads every submodule with an `expert_load` property ([E] shares, before drops) and
    returns the warnings for this step: one per layer when its streak reaches `patience`, again every further
    `patience` steps while it lasts. Call it every step (or every logging step: patience counts calls).
    """

    def __init__(self, share: float = 0.5, patience: int = 100) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}.")
        if not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive integer, got {patience!r}.")
        self.share = share
        self.patience = patience
        self.streaks: dict[str, int] = {}

    def update(self, model: nn.Module, step: int) -> list[str]:
        warnings: list[str] = []
        for name, module in model.named_modules():
            load_E = getattr(module, "expert_load", None)
            if not isinstance(load_E, torch.Tensor) or load_E.numel() < 2:
                continue
            top_share, top_expert = (float(v) for v in load_E.max(dim=0))
            streak = self.streaks.get(name, 0) + 1 if top_share > self.share else 0
            self.streaks[name] = streak
            if streak and streak % self.patience == 0:
                warnings.append(
                    f"step {step}: {name or 'model'} routing collapse: expert {int(top_expert)} has taken more than "
                    f"{self.share:.0%} of the tokens for {streak} steps (now {top_share:.0%})."
                )
        return warnings
