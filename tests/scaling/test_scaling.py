"""The fine-grained scaling law: FLOP/parameter model, fit from runs, compute-optimal planner, `mot scaling`."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mixture_of_tokens import ModelConfig, TrainConfig, Transformer, count_model, mot_sizing
from mixture_of_tokens import scaling as scaling_package
from mixture_of_tokens.cli import main
from mixture_of_tokens.cli import scaling as cli_scaling
from mixture_of_tokens.scaling import (
    PAPER_DENSE_LAW,
    PAPER_LAW,
    DenseLaw,
    FineGrainedLaw,
    Run,
    dense_flops_for_loss,
    dense_params,
    fit_law,
    load_runs,
    moe_flops_per_token,
    moe_params,
    optimal_dense,
    parse_budgets,
    plan,
    write_runs_csv,
)


def synthetic_runs(
    law,
    *,
    params=(1e7, 3e7, 1e8, 3e8, 1e9),
    tokens=(1e9, 3e9, 1e10, 3e10),
    granularities=(1, 2, 4, 8, 16, 32),
    noise: float = 0.0,
    seed: int = 0,
) -> list[Run]:
    """Runs on a grid of (N, D, granularity) whose losses follow `law` times log-normal noise of size `noise`."""
    rng = np.random.default_rng(seed)
    runs = []
    for N in params:
        for D in tokens:
            for k in granularities:
                loss = float(law.loss(N, D, k)) * math.exp(noise * rng.standard_normal())
                runs.append(Run(name=f"N{N:.0e}-D{D:.0e}-k{k}", params=N, tokens=D, granularity=k, loss=loss))
    return runs


WIDE_GRID = {
    "params": (1e6, 1e7, 1e8, 1e9, 1e10),
    "tokens": (1e8, 1e9, 1e10, 1e11, 1e12),
    "granularities": (1, 4, 16, 64),
}


def test_law_is_the_papers_formula() -> None:
    N, D, k = 3e9, 2e10, 8  # k = granularity
    expected = 0.472 + (2.1 / k**0.58 + 18.1) * N**-0.115 + 30.8 * D**-0.147
    assert float(PAPER_LAW.loss(N, D, k)) == pytest.approx(expected, rel=1e-12)
    assert float(PAPER_LAW.loss(N, D, granularity=k)) == pytest.approx(expected, rel=1e-12)
    assert float(PAPER_DENSE_LAW.loss(N, D)) == pytest.approx(0.472 + 16.3 * N**-0.126 + 26.7 * D**-0.127)
    losses = PAPER_LAW.loss(N, D, np.array([1, 2, 4, 8, 16]))
    assert np.all(np.diff(losses) < 0), "at fixed N and D a finer granularity lowers the loss"


@pytest.mark.parametrize("granularity", [1, 4])
def test_parameter_model_matches_an_mot_transformer(granularity: int) -> None:
    """MoT /nE/k maps to the law as expansion = n (group size), granularity = k: its non-embedding count matches N."""
    n_blocks, expansion = 2, 4
    d_model = 64 * n_blocks
    sizing = mot_sizing(f"/{expansion}E/{granularity}", 4 * d_model)
    config = ModelConfig(
        vocab_size=64, max_seq_len=16, d_model=d_model, n_blocks=n_blocks, n_heads=2, d_ff=4 * d_model, ffn="mot",
        group_size=sizing.group_size, n_experts=sizing.n_experts, expert_size=sizing.expert_size,
    )  # fmt: skip
    with torch.device("meta"):
        counts = count_model(Transformer(config))
    predicted = float(moe_params(n_blocks, expansion=expansion, granularity=granularity))
    assert counts.non_embedding_params == pytest.approx(predicted, rel=0.01)  # LayerNorms and biases: < 1%
    dense = dataclasses.replace(config, ffn="dense")
    with torch.device("meta"):
        dense_counts = count_model(Transformer(dense))
    assert dense_counts.non_embedding_params == pytest.approx(float(dense_params(n_blocks)), rel=0.01)


def test_flop_model_is_six_per_active_weight_plus_router() -> None:
    n_blocks, expansion, granularity = 10, 64, 16
    d = 640
    expected = (6 * 12 * d * d + 14 * d * expansion * granularity) * n_blocks
    assert float(moe_flops_per_token(n_blocks, expansion=expansion, granularity=granularity)) == expected


def test_fit_recovers_coefficients_from_noiseless_runs() -> None:
    runs = synthetic_runs(PAPER_LAW, **WIDE_GRID)
    result = fit_law(runs, n_bootstrap=0, holdout_fraction=0.0)
    for name, true in PAPER_LAW.as_dict().items():
        assert getattr(result.law, name) == pytest.approx(true, rel=0.01), name
    assert result.train_rmse < 1e-3


def test_fit_recovers_coefficients_from_noisy_runs_with_intervals() -> None:
    runs = synthetic_runs(PAPER_LAW, **WIDE_GRID, noise=0.002, seed=1)
    result = fit_law(runs, n_bootstrap=30, holdout_fraction=0.2, seed=1)
    assert result.law.alpha == pytest.approx(PAPER_LAW.alpha, rel=0.05)
    assert result.law.beta == pytest.approx(PAPER_LAW.beta, rel=0.05)
    assert result.law.gamma == pytest.approx(PAPER_LAW.gamma, rel=0.15)
    assert result.law.c == pytest.approx(PAPER_LAW.c, abs=0.06)
    for name, (low, high) in result.intervals.items():
        assert low < getattr(result.law, name) < high, name
    mean_loss = np.mean([r.loss for r in runs])
    assert result.n_heldout == 20
    assert result.heldout_rmse < 3 * 0.002 * mean_loss  # predictions on unseen runs are as good as the noise
    # and the planner on the fitted law agrees with the planner on the true one
    assert plan(1e21, law=result.law).best.granularity == plan(1e21).best.granularity


def test_fit_is_robust_to_an_outlier_run() -> None:
    runs = synthetic_runs(PAPER_LAW, **WIDE_GRID)
    runs[7] = dataclasses.replace(runs[7], loss=runs[7].loss * 3)  # a diverged run
    result = fit_law(runs, n_bootstrap=0, holdout_fraction=0.0)
    assert result.law.alpha == pytest.approx(PAPER_LAW.alpha, rel=0.05)
    assert result.law.beta == pytest.approx(PAPER_LAW.beta, rel=0.05)


def test_dense_fit_recovers_coefficients() -> None:
    runs = synthetic_runs(PAPER_DENSE_LAW, params=WIDE_GRID["params"], tokens=WIDE_GRID["tokens"], granularities=(1,))
    result = fit_law([dataclasses.replace(r, kind="dense") for r in runs], kind="dense", n_bootstrap=0)
    assert isinstance(result.law, DenseLaw)
    for name, true in PAPER_DENSE_LAW.as_dict().items():
        assert getattr(result.law, name) == pytest.approx(true, rel=0.01), name


def test_fit_rejects_too_few_runs_and_a_single_granularity() -> None:
    runs = synthetic_runs(PAPER_LAW, params=(1e8,), tokens=(1e9, 1e10), granularities=(1, 2, 4))
    with pytest.raises(ValueError, match="at least 7 runs"):
        fit_law(runs)
    with pytest.raises(ValueError, match="two or more granularities"):
        fit_law(synthetic_runs(PAPER_LAW, granularities=(8,)))


BUDGETS = np.logspace(18, 25, 29)


def test_planner_optimal_granularity_never_decreases_with_budget() -> None:
    chosen = [plan(f).best.granularity for f in BUDGETS]
    assert all(a <= b for a, b in zip(chosen, chosen[1:])), chosen
    assert chosen[0] < chosen[-1]


def test_planner_reproduces_the_papers_qualitative_result() -> None:
    for flops in BUDGETS:
        result = plan(flops)
        k1 = next(p for p in result.per_granularity if p.granularity == 1)
        assert k1.loss_continuous > result.best.loss_continuous, f"granularity 1 optimal at {flops:.2g}"
        assert result.best.loss_continuous < result.dense.loss_continuous
    assert plan(1e24).best.granularity >= 32
    assert plan(1e18).best.granularity <= 16


def test_planner_finds_the_minimum_over_model_size_and_spends_the_budget() -> None:
    result = plan(1e22)
    for point in result.per_granularity:
        for factor in (0.97, 1.03):  # a larger or smaller model on the same budget is worse
            n = point.n_blocks_continuous * factor
            tokens = 1e22 / float(moe_flops_per_token(n, expansion=64, granularity=point.granularity))
            params = float(moe_params(n, expansion=64, granularity=point.granularity))
            assert float(PAPER_LAW.loss(params, tokens, point.granularity)) > point.loss_continuous
        spent = float(moe_flops_per_token(point.n_blocks, expansion=64, granularity=point.granularity)) * point.tokens
        assert spent == pytest.approx(1e22, rel=1e-9)
        assert point.d_model == 64 * point.n_blocks
        assert point.n_blocks == round(point.n_blocks_continuous)


def test_dense_flop_multiple_is_the_budget_where_dense_matches() -> None:
    result = plan(1e20)
    assert result.dense_flop_multiple > 1
    matched = optimal_dense(result.dense_flops_to_match)
    assert matched.loss_continuous == pytest.approx(result.best.loss_continuous, abs=1e-6)
    assert dense_flops_for_loss(PAPER_DENSE_LAW.c) == math.inf


def test_planner_restricted_granularities_and_mot_preset() -> None:
    result = plan(1e24, granularities=(1, 2, 4))
    assert result.best.granularity == 4
    assert [p.granularity for p in result.per_granularity] == [1, 2, 4]
    mot = plan(1e21).mot
    sizing = mot_sizing(mot.name, mot.d_ff)
    assert (sizing.group_size, sizing.n_experts, sizing.expert_size) == (mot.group_size, mot.n_experts, mot.expert_size)
    assert mot.n_experts * mot.expert_size == mot.group_size * mot.d_ff  # E*h = G*d_ff: one dense FF per token
    assert mot.group_size == 64


def test_invalid_budgets() -> None:
    for bad in ("0", "-1e20", "nan", "1e25:1e18", "1e18:1e20:1", "x"):
        with pytest.raises(ValueError, match="--flops"):
            parse_budgets(bad)
    assert parse_budgets("1e18:1e25") == pytest.approx([10.0**e for e in range(18, 26)])
    assert len(parse_budgets("1e18:1e25:15")) == 15


def _fake_run_dir(path, *, ffn: str, loss: float, non_embedding: int, steps: int = 100) -> None:
    model = ModelConfig(vocab_size=64, max_seq_len=32, d_model=32, n_blocks=2, n_heads=2, d_ff=128, ffn=ffn,
                        group_size=4, n_experts=16, expert_size=32)  # fmt: skip
    train = TrainConfig(steps=steps, batch_size=8)
    path.mkdir(parents=True)
    config = {"model": dataclasses.asdict(model), "train": dataclasses.asdict(train)}
    (path / "config.json").write_text(json.dumps(config))
    summary = {"run": path.name, "final_eval_loss": loss, "counts": {"non_embedding_params": non_embedding}}
    (path / "summary.json").write_text(json.dumps(summary))


def test_runs_from_run_directories(tmp_path) -> None:
    _fake_run_dir(tmp_path / "mot", ffn="mot", loss=3.5, non_embedding=123_456, steps=100)
    _fake_run_dir(tmp_path / "dense", ffn="dense", loss=3.7, non_embedding=50_000, steps=50)
    runs = {r.name: r for r in load_runs(tmp_path)}
    assert runs["mot"].kind == "fine-grained" and runs["dense"].kind == "dense"
    assert runs["mot"].granularity == 4  # d_ff 128 / expert_size 32
    assert runs["mot"].expansion == 4  # group size
    assert runs["mot"].tokens == 100 * 8 * 32
    assert runs["dense"].tokens == 50 * 8 * 32
    assert runs["mot"].params == 123_456 and runs["mot"].loss == 3.5


def test_cli_fit_plan_predict(tmp_path, capsys) -> None:
    table = write_runs_csv(synthetic_runs(PAPER_LAW, **WIDE_GRID, noise=0.002), tmp_path / "runs.csv")
    out, plot = tmp_path / "law.json", tmp_path / "fit.png"
    args = ["scaling", "fit", "--runs", str(table), "--bootstrap", "5", "--out", str(out), "--plot", str(plot)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "gamma" in text and "held-out RMSE" in text
    assert plot.stat().st_size > 0
    fitted = json.loads(out.read_text())["fine_grained"]["coefficients"]
    assert fitted["alpha"] == pytest.approx(PAPER_LAW.alpha, rel=0.05)

    assert main(["scaling", "plan", "--flops", "1e21", "--law", str(out), "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)
    assert planned["best"]["granularity"] == plan(1e21, law=FineGrainedLaw(**fitted)).best.granularity
    assert planned["mot"]["group_size"] == 64

    range_plot = tmp_path / "plan.png"
    assert main(["scaling", "plan", "--flops", "1e18:1e25", "--plot", str(range_plot)]) == 0
    assert len([line for line in capsys.readouterr().out.splitlines() if "/64E" in line]) == 8
    assert range_plot.stat().st_size > 0

    assert main(["scaling", "predict", "--N", "1e9", "--D", "1e10", "--granularity", "8", "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)
    assert predicted["loss"] == pytest.approx(float(PAPER_LAW.loss(1e9, 1e10, 8)))
    assert predicted["granularity"] == 8


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("N,D,loss\n1e8,1e9,3.0\n", "lacks column(s) granularity; required: N, D, granularity, loss"),
        ("N,D,granularity,loss\n" + "1e8,1e9,2,3.0\n" * 3, "at least 7 runs"),
        ("N,D,granularity,loss\n1e8,1e9,2,-3.0\n", "column loss must be a positive number"),
        ("N,D,G,loss\n1e8,1e9,x,3.0\n", "column G holds 'x', not a number"),  # legacy column name
        ("N,D,granularity,G,loss\n1e8,1e9,2,2,3.0\n", "both a granularity column and its legacy name G"),
        ("N,D,granularity,loss,kind\n1e8,1e9,2,3.0,moe\n", "allowed values: fine-grained, dense"),
    ],
)
def test_cli_fit_rejects_bad_tables(tmp_path, capsys, rows: str, message: str) -> None:
    table = tmp_path / "runs.csv"
    table.write_text(rows)
    assert main(["scaling", "fit", "--runs", str(table), "--plot", str(tmp_path / "p.png")]) == 2
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1
    assert not (tmp_path / "p.png").exists()


def test_cli_rejects_non_positive_budget(capsys) -> None:
    assert main(["scaling", "plan", "--flops", "0"]) == 2
    assert "--flops must be a positive number" in capsys.readouterr().err


def test_written_runs_table_uses_granularity_and_reads_back(tmp_path) -> None:
    runs = synthetic_runs(PAPER_LAW, params=(1e8,), tokens=(1e9,), granularities=(1, 8))
    table = write_runs_csv([*runs, dataclasses.replace(runs[0], name="d", kind="dense")], tmp_path / "runs.csv")
    lines = table.read_text().splitlines()
    assert lines[0] == "name,N,D,granularity,loss,kind"
    assert [line.rsplit(",", 1)[1] for line in lines[1:]] == ["fine-grained", "fine-grained", "dense"]
    assert load_runs(table) == [*runs, dataclasses.replace(runs[0], name="d", kind="dense")]


def test_legacy_runs_tables_with_a_G_column_and_kind_mot_still_read(tmp_path) -> None:
    runs = synthetic_runs(PAPER_LAW, params=(1e8, 1e9), tokens=(1e9,), granularities=(1, 8))
    current = write_runs_csv(runs, tmp_path / "runs.csv")
    legacy = tmp_path / "legacy.csv"  # the table as written before the rename: column G, kind mot
    legacy.write_text(current.read_text().replace(",granularity,", ",G,").replace(",fine-grained", ",mot"))
    assert "G" in legacy.read_text().splitlines()[0].split(",") and ",mot" in legacy.read_text()
    assert load_runs(legacy) == load_runs(current) == runs

    rows = [
        {"N": 1e8, "D": 1e9, "G": 4, "loss": 3.0, "kind": "MOT"},
        {"N": 1e8, "D": 1e9, "loss": 3.2, "kind": "dense"},
    ]
    (tmp_path / "legacy.json").write_text(json.dumps({"runs": rows}))
    fine, dense = load_runs(tmp_path / "legacy.json")
    assert (fine.kind, fine.granularity, dense.kind, dense.granularity) == ("fine-grained", 4.0, "dense", 1.0)
    assert dataclasses.replace(runs[0], kind="mot").kind == "fine-grained"  # a Run built in Python with the old kind


def test_cli_fit_reads_a_legacy_table_and_leaves_out_dense_runs(tmp_path, capsys) -> None:
    runs = synthetic_runs(PAPER_LAW, **WIDE_GRID)
    dense = synthetic_runs(PAPER_DENSE_LAW, params=WIDE_GRID["params"], tokens=WIDE_GRID["tokens"], granularities=(1,))
    table = write_runs_csv(runs + [dataclasses.replace(r, kind="dense") for r in dense], tmp_path / "runs.csv")
    legacy = tmp_path / "legacy.csv"
    legacy.write_text(table.read_text().replace(",granularity,", ",G,").replace(",fine-grained", ",mot"))
    args = [
        "scaling",
        "fit",
        "--runs",
        str(legacy),
        "--bootstrap",
        "0",
        "--plot",
        "",
        "--out",
        str(tmp_path / "l.json"),
    ]
    assert main(args) == 0
    assert f"fine-grained law fitted to {len(runs)} runs ({len(dense)} dense runs left out)" in capsys.readouterr().out
    fitted = json.loads((tmp_path / "l.json").read_text())["fine_grained"]["coefficients"]
    for name, true in PAPER_LAW.as_dict().items():
        assert fitted[name] == pytest.approx(true, rel=0.01), name
    assert main([*args[:-2], "--kind", "dense"]) == 0
    assert f"dense law fitted to {len(dense)} runs ({len(runs)} fine-grained runs left out)" in capsys.readouterr().out


def test_cli_predict_keeps_the_legacy_G_flag_as_a_hidden_alias(capsys) -> None:
    base = ["scaling", "predict", "--N", "1e9", "--D", "1e10", "--json"]
    assert main([*base, "--granularity", "8"]) == 0
    current = capsys.readouterr()
    assert main([*base, "--G", "8"]) == 0
    legacy = capsys.readouterr()
    assert json.loads(legacy.out) == json.loads(current.out)
    assert json.loads(legacy.out)["loss"] == pytest.approx(float(PAPER_LAW.loss(1e9, 1e10, 8)))
    assert current.err == "" and "--G is deprecated; use --granularity" in legacy.err
    assert main(["scaling", "predict", "--N", "1e9", "--D", "1e10", "--G", "0"]) == 2
    assert "--granularity must be a positive number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["scaling", "predict", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    assert "--granularity" in help_text and "--G" not in help_text


def test_scaling_code_never_calls_granularity_G() -> None:
    """G is the group size everywhere in the project; here it survives only in the legacy aliases, so marked."""
    files = [*sorted(Path(scaling_package.__file__).parent.glob("*.py")), Path(cli_scaling.__file__)]
    assert len(files) == 7
    uses = [
        f"{path.name}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"\bG\b", line) and not re.search(r"legacy|group size", line, re.IGNORECASE)
    ]
    assert not uses, uses
