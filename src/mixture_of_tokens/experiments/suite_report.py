"""The report of a comparison: DIR/report.md with its PNG plots (through `plots.plot_panels`), written from the
numbers on disk. Used by `mot compare --suite` and `mot demo`.

Sections: the setting and token budget; each claim's verdict with its margin, the noise it was judged against and
the paper's figure for the same claim; a table per model (final loss over seeds, parameters, active FLOPs per
token, tokens/s, wall-clock); the learning-rate sweep; eval loss against steps and training FLOPs; the MoT layers'
merge-weight entropy over training.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..counting import human
from .planner import lr_text
from .plots import Panel, Series, loss_ylim, plot_panels
from .results import ArmSummary
from .verdicts import NOT_JUDGED, Noise, Verdict

REPORT_FILE = "report.md"
LOSS_PLOT, ENTROPY_PLOT, SWEEP_PLOT = "eval_loss.png", "merge_entropy.png", "lr_sweep.png"
ENTROPY_LOSS_PLOT = "entropy_vs_loss.png"
ENTROPY_YLIM = (0.0, 1.02)
"""One y scale for every merge-entropy panel: normalised entropy runs from 0 (one token) to 1 (uniform)."""


@dataclass
class ReportInput:
    title: str
    overview: list[str]
    """Paragraphs on the setting: models, data, budget, device."""
    summaries: dict[str, ArmSummary]
    verdicts: list[Verdict]
    noise: Noise
    tokens_per_step: int
    tokens_per_run: int
    reference: str | None = None
    """The arm every other is compared with in the table and the difference plot (dense when there is one)."""
    sections: list[str] = field(default_factory=list)
    """Markdown lines after the results (e.g. the transition switch)."""
    footer: list[str] = field(default_factory=list)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def tokens(count: float) -> str:
    """A token count for prose: 5.1k, 0.82M, 9.8B tokens."""
    for unit, scale, digits in (("B", 1e9, 1), ("M", 1e6, 2), ("k", 1e3, 1)):
        if count >= scale or (unit == "M" and count >= 1e5):
            return f"{count / scale:.{digits}f}{unit} tokens"
    return f"{count:.0f} tokens"


def verdict_rows(report: ReportInput) -> list[list[str]]:
    rows = []
    for verdict in report.verdicts:
        claim = verdict.claim
        paper = claim.paper + (f" (about {tokens(claim.paper_tokens)} per run)" if claim.paper_tokens else "")
        rows.append(
            [
                claim.statement,
                f"**{verdict.outcome}**",
                f"{verdict.margin:+.4f}" if verdict.margin is not None else "–",
                f"±{verdict.noise:.4f}" if verdict.noise is not None else "not measured",
                f"{tokens(report.tokens_per_run)} per run",
                paper,
            ]
        )
    return rows


def results_rows(report: ReportInput) -> list[list[str]]:
    reference = report.summaries.get(report.reference or "")
    rows = []
    for name, summary in report.summaries.items():
        run = summary.runs[0] if summary.runs else None
        mean = summary.mean_loss
        if mean is None or run is None:
            why = waiting_reason(summary)
            rows.append([f"{name}: {summary.label}", "–", why, "", "", "", "", "", "", ""])
            continue
        spread = f" ± {summary.spread / 2:.4f}" if summary.spread is not None else ""
        delta = f"{mean - reference.mean_loss:+.4f}" if reference and reference.mean_loss is not None else "–"
        counts = run.counts
        speeds = [r.tokens_per_s for r in summary.runs if r.tokens_per_s]
        seconds = [r.seconds for r in summary.runs if r.seconds]
        resumed = "*" if any(r.resumed for r in summary.runs) else ""
        rows.append(
            [
                f"{name}: {summary.label}",
                lr_text(summary.best_lr),
                f"{mean:.4f}{spread}",
                str(len(summary.losses)),
                delta,
                human(counts.get("total_params", 0)),
                human(counts.get("active_params_per_token", 0)),
                human(counts.get("train_flops_per_token", 0)),
                f"{sum(speeds) / len(speeds):,.0f}" if speeds else "–",
                f"{sum(seconds) / len(seconds):.0f} s{resumed}" if seconds else "–",
            ]
        )
    return rows


def waiting_reason(summary: ArmSummary) -> str:
    """Why a model has no loss yet: every rate diverged, its runs are under way, or it waits for other models."""
    if summary.sweep and all(r.diverged for r in summary.sweep.values()):
        return "diverged at every rate"
    if summary.sweep:
        return "not finished"
    arm = summary.arm
    sources = arm.best_of or arm.settings_from or ((arm.lr_from,) if arm.lr_from else ())
    return f"waits for {', '.join(sources)}" if sources else "not started"


def sweep_table(report: ReportInput) -> str:
    rates = sorted({lr for s in report.summaries.values() for lr in s.sweep})
    rows = []
    for name, summary in report.summaries.items():
        cells = []
        for lr in rates:
            run = summary.sweep.get(lr)
            if run is None:
                cells.append("")
            elif run.final_eval_loss is not None:
                text = f"{run.final_eval_loss:.4f}"
                cells.append(f"**{text}**" if lr == summary.best_lr else text)
            else:
                cells.append("diverged" if run.diverged else "not finished")
        note = "best at the edge of the sweep" if summary.best_at_edge else ""
        rows.append([name, *cells, note])
    return markdown_table(["model", *(f"lr {lr_text(lr)}" for lr in rates), "note"], rows)


def plot_losses(report: ReportInput, path: Path) -> Path:
    trained = {name: s for name, s in report.summaries.items() if s.runs and not s.arm.is_alias}
    curves = {name: s.mean_curve() for name, s in trained.items()}
    flops = {name: s.runs[0].counts.get("train_flops_per_token", 0) for name, s in trained.items()}
    ylim, clipped = loss_ylim([loss for curve in curves.values() for _, loss in curve])
    notes = (clipped,) if clipped else ()
    by_step = [Series(name, [s for s, _ in c], [v for _, v in c], group=name, marker="o") for name, c in curves.items()]
    by_flops = [
        Series(name, [s * report.tokens_per_step * flops[name] for s, _ in c], [v for _, v in c], group=name,
               marker="o")
        for name, c in curves.items()
    ]  # fmt: skip
    panels = [
        Panel("held-out loss (mean over seeds)", "step", "eval loss (nats/token)", by_step, ylim=ylim, notes=notes),
        Panel(
            "against training compute",
            "training FLOPs",
            "eval loss (nats/token)",
            by_flops,
            ylim=ylim,
            logx=True,
            notes=notes,
        ),
    ]
    reference = curves.get(report.reference or "")
    if reference:
        base = dict(reference)
        differences = [
            Series(
                name, [s for s, _ in c if s in base], [v - base[s] for s, v in c if s in base], group=name, marker="o"
            )
            for name, c in curves.items()
            if name != report.reference and _objective(report, name) == _objective(report, report.reference)
        ]  # a masked-token loss is not comparable with a next-token loss
        panels.append(
            Panel(f"difference to {report.reference} (below 0: better)", "step", "eval loss difference (nats)",
                  differences, hlines=[(0.0, report.reference)])
        )  # fmt: skip
    return plot_panels(panels, path, columns=3, groups=list(report.summaries))


def _objective(report: ReportInput, name: str) -> str:
    """The training objective of a suite model (causal unless its arm sets one)."""
    return str(dict(report.summaries[name].arm.model).get("objective", "causal"))


def plot_entropy(report: ReportInput, path: Path) -> Path | None:
    """One panel per block holding an MoT layer; one line per MoT model (its first seed at the chosen rate)."""
    trained = {name: s for name, s in report.summaries.items() if s.runs and not s.arm.is_alias}
    blocks = sorted({b for s in trained.values() for b in s.runs[0].entropy})
    if not blocks:
        return None
    panels = []
    for block in blocks:
        series = [
            Series(name, [x for x, _ in s.runs[0].entropy[block]], [y for _, y in s.runs[0].entropy[block]], group=name)
            for name, s in trained.items()
            if block in s.runs[0].entropy
        ]
        panels.append(
            Panel(f"block {block}: merge-weight entropy", "step", "mean H(w) / log G (1 = uniform)", series,
                  ylim=ENTROPY_YLIM)
        )  # fmt: skip
    return plot_panels(panels, path, columns=min(len(panels), 3), groups=list(report.summaries))


def entropy_points(report: ReportInput) -> dict[str, tuple[float, float]]:
    """Every trained MoT model's (merge-weight entropy at the end of its first seed, mean final eval loss)."""
    points = {}
    for name, summary in report.summaries.items():
        if summary.runs and not summary.arm.is_alias and summary.mean_loss is not None:
            entropy = summary.runs[0].final_entropy
            if entropy is not None:
                points[name] = (entropy, summary.mean_loss)
    return points


def entropy_table(report: ReportInput) -> list[str]:
    """The entropy-against-loss section: one row per MoT model, most diffuse first."""
    points = entropy_points(report)
    if not points:
        return []
    rows = []
    for name, (entropy, loss) in sorted(points.items(), key=lambda item: -item[1][0]):
        run = report.summaries[name].runs[0]
        blocks = ", ".join(f"{curve[-1][1]:.3f}" for _, curve in sorted(run.entropy.items()) if curve)
        taus = ", ".join(f"{t:.3g}" for _, t in sorted(run.temperature.items())) or "fixed"
        rows.append([name, f"{entropy:.3f}", blocks, taus, f"{loss:.4f}"])
    headers = ["model", "merge entropy at the end", "per block", "tau at the end", "final eval loss"]
    return [
        "## Merge-weight entropy and eval loss",
        "",
        "Normalised merge-weight entropy H(w) / log G at the last log step of each MoT model's first seed (1: "
        "uniform mixing, 0: one token per expert per group), and the learned or scheduled tau where it moves.",
        "",
        markdown_table(headers, rows),
    ]


def plot_entropy_against_loss(report: ReportInput, path: Path) -> Path | None:
    """One point per MoT model: final merge-weight entropy against final eval loss, dense as a line."""
    points = entropy_points(report)
    if len(points) < 2:
        return None
    series = [Series(name, [e], [loss], group=name, marker="o", linestyle="") for name, (e, loss) in points.items()]
    reference = report.summaries.get(report.reference or "")
    hlines = [(reference.mean_loss, report.reference)] if reference and reference.mean_loss is not None else []
    panel = Panel("MoT: sharper mixing against eval loss", "merge-weight entropy at the end (H / log G)",
                  "final eval loss (mean over seeds)", series, hlines=hlines)  # fmt: skip
    return plot_panels([panel], path, columns=1, groups=list(report.summaries))


def plot_sweep(report: ReportInput, path: Path) -> Path | None:
    series = []
    for name, summary in report.summaries.items():
        points = sorted((lr, r.final_eval_loss) for lr, r in summary.sweep.items() if r.final_eval_loss is not None)
        if len(points) > 1:
            series.append(Series(name, [lr for lr, _ in points], [v for _, v in points], group=name, marker="o"))
    if not series:
        return None
    panel = Panel("learning-rate sweep (seed 0)", "peak learning rate", "final eval loss", series, logx=True)
    return plot_panels([panel], path, columns=1, groups=list(report.summaries))


def write_report(report: ReportInput, out: Path) -> Path:
    """Write out/report.md, its plots and out/results.json; returns the report's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    loss_plot = plot_losses(report, out / LOSS_PLOT) if any(s.runs for s in report.summaries.values()) else None
    entropy_plot = plot_entropy(report, out / ENTROPY_PLOT)
    sweep_plot = plot_sweep(report, out / SWEEP_PLOT)
    entropy_loss_plot = plot_entropy_against_loss(report, out / ENTROPY_LOSS_PLOT)
    lines = [f"# {report.title}", "", *report.overview, "", "## Verdicts", ""]
    lines += [
        markdown_table(["claim", "verdict", "margin (nats)", "noise", "found at", "the paper"], verdict_rows(report)),
        "",
    ]
    for verdict in report.verdicts:
        lines.append(f"- **{verdict.claim.key}** ({verdict.outcome}): {verdict.finding}")
    lines += ["", _noise_paragraph(report), ""]
    headers = ["model", "lr", "final eval loss", "seeds", f"vs {report.reference or '–'}", "params",
               "active params/token", "train FLOPs/token", "tokens/s", "wall-clock/run"]  # fmt: skip
    lines += ["## Results", "", markdown_table(headers, results_rows(report)), ""]
    lines.append(
        "Final eval loss: mean over seeds at the chosen learning rate, ± half the spread between seeds. "
        "Tokens/s and wall-clock: averages over those runs (* a run resumed: its time counts only the resumed part)."
    )
    if any(len(s.sweep) > 1 for s in report.summaries.values()):
        lines += ["", "## Learning-rate sweep", "", "Final eval loss at seed 0; bold: chosen.", "", sweep_table(report)]
    if len(entropy_points(report)) > 1:
        lines += ["", *entropy_table(report)]
    if report.sections:
        lines += ["", *report.sections]
    lines += ["", "## Plots", ""]
    for plot, caption in (
        (loss_plot, "eval loss against steps and training FLOPs"),
        (entropy_plot, "MoT merge-weight entropy over training (1 = uniform merge weights)"),
        (sweep_plot, "learning-rate sweep"),
        (entropy_loss_plot, "MoT merge-weight entropy at the end against final eval loss"),
    ):
        if plot is not None:
            lines += [f"![{caption}]({plot.name})", ""]
    lines += [*report.footer, "", f"_Written {time.strftime('%Y-%m-%d %H:%M')}._", ""]
    path = out / REPORT_FILE
    path.write_text("\n".join(lines), encoding="utf-8")
    (out / "results.json").write_text(json.dumps(results_json(report), indent=2), encoding="utf-8")
    return path


def _noise_paragraph(report: ReportInput) -> str:
    if report.noise.seed_std is None:
        return (
            "Noise: not measured (one seed per model), so no claim is judged; the margins are single runs. "
            "A verdict needs the spread over at least two seeds."
        )
    return (
        f"Noise: {report.noise.describe()}; a claim's noise band is twice the standard error of the difference it "
        "looks at. Each model's first seed is its sweep's winning run, so every model alike gets the benefit of "
        "the selection."
    )


def results_json(report: ReportInput) -> dict:
    return {
        "title": report.title,
        "tokens_per_run": report.tokens_per_run,
        "noise_seed_std": report.noise.seed_std,
        "verdicts": [
            {"claim": v.claim.key, "outcome": v.outcome, "margin": v.margin, "noise": v.noise, "finding": v.finding}
            for v in report.verdicts
        ],
        "models": {
            name: {
                "lr": s.best_lr,
                "losses": list(s.losses),
                "sweep": {lr_text(lr): r.final_eval_loss for lr, r in s.sweep.items()},
            }
            for name, s in report.summaries.items()
        },
    }


def verdict_sentence(verdicts: Sequence[Verdict]) -> str:
    """One line per verdict for the terminal."""
    return "\n".join(
        f"{v.claim.key}: {v.outcome}"
        + (f" (margin {v.margin:+.4f}, noise ±{v.noise:.4f})" if v.outcome != NOT_JUDGED and v.noise else "")
        + f" — {v.finding}"
        for v in verdicts
    )
