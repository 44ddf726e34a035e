"""A run's device and precision are resolved once, by its plan (`RunPlan.device`, `RunPlan.precision`): the trainer,
the run directory's disk check and `mot train --dry-run` read the plan's values, and no other module of `training/`
(nor `mot train`) resolves them again: a syntax-tree walk fails on a call of resolve_device or resolve_precision
there outside plan.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from helpers import tiny_model_config, tiny_train_config

import mixture_of_tokens
from mixture_of_tokens.training.loop import Trainer
from mixture_of_tokens.training.plan import plan_run

PACKAGE = Path(mixture_of_tokens.__file__).parent
RUN_MODULES = [*sorted((PACKAGE / "training").glob("*.py")), PACKAGE / "cli" / "train.py"]
RESOLVERS = ("resolve_device", "resolve_precision")


def resolver_calls(source: str) -> list[str]:
    """The names of resolve_device / resolve_precision calls in `source`."""
    calls = [node.func for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)]
    names = [call.id if isinstance(call, ast.Name) else getattr(call, "attr", "") for call in calls]
    return [name for name in names if name in RESOLVERS]


def test_only_the_plan_resolves_a_runs_device_and_precision() -> None:
    found = {
        str(path.relative_to(PACKAGE)): calls
        for path in RUN_MODULES
        if path.name != "plan.py" and (calls := resolver_calls(path.read_text()))
    }
    assert found == {}, "read plan.device / plan.precision instead"
    assert resolver_calls("device = resolve_device(config.device)") == ["resolve_device"]  # the walk can fail


@pytest.mark.parametrize(("precision", "resolved"), [("auto", "fp32"), ("bf16-mixed", "bf16-mixed")])
def test_the_plan_resolves_device_and_precision_once(corpus, tmp_path, precision, resolved) -> None:
    config = tiny_train_config(corpus["source"], tmp_path / "run", steps=2, device="cpu", precision=precision)
    plan = plan_run(tiny_model_config(), config)
    assert plan.device == torch.device("cpu") and plan.precision.name == resolved
    assert plan.precision is plan.precision  # resolved once, then kept
    trainer = Trainer.from_plan(plan, data=corpus["data"], progress=False)
    try:
        assert trainer.device == plan.device and trainer.precision is plan.precision
    finally:
        trainer.lock.release()
