"""`mot compare --suite NAME --out DIR`: run a suite (`runner`), read its results back from disk (`results`),
judge its claims (`verdicts`) and write DIR/report.md (`suite_report`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from ..runtime.devices import resolve_device
from .catalog import get_suite
from .planner import RUNS_DIR, disk_outcome, lr_text, run_name
from .results import ArmSummary, collect
from .runner import SuiteRun, current_plan, run_suite
from .suite_report import ReportInput, tokens, write_report
from .suites import Size, Suite
from .verdicts import Verdict, judge, pooled_noise


def resolve_size(suite: Suite, size: str | None, device: str) -> str:
    """The size asked for, else the suite's only size, else gpu on a CUDA device and cpu elsewhere."""
    if size:
        suite.size(size)
        return size
    if len(suite.sizes) == 1:
        return next(iter(suite.sizes))
    return "gpu" if resolve_device(device).type == "cuda" else "cpu"


def compare_suite(
    name: str,
    out: Path,
    *,
    device: str = "auto",
    parallel: int = 1,
    size: str | None = None,
    data: str | None = None,
    vocab_size: int | None = None,
    progress: bool = False,
    say: Callable[[str], None] = print,
    train: bool = True,
) -> tuple[Path, list[Verdict]]:
    """Run (or resume) the suite under `out`, then write out/report.md; returns its path and the verdicts.
    `data` / `vocab_size` replace the size's text source and vocabulary; `train=False` only rebuilds the report
    from the runs on disk."""
    suite = get_suite(name)
    chosen = suite.size(resolve_size(suite, size, device))
    replaced = {"data": data, "vocab_size": vocab_size}
    chosen = dataclasses.replace(chosen, **{k: v for k, v in replaced.items() if v is not None})
    run = None
    if train:
        run = run_suite(suite, chosen, Path(out), device=device, parallel=parallel, progress=progress, say=say)
    summaries = collect(suite, chosen, Path(out))
    report = suite_report_input(suite, chosen, summaries, run, out=Path(out))
    return write_report(report, Path(out)), report.verdicts


def suite_report_input(
    suite: Suite, size: Size, summaries: dict[str, ArmSummary], run: SuiteRun | None, out: Path | None = None
) -> ReportInput:
    results = {name: s.result() for name, s in summaries.items() if s.losses}
    distinct = {tuple(r.run_dir for r in s.runs): results[name] for name, s in summaries.items() if s.losses}
    noise = pooled_noise(list(distinct.values()))  # an alias reads its winner's runs: pooled once
    verdicts = [judge(claim, results, noise) for claim in suite.claims]
    directory = run.out if run is not None else out
    plan = current_plan(suite, size, directory) if directory is not None else None
    n_runs = len(plan.runs) if plan is not None else len(size.lrs) * len(suite.arms) * size.seeds
    model = size.base_model()
    overview = [
        f"Suite **{suite.name}** at size **{size.name}**: {suite.description}.",
        "",
        f"Every model: {model.n_blocks} blocks x d_model {model.d_model} (dense FF width {model.d_ff}), context "
        f"{size.seq_len}, batch {size.batch_size} x {size.seq_len} = {size.tokens_per_step:,} tokens a step, "
        f"{size.steps} steps = **{tokens(size.tokens_per_run)} per run**, on `{size.data}` (BPE "
        f"{size.vocab_size}). Learning rate: the best of {', '.join(lr_text(lr) for lr in size.lrs)} at seed 0, "
        f"then {size.seeds} seed(s) at the chosen rate: {n_runs} runs.",
    ]
    if suite.protocol:
        overview[-1] = overview[-1].rsplit(" Learning rate:", 1)[0] + f" {n_runs} runs so far."
        overview += ["", suite.protocol]
    if run is not None:
        counts: dict[str, int] = {}
        for outcome in run.outcomes:
            counts[outcome.action] = counts.get(outcome.action, 0) + 1
        done = ", ".join(f"{n} {action}" for action, n in sorted(counts.items()))
        overview += ["", f"This invocation: {done}; {run.parallel} at a time, device {run.device}, "
                     f"{run.seconds / 60:.1f} minutes of wall-clock."]  # fmt: skip
    if plan is not None and directory is not None:
        finished = sum(disk_outcome(directory / RUNS_DIR / run_name(r.arm.name, r.lr, r.seed))[0] for r in plan.runs)
        if finished < len(plan.runs) or not plan.complete:
            more = "" if plan.complete else "; more runs join the plan as its stages finish"
            overview += ["", f"**Incomplete:** {finished} of the {len(plan.runs)} runs planned so far have "
                         f"finished{more}. Claims whose models have not finished are not judged; running the same "
                         "command again continues where the suite stopped."]  # fmt: skip
    budgets = sorted({c.paper_tokens for c in suite.claims if c.paper_tokens})
    if budgets:
        ratio = budgets[0] / size.tokens_per_run
        overview += [
            "",
            f"The paper's figures for these claims train on about {' to '.join(tokens(b) for b in budgets)} per run, "
            f"{ratio:,.0f}x or more this budget. A verdict here is what the numbers show at "
            f"{tokens(size.tokens_per_run)} per run: a claim not held here is not refuted at the paper's scale, and "
            "one held here is not confirmed at it.",
        ]
    reference = "dense" if "dense" in summaries else None
    return ReportInput(
        f"mot compare --suite {suite.name}",
        overview,
        summaries,
        verdicts,
        noise,
        size.tokens_per_step,
        size.tokens_per_run,
        reference=reference,
        sections=switch_lines(summaries),
    )


def switch_lines(summaries: dict[str, ArmSummary]) -> list[str]:
    """The held-out loss just before and after each transition-tuning switch (the spike), per run."""
    lines = []
    for summary in summaries.values():
        for run in summary.runs:
            if run.switch:
                before, after = run.switch.get("eval_loss_before"), run.switch.get("eval_loss_after")
                if isinstance(before, (int, float)) and isinstance(after, (int, float)):
                    lines.append(
                        f"- {run.name}: at step {run.switch.get('step')} the switch to {run.switch.get('switch_to')} "
                        f"moved the held-out loss {before:.4f} -> {after:.4f} ({after - before:+.4f}); the run ended "
                        f"at {run.final_eval_loss:.4f}."
                    )
    return ["## Transition tuning: the switch", "", *lines] if lines else []
