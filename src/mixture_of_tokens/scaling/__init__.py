"""Fine-grained MoE scaling laws (Krajewski et al. 2024): the law, a fit from runs, and a compute-optimal planner.

Notation. The paper writes granularity G and expansion rate E; in this project G is the MoT group size and E the
number of experts (legend in `layers/__init__.py`), so this package spells both out: `granularity` in code, tables
and plots, and k in formulas, the k of MoT's "/nE/k" naming (k = d_ff / expert width); `expansion` for the
expansion rate (total expert parameters / dense FF parameters, the n of "/nE/k", the MoT group size).
N = non-embedding parameters (every expert counted), D = training tokens:

    L(N, D, k) = c + (g / k^gamma + a) * N^-alpha + b * D^-beta

from mixture_of_tokens.scaling import PAPER_LAW, plan, fit_law, load_runs
plan(1e21).best.granularity            # 16
fit_law(load_runs("runs/")).law        # coefficients fitted to your runs
"""

from .fit import FitResult, fit_law
from .law import (
    PAPER_DENSE_LAW,
    PAPER_EXPANSION,
    PAPER_LAW,
    DenseLaw,
    FineGrainedLaw,
    dense_flops_per_token,
    dense_params,
    load_laws,
    moe_flops_per_token,
    moe_params,
)
from .plan import GRANULARITIES, MoTPreset, Plan, ShapePoint, dense_flops_for_loss, optimal_dense, parse_budgets, plan
from .runs import Run, load_runs, run_from_directory, write_runs_csv

__all__ = [
    "GRANULARITIES",
    "PAPER_DENSE_LAW",
    "PAPER_EXPANSION",
    "PAPER_LAW",
    "DenseLaw",
    "FineGrainedLaw",
    "FitResult",
    "MoTPreset",
    "Plan",
    "Run",
    "ShapePoint",
    "dense_flops_for_loss",
    "dense_flops_per_token",
    "dense_params",
    "fit_law",
    "load_laws",
    "load_runs",
    "moe_flops_per_token",
    "moe_params",
    "optimal_dense",
    "parse_budgets",
    "plan",
    "run_from_directory",
    "write_runs_csv",
]
