"""Fitting a scaling law to runs: Huber loss (delta 0.1) on log loss, BFGS from a grid of starts, a small L2.

As in Hoffmann et al. 2022 and Krajewski et al. 2024, positive coefficients are fitted through their logarithms
(theta = log c, log g, gamma, log a, alpha, log b, beta), and log L is computed with log-sum-exp so no start can
produce a negative prediction. The Huber loss on log L keeps a few odd runs (a diverged or unfinished run) from
pulling the fit; the tiny L2 on theta only breaks ties along near-flat directions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize

from ..progress import progress_bar
from .law import DenseLaw, FineGrainedLaw, Law
from .runs import Run

FINE_GRAINED_NAMES = ("c", "g", "gamma", "a", "alpha", "b", "beta")
DENSE_NAMES = ("c", "a", "alpha", "b", "beta")
_LOG_NAMES = {"c", "g", "a", "b"}  # fitted through their logarithm
LAW_KINDS = ("fine-grained", "dense")


@dataclass
class FitResult:
    law: Law
    kind: str
    n_runs: int
    objective: float
    train_rmse: float
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    """95% percentile-bootstrap intervals per coefficient (empty when no bootstrap was run)."""
    n_bootstrap: int = 0
    heldout_rmse: float | None = None
    """RMSE (nats) on runs held out of a separate fit; None when there were too few runs to hold any out."""
    n_heldout: int = 0

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "coefficients": self.law.as_dict(),
            "intervals_95": {k: list(v) for k, v in self.intervals.items()},
            "n_runs": self.n_runs,
            "n_bootstrap": self.n_bootstrap,
            "train_rmse": self.train_rmse,
            "heldout_rmse": self.heldout_rmse,
            "n_heldout": self.n_heldout,
        }


def _names(kind: str) -> tuple[str, ...]:
    if kind not in LAW_KINDS:
        raise ValueError(f"law kind {kind!r} is not supported; allowed values: {', '.join(LAW_KINDS)}.")
    return FINE_GRAINED_NAMES if kind == "fine-grained" else DENSE_NAMES


def _theta_to_law(theta: np.ndarray, kind: str) -> Law:
    values = {n: (math.exp(t) if n in _LOG_NAMES else float(t)) for n, t in zip(_names(kind), theta)}
    return FineGrainedLaw(**values) if kind == "fine-grained" else DenseLaw(**values)


def _log_loss_and_jacobian(theta: np.ndarray, log_N, log_D, log_k, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """log L_pred per run [R] and its derivative with respect to theta [R, P]."""
    if kind == "fine-grained":
        log_c, log_g, gamma, log_a, alpha, log_b, beta = theta
        coef_terms_R2 = np.stack([log_g - gamma * log_k, np.full_like(log_k, log_a)], axis=1)
        log_coef_R = np.logaddexp(coef_terms_R2[:, 0], coef_terms_R2[:, 1])
        share_R2 = np.exp(coef_terms_R2 - log_coef_R[:, None])  # d log_coef / d (log g - gamma log k, log a)
    else:
        log_c, log_a, alpha, log_b, beta = theta
        log_coef_R = np.full_like(log_N, log_a)
    terms_R3 = np.stack([np.full_like(log_N, log_c), log_coef_R - alpha * log_N, log_b - beta * log_D], axis=1)
    log_L_R = np.logaddexp.reduce(terms_R3, axis=1)
    p_R3 = np.exp(terms_R3 - log_L_R[:, None])
    if kind == "fine-grained":
        jac_RP = np.stack(
            [
                p_R3[:, 0],
                p_R3[:, 1] * share_R2[:, 0],
                -p_R3[:, 1] * share_R2[:, 0] * log_k,
                p_R3[:, 1] * share_R2[:, 1],
                -p_R3[:, 1] * log_N,
                p_R3[:, 2],
                -p_R3[:, 2] * log_D,
            ],
            axis=1,
        )
    else:
        jac_RP = np.stack([p_R3[:, 0], p_R3[:, 1], -p_R3[:, 1] * log_N, p_R3[:, 2], -p_R3[:, 2] * log_D], axis=1)
    return log_L_R, jac_RP


def _fit_theta(data, kind: str, starts: Sequence[np.ndarray], delta: float, l2: float) -> tuple[np.ndarray, float]:
    log_N, log_D, log_k, log_loss = data

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        log_L, jac = _log_loss_and_jacobian(theta, log_N, log_D, log_k, kind)
        r = log_L - log_loss
        small = np.abs(r) <= delta
        huber = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta))
        psi = np.where(small, r, delta * np.sign(r))
        return float(huber.sum() + l2 * theta @ theta), jac.T @ psi + 2 * l2 * theta

    best_theta, best_value = None, math.inf
    for start in starts:
        with np.errstate(over="ignore", invalid="ignore"):
            result = minimize(objective, start, jac=True, method="BFGS", options={"gtol": 1e-10, "maxiter": 2000})
        if np.isfinite(result.fun) and result.fun < best_value:
            best_theta, best_value = result.x, float(result.fun)
    if best_theta is None:
        raise ValueError("the scaling-law fit did not converge from any start; check the runs' losses are positive.")
    return best_theta, best_value


def _start_grid(kind: str, min_loss: float) -> list[np.ndarray]:
    """Starts spanning plausible exponents and scales (Hoffmann et al. fit from a grid the same way)."""
    starts = []
    for alpha, beta, log_c, log_ab in itertools.product(
        (0.1, 0.3), (0.1, 0.3), (math.log(0.2 * min_loss), math.log(0.7 * min_loss)), (math.log(5), math.log(50))
    ):
        if kind == "fine-grained":
            for gamma in (0.3, 0.7):
                starts.append(np.array([log_c, math.log(2.0), gamma, log_ab, alpha, log_ab, beta]))
        else:
            starts.append(np.array([log_c, log_ab, alpha, log_ab, beta]))
    return starts


def _arrays(runs: Sequence[Run]) -> tuple[np.ndarray, ...]:
    return (
        np.log([r.params for r in runs]),
        np.log([r.tokens for r in runs]),
        np.log([r.granularity for r in runs]),
        np.log([r.loss for r in runs]),
    )


def _rmse(law: Law, runs: Sequence[Run]) -> float:
    predicted = law.loss([r.params for r in runs], [r.tokens for r in runs], [r.granularity for r in runs])
    return float(np.sqrt(np.mean((predicted - np.array([r.loss for r in runs])) ** 2)))


def check_runs(runs: Sequence[Run], kind: str) -> None:
    n_coefficients = len(_names(kind))
    if len(runs) < n_coefficients:
        raise ValueError(f"a {kind} fit needs at least {n_coefficients} runs (one per coefficient), got {len(runs)}.")
    if kind == "fine-grained" and len({r.granularity for r in runs}) < 2:
        raise ValueError("a fine-grained fit needs runs at two or more granularities to identify g and gamma.")


def fit_law(
    runs: Sequence[Run],
    *,
    kind: str = "fine-grained",
    delta: float = 0.1,
    l2: float = 1e-7,
    n_bootstrap: int = 200,
    holdout_fraction: float = 0.2,
    seed: int = 0,
    progress: bool = False,
) -> FitResult:
    """Fit the law to `runs`; bootstrap intervals on the coefficients; RMSE of a separate fit on held-out runs."""
    check_runs(runs, kind)
    runs = list(runs)
    starts = _start_grid(kind, min(r.loss for r in runs))
    theta, value = _fit_theta(_arrays(runs), kind, starts, delta, l2)
    law = _theta_to_law(theta, kind)
    result = FitResult(law=law, kind=kind, n_runs=len(runs), objective=value, train_rmse=_rmse(law, runs))
    rng = np.random.default_rng(seed)

    n_heldout = int(round(holdout_fraction * len(runs)))
    if n_heldout >= 1 and len(runs) - n_heldout >= len(theta):
        order = rng.permutation(len(runs))
        held, kept = [runs[i] for i in order[:n_heldout]], [runs[i] for i in order[n_heldout:]]
        split_theta, _ = _fit_theta(_arrays(kept), kind, [theta, *starts[:4]], delta, l2)
        result.heldout_rmse = _rmse(_theta_to_law(split_theta, kind), held)
        result.n_heldout = n_heldout

    if n_bootstrap > 0:
        samples = []
        bar = progress_bar(n_bootstrap, "bootstrap", disable=not progress, dynamic_ncols=True)
        for _ in range(n_bootstrap):
            pick = rng.integers(0, len(runs), len(runs))
            sample_theta, _ = _fit_theta(_arrays([runs[i] for i in pick]), kind, [theta], delta, l2)
            samples.append(list(_theta_to_law(sample_theta, kind).as_dict().values()))
            bar.update()
        bar.close()
        low, high = np.percentile(np.array(samples), [2.5, 97.5], axis=0)
        result.intervals = {n: (float(lo), float(hi)) for n, lo, hi in zip(_names(kind), low, high)}
        result.n_bootstrap = n_bootstrap
    return result
