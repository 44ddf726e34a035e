"""A run directory's files are named once: the run's own files (summary.json, metrics.jsonl, checkpoints/) in
`training/run_files.py`, the checkpoint files (config.json, model.safetensors) in `checkpoint.py`. A syntax-tree walk
of the package fails on any string constant outside those modules that is a path through one of the names
("summary.json", "*/summary.json", f"{run}/checkpoints/step-1"); prose that mentions a file ("no summary.json yet") is
not a path and passes. The readers behave as the reports, the suite runner and the scaling fit need."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest

import mixture_of_tokens
from mixture_of_tokens.training.run_files import (
    CHECKPOINTS_DIR,
    METRICS_FILE,
    SUMMARY_FILE,
    final_loss,
    is_finished,
    read_run_metrics,
    read_summary,
)

PACKAGE = Path(mixture_of_tokens.__file__).parent
OWNERS = {
    SUMMARY_FILE: "training/run_files.py",
    METRICS_FILE: "training/run_files.py",
    CHECKPOINTS_DIR: "training/run_files.py",
    "config.json": "checkpoint.py",
    "model.safetensors": "checkpoint.py",
}
"""File name -> the one module that names it."""

ALLOWED: dict[tuple[str, str], str] = {}
"""(module, file name) -> why that module names the file itself. Every entry must still be needed."""


def named_files(source: str) -> list[tuple[int, str]]:
    """(line, file name) of every string constant in `source` that is a path through one of the owned names
    (docstrings, strings standing as statements, are prose)."""
    tree = ast.parse(source)
    prose = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            parts = node.value.split("/")
            found += [(node.lineno, name) for name in OWNERS if name in parts]
    return sorted(found)


def package_namings() -> dict[tuple[str, str], list[int]]:
    """{(module, file name): lines} for every module that names a file it does not own."""
    found: dict[tuple[str, str], list[int]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        for line, name in named_files(path.read_text()):
            if OWNERS[name] != relative:
                found.setdefault((relative, name), []).append(line)
    return found


def test_each_run_file_is_named_by_one_module() -> None:
    found = package_namings()
    offenders = {f"{where[0]}:{lines}: {where[1]}" for where, lines in found.items() if where not in ALLOWED}
    assert offenders == set(), f"name these through {sorted(set(OWNERS.values()))}"
    assert set(ALLOWED) - set(found) == set(), "an allowance is no longer needed: remove it from ALLOWED"


@pytest.mark.parametrize(
    "source",
    ['path = run / "summary.json"', 'runs = folder.glob("*/metrics.jsonl")', 'where = f"{run}/checkpoints/step-1"'],
)
def test_the_guard_finds_a_planted_file_name(source: str) -> None:
    assert len(named_files(source)) == 1


def test_the_guard_passes_prose() -> None:
    assert named_files('raise ValueError(f"{run} has no summary.json yet; wait for the run to finish.")') == []
    assert named_files('"""Checkpoints under RUN_DIR/checkpoints/step-N."""') == []


def test_an_unfinished_run_has_no_summary_and_metrics_so_far(tmp_path: Path) -> None:
    assert read_summary(tmp_path) is None and not is_finished(tmp_path)
    assert read_run_metrics(tmp_path) == []
    (tmp_path / METRICS_FILE).write_text('{"step": 1, "loss": 5.0}\n{"step": 2, "lo')  # a line cut off mid-write
    assert read_run_metrics(tmp_path) == [{"step": 1, "loss": 5.0}]


def test_a_finished_run_gives_its_summary_and_final_loss(tmp_path: Path) -> None:
    (tmp_path / SUMMARY_FILE).write_text(json.dumps({"run": "a", "final_eval_loss": 3.5}))
    assert is_finished(tmp_path)
    summary = read_summary(tmp_path)
    assert summary == {"run": "a", "final_eval_loss": 3.5} and final_loss(summary) == 3.5


@pytest.mark.parametrize("summary", [None, {}, {"final_eval_loss": None}, {"final_eval_loss": math.inf}])
def test_no_final_loss_without_a_finite_one(summary: dict | None) -> None:
    assert final_loss(summary) is None
