"""`evaluate_checkpoint` is what `mot eval` runs: on the same checkpoint and settings it gives the numbers `mot eval`
prints and writes (held-out loss in every mode, zero-shot tasks), and its refusals name Python's settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_runs import run_mot
from helpers import TASK_FIXTURES, make_checkpoint

from mixture_of_tokens import EvalConfig, evaluate_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, module_cache_dir: Path) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("evaluate-checkpoint"), "mot")


def without_times(payload: Any) -> Any:
    """The results JSON without its timings (the only values two evaluations of one checkpoint may differ in)."""
    if isinstance(payload, dict):
        return {key: without_times(value) for key, value in payload.items() if key != "seconds"}
    if isinstance(payload, list):
        return [without_times(item) for item in payload]
    return payload


def test_evaluate_checkpoint_gives_the_numbers_mot_eval_prints(checkpoint, tmp_path, capsys):
    piqa = TASK_FIXTURES / "piqa.jsonl"
    argv = ["eval", "--checkpoint", str(checkpoint), "--tasks", "piqa", "--task-file", f"piqa={piqa}"]
    status, printed, _ = run_mot(argv + ["--protocol-rows", "8", "--out", str(tmp_path / "cli.json")], capsys)
    assert status == 0

    config = EvalConfig(tasks="piqa", protocol_rows=8, out=str(tmp_path / "python.json"))
    lines: list[str] = []
    results = evaluate_checkpoint(checkpoint, config, task_files={"piqa": piqa}, progress=False, echo=lines.append)

    assert results.path == tmp_path / "python.json"
    written = json.loads(results.path.read_text())
    assert written == json.loads(json.dumps(results.to_dict()))
    assert without_times(written) == without_times(json.loads((tmp_path / "cli.json").read_text()))
    modes = [result.mode.name for result in results.perplexity]
    assert modes == ["trained (G=4, softmax)", "discrete G=4", "G=1", "G=8"]
    for result in results.perplexity:  # the printed table holds the same losses
        assert f"{result.mode.name:<28} {result.loss:>8.4f} {result.perplexity:>11.2f}" in printed.splitlines()
    acc = results.tasks[0].metrics["acc"]
    assert results.tasks[0].n_docs == 3 and f"acc        {acc:>7.4f}" in printed
    # the lines handed to `echo` end what mot eval prints (after its data preparation), up to a task's seconds
    shown = printed.splitlines()[-len(lines) - 2 :]
    assert [line[:45] for line in shown[:-2]] == [line[:45] for line in lines]
    assert shown[-2:] == [f"policy: {results.policy.describe()}", f"results: {tmp_path / 'cli.json'}"]


def test_evaluate_checkpoint_writes_next_to_the_checkpoint_by_default(checkpoint):
    before = set(checkpoint.glob("eval-*.json"))
    results = evaluate_checkpoint(checkpoint, progress=False)
    assert results.tasks == [] and results.perplexity[0].mode.name == "trained (G=4, softmax)"
    assert results.path in set(checkpoint.glob("eval-*.json")) - before


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (EvalConfig(perplexity=False), "nothing to do: perplexity=False without tasks; name tasks with tasks="),
        (EvalConfig(tasks="mmlu"), "task 'mmlu' is unknown"),
        (EvalConfig(tc_capacity=True), "tc_capacity evaluates Token Choice layers with their capacity"),
    ],
)
def test_a_refusal_names_the_python_setting(checkpoint, config, message):
    with pytest.raises(ValueError, match="^" + message):
        evaluate_checkpoint(checkpoint, config, progress=False)
