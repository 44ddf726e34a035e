"""Compute-optimal planning: for a FLOP budget, the best granularity, model shape and token count.

For each granularity the budget F fixes D = F / flops_per_token(n_blocks), so the loss is a function of the
model size alone; it is minimised over a continuous log(n_blocks) with Brent's method (bounded), then the
granularity with the lowest loss is picked. The reported shape rounds n_blocks to an integer (d_model =
64 * n_blocks) and spends the whole budget on tokens, so its loss is a touch above the continuous optimum.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import brentq, minimize_scalar

from ..config import ModelConfig
from .law import (
    PAPER_DENSE_LAW,
    PAPER_EXPANSION,
    PAPER_LAW,
    DenseLaw,
    FineGrainedLaw,
    dense_flops_per_token,
    dense_params,
    moe_flops_per_token,
    moe_params,
)

GRANULARITIES: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256)
"""The set the paper searches over."""
_LOG_BLOCKS_BOUNDS = (math.log(0.25), math.log(4096.0))
_FLOPS_RANGE = (1e12, 1e32)


@dataclass(frozen=True)
class ShapePoint:
    """One model trained on one budget: its shape, size, tokens and predicted loss."""

    granularity: int | None
    """None for the dense Transformer."""
    n_blocks_continuous: float
    loss_continuous: float
    n_blocks: int
    d_model: int
    params: float
    tokens: float
    loss: float


@dataclass(frozen=True)
class MoTPreset:
    """The MoT configuration matching a planned point: /{group_size}E/{granularity} at d_ff = 4 d_model."""

    name: str
    d_model: int
    n_blocks: int
    n_heads: int
    """head dimension 64, as in the paper's shapes"""
    d_ff: int
    group_size: int
    n_experts: int
    expert_size: int

    def model_config(self, **overrides: object) -> ModelConfig:
        """The ModelConfig of this shape, MoT in every block as the law assumes (other fields: defaults)."""
        fields = {k: v for k, v in asdict(self).items() if k != "name"}
        return ModelConfig(**fields, ffn="mot", ffn_blocks="all", **overrides)


@dataclass(frozen=True)
class Plan:
    flops: float
    expansion: float
    best: ShapePoint
    per_granularity: list[ShapePoint]
    dense: ShapePoint
    dense_flops_to_match: float
    """FLOPs a compute-optimal dense model needs to reach the best fine-grained loss."""
    mot: MoTPreset

    @property
    def dense_flop_multiple(self) -> float:
        return self.dense_flops_to_match / self.flops

    def as_dict(self) -> dict:
        return {**asdict(self), "dense_flop_multiple": self.dense_flop_multiple}


def check_budget(flops: float) -> float:
    flops = float(flops)
    if not math.isfinite(flops) or flops <= 0:
        raise ValueError(f"--flops must be a positive number of training FLOPs (e.g. 1e21), got {flops}.")
    if not _FLOPS_RANGE[0] <= flops <= _FLOPS_RANGE[1]:
        raise ValueError(
            f"--flops {flops:.3g} is outside the planner's range {_FLOPS_RANGE[0]:.0e} to {_FLOPS_RANGE[1]:.0e}."
        )
    return flops


def check_granularities(granularities) -> tuple[int, ...]:
    values = tuple(int(k) for k in granularities)
    if not values or any(k < 1 for k in values):
        raise ValueError(f"--granularities must be positive integers (e.g. 1,2,4,8), got {list(granularities)}.")
    return tuple(sorted(set(values)))


def _moe_shape(law: FineGrainedLaw, flops: float, granularity: int, expansion: float):
    def point(n_blocks: float) -> tuple[float, float, float]:
        params = float(moe_params(n_blocks, expansion=expansion, granularity=granularity))
        tokens = flops / float(moe_flops_per_token(n_blocks, expansion=expansion, granularity=granularity))
        return params, tokens, float(law.loss(params, tokens, granularity))

    return point


def _dense_shape(law: DenseLaw, flops: float):
    def point(n_blocks: float) -> tuple[float, float, float]:
        params = float(dense_params(n_blocks))
        tokens = flops / float(dense_flops_per_token(n_blocks))
        return params, tokens, float(law.loss(params, tokens))

    return point


def _optimise(point, granularity: int | None) -> ShapePoint:
    """Minimise the loss over log(n_blocks), then report the rounded shape with the budget spent on tokens."""
    result = minimize_scalar(
        lambda x: point(math.exp(x))[2], bounds=_LOG_BLOCKS_BOUNDS, method="bounded", options={"xatol": 1e-7}
    )
    n_continuous = math.exp(result.x)
    n_blocks = max(1, round(n_continuous))
    params, tokens, loss = point(n_blocks)
    return ShapePoint(
        granularity=granularity,
        n_blocks_continuous=n_continuous,
        loss_continuous=float(result.fun),
        n_blocks=n_blocks,
        d_model=int(64 * n_blocks),
        params=params,
        tokens=tokens,
        loss=loss,
    )


def optimal_dense(flops: float, law: DenseLaw = PAPER_DENSE_LAW) -> ShapePoint:
    """The compute-optimal dense Transformer for a budget."""
    return _optimise(_dense_shape(law, check_budget(flops)), None)


def dense_flops_for_loss(target_loss: float, law: DenseLaw = PAPER_DENSE_LAW, start: float = 1e18) -> float:
    """The budget at which the compute-optimal dense model's (continuous) loss equals `target_loss`."""
    if target_loss <= law.c:
        return math.inf

    def gap(log_flops: float) -> float:
        return _optimise(_dense_shape(law, math.exp(log_flops)), None).loss_continuous - target_loss

    low = high = math.log(start)
    while gap(low) < 0:
        low -= math.log(10.0)
    while gap(high) > 0:
        high += math.log(10.0)
        if high > math.log(1e60):
            return math.inf
    return math.exp(brentq(gap, low, high, xtol=1e-9))


def mot_preset(point: ShapePoint, expansion: float) -> MoTPreset:
    """MoT /nE/k with n = expansion rate (group size) and k = granularity: n*k experts of width d_ff/k."""
    d_ff = 4 * point.d_model
    granularity = int(point.granularity or 1)
    group_size = int(round(expansion))
    return MoTPreset(
        name=f"/{group_size}E/{granularity}" if granularity > 1 else f"/{group_size}E",
        d_model=point.d_model,
        n_blocks=point.n_blocks,
        n_heads=point.n_blocks,
        d_ff=d_ff,
        group_size=group_size,
        n_experts=group_size * granularity,
        expert_size=max(1, round(d_ff / granularity)),  # exact for k a power of 2 up to 256 (d_ff = 256*n_blocks)
    )


def plan(
    flops: float,
    *,
    law: FineGrainedLaw = PAPER_LAW,
    dense_law: DenseLaw = PAPER_DENSE_LAW,
    granularities=GRANULARITIES,
    expansion: float = PAPER_EXPANSION,
) -> Plan:
    """The compute-optimal granularity and shape for one budget, next to the compute-optimal dense model."""
    flops = check_budget(flops)
    granularities = check_granularities(granularities)
    if not expansion >= 1:
        raise ValueError(f"--expansion must be at least 1 (the paper's law is fitted at 64), got {expansion}.")
    per_granularity = [_optimise(_moe_shape(law, flops, k, expansion), k) for k in granularities]
    best = min(per_granularity, key=lambda p: p.loss_continuous)
    return Plan(
        flops=flops,
        expansion=expansion,
        best=best,
        per_granularity=per_granularity,
        dense=optimal_dense(flops, dense_law),
        dense_flops_to_match=dense_flops_for_loss(best.loss_continuous, dense_law, start=flops),
        mot=mot_preset(best, expansion),
    )


def parse_budgets(text: str) -> list[float]:
    """ "1e21" -> [1e21]; "1e18:1e25" -> one budget per decade; "1e18:1e25:15" -> 15 log-spaced budgets."""
    parts = str(text).split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(
            f"--flops {text!r} is not a number or a range LOW:HIGH[:COUNT] (e.g. 1e21 or 1e18:1e25)."
        ) from None
    if len(parts) == 1:
        return [check_budget(values[0])]
    if len(parts) not in (2, 3):
        raise ValueError(f"--flops {text!r} is not a number or a range LOW:HIGH[:COUNT] (e.g. 1e21 or 1e18:1e25).")
    low, high = check_budget(values[0]), check_budget(values[1])
    if high <= low:
        raise ValueError(f"--flops {text!r}: the range's upper end must exceed its lower end.")
    if len(parts) == 3:
        count = int(values[2])
        if count < 2 or count != values[2]:
            raise ValueError(f"--flops {text!r}: COUNT must be an integer of at least 2.")
    else:
        count = max(2, round(math.log10(high / low)) + 1)
    return [float(f) for f in np.logspace(math.log10(low), math.log10(high), count)]
