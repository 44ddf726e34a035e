"""Runs to fit a law to: a CSV/JSON table, or a folder of this project's run directories.

A table has columns N, D, granularity, loss and optionally name and kind ("fine-grained", the default, or
"dense"). Tables written before the package took the project's vocabulary are still read: in such a legacy table
a `G` column (legacy name) stands for `granularity` and kind "mot" for "fine-grained".

Mapping of a run directory (summary.json + config.json written by `mot train`) to the law's variables:
N = summary "counts" -> "non_embedding_params" (every expert counted), D = train.steps * train.batch_size *
model.max_seq_len (tokens seen), loss = "final_eval_loss". A run whose layer has a scaling shape (MoT) is kind
"fine-grained" with granularity = d_ff / expert_size (the k of "/nE/k") and expansion rate = group_size (the n);
any other run is kind "dense" with granularity 1 and is fitted only by the dense law, never mixed into the
fine-grained one.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import CONFIG_FILE, read_config
from ..config import ModelConfig
from ..layers import layer_class
from ..training.run_files import SUMMARY_FILE, is_finished, read_summary

REQUIRED_COLUMNS = ("N", "D", "granularity", "loss")
KINDS = ("fine-grained", "dense")
"""Run kinds: "fine-grained" (any fine-grained MoE/MoT, fitted by the fine-grained law) or "dense"."""
LEGACY_GRANULARITY_COLUMN = "G"  # legacy: older tables named the granularity column G (now the group size's letter)
LEGACY_KINDS = {"mot": "fine-grained"}
"""Legacy kind names still read, and the kind each stands for."""


@dataclass(frozen=True)
class Run:
    """One training run, reduced to the law's variables."""

    name: str
    params: float
    """N: non-embedding parameters."""
    tokens: float
    """D: training tokens."""
    granularity: float
    """k: dense FF width / expert width (1 for dense runs)."""
    loss: float
    """final eval loss, nats/token."""
    kind: str = "fine-grained"
    """"fine-grained" (any fine-grained MoE/MoT) or "dense"; the legacy "mot" is read as "fine-grained"."""
    expansion: float | None = None
    """expansion rate (MoT group size) when known."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", LEGACY_KINDS.get(self.kind, self.kind))


def _number(value, column: str, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: column {column} holds {value!r}, not a number.") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{where}: column {column} must be a positive number, got {value!r}.")
    return number


def _from_rows(rows: list[dict], source: Path) -> list[Run]:
    if not rows:
        raise ValueError(f"runs table {source} has no rows.")
    columns = set(rows[0])
    # legacy: a table with the old column name reads it as granularity
    granularity_column = LEGACY_GRANULARITY_COLUMN if LEGACY_GRANULARITY_COLUMN in columns else "granularity"
    if granularity_column != "granularity" and "granularity" in columns:
        raise ValueError(
            f"runs table {source} has both a granularity column and its legacy name {granularity_column}; keep one."
        )
    kinds = [str(row.get("kind") or KINDS[0]).strip().lower() for row in rows]
    kinds = [LEGACY_KINDS.get(kind, kind) for kind in kinds]
    all_dense = all(kind == "dense" for kind in kinds)
    required = [c for c in REQUIRED_COLUMNS if not (c == "granularity" and all_dense)]
    present = columns | ({"granularity"} if granularity_column in columns else set())
    missing = [c for c in required if c not in present]
    if missing:
        raise ValueError(
            f"runs table {source} lacks column(s) {', '.join(missing)}; required: N, D, granularity, loss "
            "(optional: name, kind = fine-grained|dense)."
        )
    runs = []
    for index, (row, kind) in enumerate(zip(rows, kinds)):
        where = f"runs table {source}, row {index + 1}"
        if kind not in KINDS:
            raise ValueError(f"{where}: kind {kind!r} is not supported; allowed values: {', '.join(KINDS)}.")
        value = row.get(granularity_column)
        granularity = 1.0 if kind == "dense" and value in (None, "") else _number(value, granularity_column, where)
        runs.append(
            Run(
                name=str(row.get("name") or f"run{index + 1}"),
                params=_number(row.get("N"), "N", where),
                tokens=_number(row.get("D"), "D", where),
                granularity=granularity,
                loss=_number(row.get("loss"), "loss", where),
                kind=kind,
            )
        )
    return runs


def run_from_directory(directory: Path) -> Run:
    """A finished run directory of `mot train` as a Run (see the module docstring for the mapping)."""
    directory = Path(directory)
    try:
        summary = read_summary(directory)
        if summary is None:
            raise FileNotFoundError(f"no {SUMMARY_FILE}")
        config = read_config(directory)
        model, train = config["model"], config["train"]
        loss = float(summary["final_eval_loss"])
        params = float(summary["counts"]["non_embedding_params"])
        tokens = float(train["steps"]) * float(train["batch_size"]) * float(model["max_seq_len"])
    except (OSError, KeyError, TypeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{directory} is not a finished run directory ({SUMMARY_FILE} with final_eval_loss and counts, "
            f"{CONFIG_FILE} with model and train): {error!r}."
        ) from None
    model_config = ModelConfig(**model)
    shape = layer_class(model_config.ffn).scaling_shape(model_config)  # None: not a fine-grained layer
    return Run(
        name=summary.get("run") or directory.name,
        params=params,
        tokens=tokens,
        granularity=shape[0] if shape else 1.0,
        loss=loss,
        kind=KINDS[0] if shape else KINDS[1],
        expansion=shape[1] if shape else None,
    )


def load_runs(source: str | Path) -> list[Run]:
    """Runs from a .csv or .json table (columns N, D, granularity, loss; optional name, kind) or a folder of run dirs.

    A legacy table with a `G` column instead of `granularity`, or kind "mot" instead of "fine-grained", reads the same.
    """
    source = Path(source)
    if source.is_dir():
        candidates = [source] if is_finished(source) else []
        candidates += sorted(p for p in source.iterdir() if is_finished(p))
        if not candidates:
            raise ValueError(
                f"--runs {source} holds no run directories (folders with {SUMMARY_FILE} and {CONFIG_FILE})."
            )
        return [run_from_directory(d) for d in candidates]
    if not source.is_file():
        raise ValueError(f"--runs {source} does not exist; pass a .csv or .json table or a folder of run directories.")
    if source.suffix.lower() == ".csv":
        with source.open(newline="") as handle:
            rows = [dict(row) for row in csv.DictReader(handle)]
    elif source.suffix.lower() == ".json":
        data = json.loads(source.read_text())
        rows = data.get("runs") if isinstance(data, dict) else data
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ValueError(f"runs table {source} must be a JSON list of objects (or {{'runs': [...]}}).")
    else:
        raise ValueError(f"--runs {source} has suffix {source.suffix!r}; allowed: .csv, .json, or a directory.")
    return _from_rows(rows, source)


def write_runs_csv(runs: list[Run], path: Path) -> Path:
    """The table `load_runs` reads back."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["name", "N", "D", "granularity", "loss", "kind"])
        for r in runs:
            writer.writerow([r.name, repr(r.params), repr(r.tokens), repr(r.granularity), repr(r.loss), r.kind])
    return path
