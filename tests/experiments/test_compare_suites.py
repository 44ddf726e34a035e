"""`mot compare --suite`: verdicts computed from the numbers (fabricated numbers give both outcomes), the smoke
suite end to end on a tiny grammar corpus (report, plots, verdicts recomputed from the run directories), a rerun
that skips every finished run, a half-finished run that resumes, one stopped before its first checkpoint that
restarts, a diverged learning rate that is recorded and passed over, `--parallel`, and `mot compare RUN_DIR ...`
labelling runs by directory when names clash."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from cli_runs import run_mot
from corpus import write_corpus

from mixture_of_tokens.cli import main
from mixture_of_tokens.counting import count_model
from mixture_of_tokens.experiments.catalog import SUITES, claim_mot_beats_dense, get_suite
from mixture_of_tokens.experiments.compare_suite import compare_suite, suite_report_input
from mixture_of_tokens.experiments.report import comparison_table, load_run
from mixture_of_tokens.experiments.results import collect
from mixture_of_tokens.experiments.runner import arm_spec, run_name, run_state, run_suite
from mixture_of_tokens.experiments.suites import Arm, Claim, Size, Suite
from mixture_of_tokens.experiments.verdicts import (
    HELD,
    NOT_HELD,
    NOT_JUDGED,
    WITHIN_NOISE,
    ArmResult,
    crossover_step,
    first_step_at_or_below,
    judge,
    pooled_noise,
)
from mixture_of_tokens.model import Transformer
from mixture_of_tokens.training.plan import check_run_settings

PNG = b"\x89PNG\r\n\x1a\n"


# ------------------------------------------------------------------------------------ verdicts from numbers


def _claim(test: str, *arms: str) -> Claim:
    return Claim(f"{test}-claim", "a claim", test, arms, "paper")


def _results(**losses: tuple[float, ...]) -> dict[str, ArmResult]:
    return {name: ArmResult(name, values) for name, values in losses.items()}


def test_noise_is_the_seed_spread_pooled_over_models() -> None:
    noise = pooled_noise(list(_results(a=(1.0, 1.2), b=(2.0, 2.2), c=(3.0,)).values()))
    assert noise.seed_std == pytest.approx((0.04 / 2) ** 0.5)  # (0.02 + 0.02) / 2 degrees of freedom
    assert (noise.arms, noise.degrees_of_freedom) == (2, 2)
    assert noise.of(2, 2) == pytest.approx(2 * noise.seed_std)  # 2 x the standard error of a difference
    assert pooled_noise(list(_results(a=(1.0,), b=(2.0,)).values())).seed_std is None


@pytest.mark.parametrize(
    ("mot", "dense", "outcome"),
    [
        ((5.00, 5.02), (5.20, 5.22), HELD),  # MoT 0.2 ahead, seeds 0.02 apart
        ((5.40, 5.42), (5.20, 5.22), NOT_HELD),  # MoT 0.2 behind
        ((5.20, 5.24), (5.21, 5.23), WITHIN_NOISE),
        ((5.0,), (5.2,), NOT_JUDGED),  # one seed each: no noise estimate
    ],
)
def test_better_claim_both_ways(mot, dense, outcome) -> None:
    results = _results(mot=mot, dense=dense)
    verdict = judge(claim_mot_beats_dense("mot", "dense"), results, pooled_noise(list(results.values())))
    assert verdict.outcome == outcome
    assert verdict.margin == pytest.approx(sum(dense) / len(dense) - sum(mot) / len(mot))
    assert ("behind" in verdict.finding) == (verdict.margin < 0)


def test_matches_holds_within_noise_and_fails_beyond_it() -> None:
    close = _results(mot=(5.21, 5.25), tc=(5.20, 5.22))
    far = _results(mot=(5.40, 5.41), tc=(5.20, 5.21))
    claim = _claim("matches", "mot", "tc")
    assert judge(claim, close, pooled_noise(list(close.values()))).outcome == HELD
    assert "inside the noise band" in judge(claim, close, pooled_noise(list(close.values()))).finding
    assert judge(claim, far, pooled_noise(list(far.values()))).outcome == NOT_HELD


def test_trend_needs_the_end_to_end_gain_and_no_reversed_step() -> None:
    claim = _claim("trend", "e4", "e8", "e16")
    falling = _results(e4=(5.3, 5.31), e8=(5.2, 5.21), e16=(5.1, 5.11))
    rising = _results(e4=(5.1, 5.11), e8=(5.2, 5.21), e16=(5.3, 5.31))
    zigzag = _results(e4=(5.3, 5.31), e8=(5.5, 5.51), e16=(5.1, 5.11))
    assert judge(claim, falling, pooled_noise(list(falling.values()))).outcome == HELD
    assert judge(claim, rising, pooled_noise(list(rising.values()))).outcome == NOT_HELD
    verdict = judge(claim, zigzag, pooled_noise(list(zigzag.values())))
    assert verdict.outcome == WITHIN_NOISE and "Not monotone" in verdict.finding


def test_cheaper_compares_the_costs_of_lower_precision() -> None:
    claim = _claim("cheaper", "mot", "mot16", "ec", "ec16")
    mot_robust = _results(mot=(5.0, 5.01), mot16=(5.02, 5.03), ec=(5.0, 5.01), ec16=(5.3, 5.31))
    ec_robust = _results(mot=(5.0, 5.01), mot16=(5.3, 5.31), ec=(5.0, 5.01), ec16=(5.02, 5.03))
    assert judge(claim, mot_robust, pooled_noise(list(mot_robust.values()))).outcome == HELD
    assert judge(claim, ec_robust, pooled_noise(list(ec_robust.values()))).outcome == NOT_HELD


def test_crossover_and_the_step_that_reaches_the_reference_loss() -> None:
    dense = ((100, 6.0), (200, 5.5), (300, 5.2), (400, 5.0))
    mot = ((100, 6.2), (200, 5.6), (300, 5.1), (400, 4.8))
    assert crossover_step(mot, dense) == 300
    assert first_step_at_or_below(mot, 5.0) == 333  # a third of the way from 5.1 at 300 to 4.8 at 400
    assert crossover_step(dense, mot) is None
    assert first_step_at_or_below(dense, 4.9) is None
    claim = _claim("overtakes", "mot", "dense")
    results = {"mot": ArmResult("mot", (4.8, 4.81), mot), "dense": ArmResult("dense", (5.0, 5.01), dense)}
    verdict = judge(claim, results, pooled_noise(list(results.values())))
    assert verdict.outcome == HELD and (verdict.crossover_step, verdict.reach_step) == (300, 332)  # dense: 5.005
    assert "1.20x fewer steps" in verdict.finding
    slow = ((100, 6.3), (200, 5.8), (300, 5.4), (400, 5.205))
    behind = {"mot": ArmResult("mot", (5.2, 5.21), slow), "dense": ArmResult("dense", (5.0, 5.01), dense)}
    verdict = judge(claim, behind, pooled_noise(list(behind.values())))
    assert verdict.outcome == NOT_HELD and "does not reach" in verdict.finding


def test_a_claim_without_finished_runs_is_not_judged() -> None:
    results = _results(dense=(5.0, 5.1))
    verdict = judge(claim_mot_beats_dense("mot"), results, pooled_noise(list(results.values())))
    assert verdict.outcome == NOT_JUDGED and "no finished runs for mot" in verdict.finding


# ------------------------------------------------------------------------------------------- the catalog


@pytest.mark.parametrize("name", list(SUITES))
def test_every_suite_builds_valid_runs_at_equal_active_flops(name: str) -> None:
    """Each arm at each size is a valid run, and every model spends the dense model's FLOPs per token (within the
    routers' few percent, once MoT's controller, merge and emit are taken out), or is a control at one MoT model's
    whole FLOPs (claims-capacity's dense-448 and token-choice-448, at /32E/4's)."""
    suite = SUITES[name]
    for size in suite.sizes.values():
        flops, whole, mot_whole = {}, {}, []
        for arm in (a for a in suite.arms if not a.is_alias):  # an alias trains its winner's runs
            spec = arm_spec(arm, size, size.lrs[0], 0, Path("unused"), device="cpu")
            check_run_settings(spec.model, dataclasses.replace(spec.train, data="packaged"))
            with torch.device("meta"):
                model = Transformer(spec.model)
            # MoT's controller, merge and emit (3 d E multiply-adds per token) are not FLOP-matched: 19% of the FF
            # for /32E at d_model 64 (docs/method.md); the rest must match dense
            unmatched = sum(6 * m.d_model * m.n_experts for m in model.modules() if getattr(m, "kind", "") == "mot")
            whole[arm.name] = count_model(model).forward_flops_per_token
            flops[arm.name] = whole[arm.name] - unmatched
            if unmatched:
                mot_whole.append(whole[arm.name])
        with torch.device("meta"):
            dense = count_model(Transformer(size.base_model())).forward_flops_per_token
        unmatched_arms = {
            name: f
            for name, f in flops.items()
            if abs(f / dense - 1) >= 0.06 and not any(abs(whole[name] / m - 1) < 0.01 for m in mot_whole)
        }
        assert unmatched_arms == {}, flops


# ------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, module_cache_dir: Path) -> dict:
    """The smoke suite run once through the command line on a tiny grammar corpus."""
    root = tmp_path_factory.mktemp("smoke")
    corpus = f"text:{write_corpus(root / 'corpus', n_documents=24)}"
    out = root / "suite"
    assert main(["compare", "--suite", "smoke", "--out", str(out), "--data", corpus, "--device", "cpu"]) == 0
    return {"out": out, "corpus": corpus, "suite": get_suite("smoke")}


def test_smoke_writes_a_report_with_plots_and_computed_verdicts(smoke: dict) -> None:
    out, suite = smoke["out"], smoke["suite"]
    report = (out / "report.md").read_text()
    for plot in ("eval_loss.png", "merge_entropy.png", "lr_sweep.png", "entropy_vs_loss.png"):
        assert (out / plot).read_bytes()[:8] == PNG
        assert f"]({plot})" in report
    for claim in suite.claims:
        assert claim.statement in report
    assert "tokens per run" in report and "9.8B tokens per run" in report  # the budget next to the paper's
    assert "## Merge-weight entropy and eval loss" in report and "| mot-4e-uniform | 1.000 |" in report
    results = json.loads((out / "results.json").read_text())
    # the verdicts are recomputed here from the runs' own summaries
    size = suite.size("smoke")
    runs = out / "runs"
    losses = {}
    for arm in suite.arms:
        sweep = {}
        for lr in size.lrs:
            summary = json.loads((runs / run_name(arm.name, lr, 0) / "summary.json").read_text())
            sweep[lr] = summary["final_eval_loss"]
        best = min(sweep, key=sweep.get)
        assert results["models"][arm.name]["lr"] == best
        losses[arm.name] = tuple(
            json.loads((runs / run_name(arm.name, best, seed) / "summary.json").read_text())["final_eval_loss"]
            for seed in range(size.seeds)
        )
    mot, dense = sum(losses["mot-4e"]) / 2, sum(losses["dense"]) / 2
    verdict = next(v for v in results["verdicts"] if v["claim"] == "mot-beats-dense")
    assert verdict["margin"] == pytest.approx(dense - mot)
    assert verdict["outcome"] in (HELD, NOT_HELD, WITHIN_NOISE)
    std = pooled_noise([ArmResult(name, values) for name, values in losses.items()]).seed_std
    assert verdict["noise"] == pytest.approx(2 * std)
    assert len(results["verdicts"]) == len(suite.claims)
    assert "switch to token-choice moved the held-out loss" in report  # the transition run's spike


def test_rerun_skips_every_finished_run(smoke: dict, capsys: pytest.CaptureFixture) -> None:
    out = smoke["out"]
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/summary.json")}
    status, stdout, _ = run_mot(["compare", "--suite", "smoke", "--out", str(out), "--data", smoke["corpus"]], capsys)
    assert status == 0
    assert stdout.count(": skipped,") == len(before) == 42  # 14 models: 2 learning rates, then a second seed
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/summary.json")} == before


def _tiny_suite(corpus: str, **size_fields) -> tuple[Suite, Size]:
    """dense and MoT /2E of the smoke suite on an 8-step budget (2 checkpoints kept, so a run can be cut short)."""
    suite = get_suite("smoke")
    tiny = Suite("tiny", "two models", suite.arms[:2], (claim_mot_beats_dense("mot-2e"),), {})
    fields = dict(lrs=(1e-2,), seeds=2, evals=2, eval_batches=1, log_every=4, checkpoints=2, keep_checkpoints=2,
                  threads=1, data=corpus)  # fmt: skip
    return tiny, Size("t", 32, 2, 2, 32, 8, 8, **{**fields, **size_fields})


def test_half_finished_runs_resume_and_unstarted_ones_restart(smoke: dict, tmp_path: Path) -> None:
    suite, size = _tiny_suite(smoke["corpus"])
    out = tmp_path / "suite"
    run_suite(suite, size, out, device="cpu", say=lambda _: None)
    half = out / "runs" / "dense-lr0.01-s1"  # the last checkpoint and final files gone: as if killed at step 4
    shutil.rmtree(half / "checkpoints" / "step-0000008")
    for name in ("summary.json", "model.safetensors"):
        (half / name).unlink()
    unstarted = out / "runs" / "mot-2e-lr0.01-s1"  # killed before its first checkpoint
    shutil.rmtree(unstarted / "checkpoints")
    (unstarted / "summary.json").unlink()
    assert run_state(arm_spec(suite.arm("dense"), size, 1e-2, 1, out))[0] == "resume"
    run = run_suite(suite, size, out, device="cpu", say=lambda _: None)
    actions = {o.spec.name: o.action for o in run.outcomes}
    assert actions == {
        "dense-lr0.01-s0": "skipped", "mot-2e-lr0.01-s0": "skipped",
        "dense-lr0.01-s1": "resumed", "mot-2e-lr0.01-s1": "restarted",
    }  # fmt: skip
    assert json.loads((half / "summary.json").read_text())["resumed_from_step"] == 4
    assert list((out / "runs").glob("mot-2e-lr0.01-s1.old-*"))  # the unfinished directory moved aside, not lost


def test_a_staged_suite_trains_what_its_plan_wants_and_reports_the_winner(smoke: dict, tmp_path: Path) -> None:
    """An arm at another's rate, an alias re-checked at half and twice its rate, a second seed for the alias: the
    runner trains exactly the planned runs, and the report names the winner and pools each run's loss once."""
    base, size = _tiny_suite(smoke["corpus"], lrs=(1e-2,), seeds=1)
    mot = base.arms[1]
    sharp = dataclasses.replace(mot, name="mot-2e-t0.1", model=(("mot_temperature", 0.1),), lr_from=mot.name)
    best = Arm("mot-best", "best MoT", mot.kind, best_of=(mot.name, sharp.name), recheck=True, seeds=2)
    dense = dataclasses.replace(base.arms[0], seeds=2)
    suite = Suite("staged", "staged", (dense, mot, sharp, best), (claim_mot_beats_dense("mot-best"),), {})
    out = tmp_path / "staged"
    run = run_suite(suite, size, out, device="cpu", say=lambda _: None)
    winner = min((mot.name, sharp.name), key=lambda a: json.loads((out / "runs" / run_name(a, 1e-2, 0) /
                 "summary.json").read_text())["final_eval_loss"])  # fmt: skip
    rates = {o.spec.lr for o in run.outcomes if o.spec.arm == winner and o.spec.seed == 0}
    assert rates == {5e-3, 1e-2, 2e-2}  # re-checked at half and twice its rate
    assert {o.spec.name for o in run.outcomes if o.spec.seed == 1} == {
        "dense-lr0.01-s1", run_name(winner, run.best_lr["mot-best"], 1)}  # fmt: skip
    assert len(run.outcomes) == len({o.spec.name for o in run.outcomes}) == 7
    summaries = collect(suite, size, out)
    assert summaries["mot-best"].winner == winner and len(summaries["mot-best"].losses) == 2
    report = suite_report_input(suite, size, summaries, run)
    assert report.noise.arms == 2  # dense and the winner: the alias does not pool the winner's runs again


def test_report_only_trains_nothing_and_says_what_is_missing(smoke: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "partial"
    shutil.copytree(smoke["out"], out)
    unfinished = sorted((out / "runs").glob("mot-4e-lr*-s1"))[0]  # a second seed, at whichever rate won
    (unfinished / "summary.json").unlink()
    argv = ["compare", "--suite", "smoke", "--out", str(out), "--data", smoke["corpus"], "--report-only"]
    status, _, _ = run_mot(argv, capsys)
    assert status == 0 and not (unfinished / "summary.json").exists()  # nothing trained
    assert "**Incomplete:** 41 of the 42 runs planned so far have finished" in (out / "report.md").read_text()


def test_a_run_of_other_settings_in_the_directory_is_refused(smoke: dict) -> None:
    suite, size = smoke["suite"], dataclasses.replace(smoke["suite"].size("smoke"), data=smoke["corpus"])
    spec = arm_spec(suite.arm("dense"), dataclasses.replace(size, steps=30), 1e-2, 0, smoke["out"])
    with pytest.raises(ValueError, match=r"holds a run of other settings \(train.steps = 40 there, 30"):
        run_state(spec)


def test_a_diverged_rate_is_recorded_and_passed_over_in_parallel_runs(smoke: dict, tmp_path: Path) -> None:
    suite, size = _tiny_suite(smoke["corpus"], lrs=(1e-2, 1e30), seeds=1)
    run = run_suite(suite, size, tmp_path / "t", device="cpu", parallel=2, say=lambda _: None)
    actions = {o.spec.name: o.action for o in run.outcomes}
    assert actions == {
        "dense-lr0.01-s0": "trained", "dense-lr1e30-s0": "diverged",
        "mot-2e-lr0.01-s0": "trained", "mot-2e-lr1e30-s0": "diverged",
    }  # fmt: skip
    assert run.best_lr == {"dense": 1e-2, "mot-2e": 1e-2}
    assert (tmp_path / "t" / "runs" / "dense-lr1e30-s0.diverged.json").exists()
    again = run_suite(suite, size, tmp_path / "t", device="cpu", say=lambda _: None)
    assert {o.action for o in again.outcomes} == {"skipped", "diverged"}  # not retried


def test_compare_run_dirs_labels_clashing_names_by_directory(smoke: dict, tmp_path: Path) -> None:
    source = smoke["out"] / "runs" / "dense-lr0.01-s0"
    for parent in ("a", "b"):
        shutil.copytree(source, tmp_path / parent / "run")
    table = comparison_table([load_run(tmp_path / "a" / "run"), load_run(tmp_path / "b" / "run")])
    assert "a/run" in table and "b/run" in table


def test_demo_report_points_to_the_suite_and_judges_nothing_from_one_seed(smoke: dict, tmp_path: Path) -> None:
    from mixture_of_tokens.cli.demo import write_demo_report

    for name, source in (("tiny-dense", "dense-lr0.01-s0"), ("tiny-mot", "mot-4e-lr0.01-s0")):
        shutil.copytree(smoke["out"] / "runs" / source, tmp_path / name)
    report, sentence = write_demo_report(tmp_path, ("tiny-dense", "tiny-mot"))
    text = report.read_text()
    assert "not yet a verdict" in sentence and "nats" in sentence
    assert "**not judged**" in text and "mot compare --suite claims-capacity" in text
    assert (tmp_path / "eval_loss.png").read_bytes()[:8] == PNG
    assert (tmp_path / "merge_entropy.png").read_bytes()[:8] == PNG


def test_demo_runs_again_reusing_what_is_done(module_cache_dir: Path, tmp_path: Path, capsys) -> None:
    """`mot demo` trains its pair side by side in two processes; a second call reuses the finished runs instead of
    failing; other settings are one sentence; --force moves the old runs aside and trains anew."""
    corpus = f"text:{write_corpus(tmp_path / 'corpus', n_documents=160)}"  # enough held-out text for the batch
    argv = ["demo", "--out", str(tmp_path / "demo"), "--steps", "4", "--data", corpus]
    status, first, _ = run_mot([*argv, "--parallel", "2"], capsys)
    assert status == 0 and first.count("] trained") == 2
    weights = tmp_path / "demo" / "narrow-mot" / "model.safetensors"
    written = weights.stat().st_mtime_ns
    status, second, _ = run_mot([*argv, "--parallel", "1"], capsys)
    assert status == 0 and second.count("finished before: reused") == 2 and "not yet a verdict" in second
    assert weights.stat().st_mtime_ns == written
    longer = [*argv[:-4], "--steps", "6", "--data", corpus, "--parallel", "1"]
    status, _, err = run_mot(longer, capsys)
    assert status == 2 and "holds a run of other settings (train.steps = 4 there, 6" in err and "--force" in err
    status, third, _ = run_mot([*longer, "--force"], capsys)
    assert status == 0 and third.count("moved the old run aside") == 2 and third.count("] trained") == 2
    (moved,) = (tmp_path / "demo").glob("narrow-mot.old-*")
    assert (moved / "model.safetensors").stat().st_mtime_ns == written


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare"], "pass run directories to tabulate, or --suite NAME"),
        (["compare", "--suite", "nope"], "suite 'nope' is unknown; allowed values: claims-core"),
        (["compare", "--suite", "smoke", "--parallel", "0"], "--parallel must be a positive integer"),
        (["compare", "--suite", "smoke", "somewhere"], "either --suite NAME or run directories"),
        (["compare", "--suite", "claims-core", "--size", "huge"], "has no size 'huge'; allowed values: cpu, gpu"),
        (["compare", "runs/x", "--report-only"], "--report-only goes with --suite NAME"),
    ],
)
def test_compare_bad_input_is_one_sentence(argv, message, capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    status, _, err = run_mot(argv, capsys)
    assert status == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_compare_suite_from_python_returns_the_verdicts(smoke: dict) -> None:
    report, verdicts = compare_suite("smoke", smoke["out"], device="cpu", data=smoke["corpus"], say=lambda _: None)
    assert report == smoke["out"] / "report.md"
    assert [v.claim.key for v in verdicts] == [c.key for c in smoke["suite"].claims]


def test_loss_range_shows_the_first_points_and_names_only_extreme_outliers() -> None:
    from mixture_of_tokens.experiments.plots import loss_ylim

    curve = [7.0, 6.1, 5.6, 5.3, 5.1, 4.9, 4.8, 4.7, 4.65, 4.6]  # a first eval far above the rest: shown
    (low, high), note = loss_ylim(curve)
    assert low < 4.6 and high > 7.0 and note == ""
    (low, high), note = loss_ylim([*curve, 250.0])  # a diverged start: cut, and said
    assert 7.0 < high < 250.0 and note == "1 outlying point(s) above 7 not shown (highest 250)"
    assert loss_ylim([float("nan")]) == (None, "")


def test_report_loss_panels_hold_every_point_and_entropy_panels_share_zero_to_one(
    smoke: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mixture_of_tokens.experiments import suite_report

    drawn: dict[str, list] = {}
    monkeypatch.setattr(suite_report, "plot_panels", lambda panels, path, **_: drawn.setdefault(path.name, panels))
    suite = smoke["suite"]
    size = suite.size("smoke")
    report = suite_report_input(suite, size, collect(suite, size, smoke["out"]), None)
    suite_report.plot_losses(report, Path("eval_loss.png"))
    suite_report.plot_entropy(report, Path("merge_entropy.png"))
    for panel in drawn["eval_loss.png"][:2]:
        values = [y for series in panel.series for y in series.y]
        low, high = panel.ylim
        assert low <= min(values) and max(values) <= high, (panel.title, panel.ylim, max(values))
    entropy_panels = drawn["merge_entropy.png"]
    assert len(entropy_panels) >= 1 and {panel.ylim for panel in entropy_panels} == {(0.0, 1.02)}
