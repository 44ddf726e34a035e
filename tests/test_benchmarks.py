"""benchmarks/gpu.py runs end to end (--quick on the CPU) and prints both tables whole: one row per layer setting
and per preset, with numeric ratios where a path runs; benchmarks/narrow.py (--quick) prints its tables with one
row per contender and a verdict that follows the printed ratio. Nothing here asserts a speed."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO_ROOT

BENCHMARKS = REPO_ROOT / "benchmarks"


def markdown_tables(text: str) -> dict[str, list[dict[str, str]]]:
    """{section heading: rows as {column: cell}} of every Markdown table under a '## ' heading."""
    tables: dict[str, list[dict[str, str]]] = {}
    heading, headers = "", None
    for line in text.splitlines():
        if line.startswith("## "):
            heading, headers = line[3:], None
        elif line.startswith("|---"):
            continue
        elif line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if headers is None:
                headers = cells
                tables[heading] = []
            else:
                tables[heading].append(dict(zip(headers, cells, strict=True)))
    return tables


def is_number(cell: str) -> bool:
    try:
        float(cell.replace(",", ""))
    except ValueError:
        return False
    return True


@pytest.fixture(scope="module")
def gpu_module():
    """benchmarks/gpu.py as a module (its row lists are what the printed tables must hold)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        import gpu

        yield gpu


def test_gpu_benchmark_quick_run_prints_both_tables(gpu_module) -> None:
    command = [sys.executable, str(BENCHMARKS / "gpu.py"), "--quick", "--device", "cpu", "--no-compile"]
    result = subprocess.run(
        [*command, "--repeats", "1"], capture_output=True, text=True, timeout=120, cwd=BENCHMARKS.parent
    )
    assert result.returncode == 0, result.stderr
    assert "torch " in result.stdout and "CPU" in result.stdout
    layers, model = markdown_tables(result.stdout).values()

    expected = [("dense", "-")] + [
        (spec.label, f"{spec.field}={value}") for spec in gpu_module.LAYERS for value in spec.values
    ]
    assert [(row["layer"].split(" (")[0], row["setting"]) for row in layers] == expected
    references = {"-"} | {f"{spec.field}={spec.values[0]}" for spec in gpu_module.LAYERS}
    for row in layers:
        if row["setting"] in references:  # the reference paths always run
            assert is_number(row["eager ms"]) and is_number(row["eager / dense"]), row
        else:  # a new path runs, or says in one line why not
            assert is_number(row["eager / dense"]) or (row["eager / dense"] == "n/a" and row["note"]), row
    assert layers[0]["eager / dense"] == "1.00"

    assert [row["preset"] for row in model] == gpu_module.default_presets()
    for row in model:
        assert is_number(row["eager tokens/s"]) and is_number(row["eager / dense"]), row
        assert row["eager MFU"] == "n/a"  # no peak FLOP rate is known for a CPU
    assert model[0]["eager / dense"] == "1.00"


def test_narrow_benchmark_quick_run_prints_every_contender_and_a_computed_verdict() -> None:
    command = [sys.executable, str(BENCHMARKS / "narrow.py"), "--quick", "--repeats", "1", "--breakdown"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=BENCHMARKS.parent)
    assert result.returncode == 0, result.stderr
    assert "round" in result.stderr  # the progress line
    layers, steps, verdicts, breakdown = markdown_tables(result.stdout).values()

    contenders = ["dense", "MoT /8E", "MoT /8E/4", "Token Choice top-1", "Expert Choice"]
    assert [row["layer"] for row in layers] == contenders
    assert [row["model"] for row in steps] == contenders
    for row in layers + steps:
        assert all(is_number(cell) for name, cell in row.items() if name not in ("layer", "model")), row
    assert layers[0]["/ dense"] == steps[0]["/ dense"] == "1.000"

    measured = [layers[1]["/ dense"], steps[1]["/ dense"]]
    assert [row["ratio"] for row in verdicts] == measured
    for row in verdicts:  # computed from the ratio, not written in
        assert row["verdict"] == ("met" if float(row["ratio"]) <= 1.10 else "not met"), row

    assert [row["step"] for row in breakdown][:2] == ["dense layer", "MoT layer"] and len(breakdown) == 7
    assert all(is_number(row["ms"]) for row in breakdown)


def test_the_narrow_verdict_is_judged_on_the_printed_ratio() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        import narrow

    assert narrow.verdict(1.1003) == "met"  # printed as 1.100
    assert narrow.verdict(1.1006) == "not met"  # printed as 1.101
