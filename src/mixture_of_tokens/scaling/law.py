"""The fine-grained MoE scaling law of Krajewski et al. 2024 (arXiv 2402.07871), its dense twin and FLOP model.

Variables (notation in the package docstring): N = non-embedding parameters (all experts counted, not the active
ones), D = training tokens, k = granularity (dense FF width / expert width). The law was fitted at expansion rate 64
(total expert parameters / dense FF parameters). See docs/method.md §6.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

SHAPE_RATIO = 64
"""The paper's shape rule d_model = 64 * n_blocks."""
FF_COST = 6
"""c_f: training FLOPs per active parameter per token (forward 2 + backward 4)."""
ROUTER_COST = 14
"""c_r: training FLOPs per router weight per token (routing matmul, softmax, gating and their backward)."""
PAPER_EXPANSION = 64
"""The expansion rate the paper's coefficients were fitted at."""


@dataclass(frozen=True)
class FineGrainedLaw:
    """L(N, D, k) = c + (g / k^gamma + a) * N^-alpha + b * D^-beta, k = granularity."""

    c: float
    g: float
    gamma: float
    a: float
    alpha: float
    b: float
    beta: float

    def loss(self, N, D, granularity):
        """Predicted loss (nats/token); broadcasts over numpy arrays."""
        N, D, k = (np.asarray(v, dtype=np.float64) for v in (N, D, granularity))
        return self.c + (self.g / k**self.gamma + self.a) * N**-self.alpha + self.b * D**-self.beta

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class DenseLaw:
    """L(N, D) = c + a * N^-alpha + b * D^-beta (Chinchilla form)."""

    c: float
    a: float
    alpha: float
    b: float
    beta: float

    def loss(self, N, D, granularity=None):
        """Predicted loss (nats/token); `granularity` is accepted and ignored so both laws share one signature."""
        N, D = (np.asarray(v, dtype=np.float64) for v in (N, D))
        return self.c + self.a * N**-self.alpha + self.b * D**-self.beta

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


Law = FineGrainedLaw | DenseLaw

PAPER_LAW = FineGrainedLaw(c=0.472, g=2.1, gamma=0.58, a=18.1, alpha=0.115, b=30.8, beta=0.147)
"""Krajewski et al. 2024, fitted at expansion rate 64 (docs/method.md §6)."""
PAPER_DENSE_LAW = DenseLaw(c=0.472, a=16.3, alpha=0.126, b=26.7, beta=0.127)
"""Krajewski et al. 2024, their dense Transformers on the same data."""


def law_from_dict(values: dict[str, float]) -> Law:
    """A law from its coefficients; the fine-grained law has g and gamma, the dense one does not."""
    for cls in (FineGrainedLaw, DenseLaw):
        names = [f.name for f in fields(cls)]
        if set(names) == set(values):
            return cls(**{name: float(values[name]) for name in names})
    raise ValueError(
        f"law coefficients {sorted(values)} are neither c, g, gamma, a, alpha, b, beta (fine-grained) "
        "nor c, a, alpha, b, beta (dense)."
    )


def load_laws(path: Path) -> tuple[FineGrainedLaw, DenseLaw]:
    """Read a `mot scaling fit --out` file: {"fine_grained": {...}, "dense": {...}}; a missing law keeps the paper's."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"--law {path} is not a file; pass a JSON file written by `mot scaling fit --out`.")
    data = json.loads(path.read_text())
    fine = law_from_dict(data["fine_grained"]["coefficients"]) if "fine_grained" in data else PAPER_LAW
    dense = law_from_dict(data["dense"]["coefficients"]) if "dense" in data else PAPER_DENSE_LAW
    if not isinstance(fine, FineGrainedLaw) or not isinstance(dense, DenseLaw):
        raise ValueError(f"--law {path}: 'fine_grained' and 'dense' hold the wrong kinds of coefficients.")
    return fine, dense


def d_model_of(n_blocks):
    """The paper's shape rule."""
    return SHAPE_RATIO * np.asarray(n_blocks, dtype=np.float64)


def moe_flops_per_token(n_blocks, *, expansion: float, granularity) -> np.ndarray:
    """Training FLOPs per token: (12 d^2 c_f + d * expansion * k * c_r) * n_blocks, k = granularity.

    12 d^2 are the active weights of a block (4 d^2 attention + 8 d^2 for one dense-FF's worth of experts);
    the router has d * expansion * k weights (one column per expert: there are expansion * k experts).
    Embeddings and attention scores are ignored.
    """
    d = d_model_of(n_blocks)
    return (12 * FF_COST * d**2 + ROUTER_COST * d * expansion * np.asarray(granularity, dtype=np.float64)) * n_blocks


def moe_params(n_blocks, *, expansion: float, granularity) -> np.ndarray:
    """Non-embedding parameters N: attention 4 d^2, experts 8 d^2 * expansion, router d * expansion * k, per block."""
    d = d_model_of(n_blocks)
    return (4 * d**2 + 8 * expansion * d**2 + d * expansion * np.asarray(granularity, dtype=np.float64)) * n_blocks


def dense_flops_per_token(n_blocks) -> np.ndarray:
    """Training FLOPs per token of the dense Transformer: 12 d^2 c_f * n_blocks."""
    return 12 * FF_COST * d_model_of(n_blocks) ** 2 * n_blocks


def dense_params(n_blocks) -> np.ndarray:
    """Non-embedding parameters of the dense Transformer: 12 d^2 per block (d_ff = 4 d)."""
    return 12 * d_model_of(n_blocks) ** 2 * n_blocks
