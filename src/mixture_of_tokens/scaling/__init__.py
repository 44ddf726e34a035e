"""Fine-grained MoE scaling laws (Krajewski et al. 2024): the law, a fit from runs, and a compute-optimal planner.

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
from .runs import Run, load_runs, run_from_directory, synthetic_runs, write_runs_csv

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
    "synthetic_runs",
    "write_runs_csv",
]
