"""How queries are put into batches when a model's output for one row depends on the other rows.

MoT mixes tokens across the examples of a group, so a score measured in a batch depends on what else is in that
batch. Three policies make that explicit:

    plain     batch-independent models (dense feed-forward everywhere): queries are batched freely.
    protocol  the paper's protocol (docs/method.md §5): every query is scored alone in a batch of `rows` sequences
              (a multiple of the model's batch multiple, MoT's group size G; by default the smallest one >= 32,
              i.e. max(32, G): the authors scored a G=64 model in batches of 64); the other rows are random
              training-set sequences cut to the query's length, the query sits in one random row, and only that
              row counts.
    discrete  the same isolated batches with argmax routing (`mot_mode(routing="discrete")`). The argmax is still
              taken over the group, so a discrete score still depends on the other rows: it is isolated like
              `protocol`, not batched freely.

The filler rows and the query's row come from a generator seeded by (seed, a hash of the query's identity): its
text (context and continuation), never its position in a file, so a query's score does not depend on the other
queries, and `mot eval`, the lm-eval adapter and `Predictor` score the same text identically.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..config import ModelConfig
from ..layers import batch_multiple, check_group_size, rows_couple_at_inference
from ..model import mot_mode

POLICIES: tuple[str, ...] = ("auto", "plain", "protocol", "discrete")
DEFAULT_PROTOCOL_ROWS = 32


def is_batch_dependent(config: ModelConfig) -> bool:
    """True when any block's feed-forward layer mixes or routes across the batch at inference (each layer kind
    says so itself: e.g. MoT and Expert Choice do; Token Choice runs dropless at inference and does not)."""
    return rows_couple_at_inference(config)


def query_seed(seed: int, *identity: object) -> list[int]:
    """A generator seed from the run seed and a query's identity (stable across runs and processes)."""
    digest = hashlib.sha256("\x1f".join(str(part) for part in identity).encode()).digest()
    return [int(seed), *np.frombuffer(digest[:16], dtype=np.uint32).tolist()]


@dataclass(frozen=True)
class BatchPolicy:
    """The resolved policy: `name` is plain | protocol | discrete; `rows` is the isolated batch size; `multiple` is
    the model's batch multiple (`layers.batch_multiple`): rows couple only within consecutive blocks of that many
    rows (MoT: the group size)."""

    name: str
    rows: int = DEFAULT_PROTOCOL_ROWS
    seed: int = 0
    multiple: int | None = None

    @property
    def isolated(self) -> bool:
        return self.name in ("protocol", "discrete")

    def describe(self) -> str:
        if self.name == "plain":
            return "plain batches (the model is batch-independent)"
        routing = "argmax (discrete) routing" if self.name == "discrete" else "trained routing"
        return (
            f"{self.name}: each query alone in a batch of {self.rows} (group size {self.multiple}), "
            f"{self.rows - 1} training-set filler rows, {routing}, seed {self.seed}"
        )

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The model in the policy's routing mode for the duration of the block."""
        if self.name == "discrete":
            with mot_mode(model, routing="discrete"):
                yield
        else:
            yield

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "rows": self.rows, "seed": self.seed, "group_size": self.multiple}


def default_protocol_rows(config: ModelConfig) -> int:
    """Rows of an isolated batch unless set: the smallest multiple of the batch multiple that is at least 32
    (max(32, G) for MoT's power-of-two group sizes G)."""
    multiple = batch_multiple(config)
    return -(-DEFAULT_PROTOCOL_ROWS // multiple) * multiple


def resolve_policy(config: ModelConfig, name: str = "auto", *, rows: int | None = None, seed: int = 0):
    """Pick the policy for a model: `auto` is protocol for batch-dependent models and plain otherwise; `rows`
    None is `default_protocol_rows(config)`."""
    if rows is None:
        rows = default_protocol_rows(config)
    if name not in POLICIES:
        raise ValueError(f"mot-eval={name!r} is not supported; allowed values: {', '.join(POLICIES)}.")
    dependent = is_batch_dependent(config)
    if name == "auto":
        name = "protocol" if dependent else "plain"
    if not dependent:
        if name != "plain":
            raise ValueError(f"mot-eval={name!r} needs a batch-dependent (MoT) model; this model allows: plain.")
        return BatchPolicy("plain", rows=rows, seed=seed)
    if name == "plain":
        raise ValueError(
            "mot-eval='plain' would let one query's score depend on the others in its batch; "
            "allowed values for this model: auto, protocol, discrete."
        )
    multiple = batch_multiple(config)
    try:
        check_group_size(rows, multiple)
    except ValueError as error:
        raise ValueError(f"protocol-rows={rows}: {error}") from None
    return BatchPolicy(name, rows=rows, seed=seed, multiple=multiple)


def isolated_batch(
    query_ids: list[int], filler_tokens: np.ndarray, policy: BatchPolicy, identity: tuple[object, ...]
) -> tuple[torch.Tensor, int]:
    """ids[rows, len(query)] with the query in one seeded random row and filler windows elsewhere; and that row."""
    length = len(query_ids)
    if len(filler_tokens) < length + 1:
        raise ValueError(f"the filler text has {len(filler_tokens)} tokens, fewer than the query's {length}.")
    generator = np.random.default_rng(query_seed(policy.seed, *identity))
    row = int(generator.integers(0, policy.rows))
    starts = generator.integers(0, len(filler_tokens) - length, size=policy.rows)
    ids = np.asarray(filler_tokens[starts[:, None] + np.arange(length)], dtype=np.int64)
    ids[row] = query_ids
    return torch.from_numpy(ids), row
