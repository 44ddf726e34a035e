"""`mot compare --suite NAME --out DIR`: train a comparison suite and write its report with computed verdicts;
`mot compare RUN_DIR ...`: a table of finished runs' final losses and a plot of their loss curves."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..experiments.catalog import SUITES
from ..runtime.devices import DEVICES
from ..spelling import setting
from .config_args import add_config_fields, handler, option
from .config_file import add_config_file_argument
from .help_text import examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare",
        help="run a comparison suite with computed verdicts (--suite), or tabulate finished runs",
        **examples(
            "mot compare --list",
            "mot compare --suite smoke --out runs/smoke",
            "mot compare runs/tiny-dense runs/tiny-mot --plot runs/tiny.png    # finished runs: table and plot",
        ),
    )
    add_config_fields(parser, CompareConfig)
    add_config_file_argument(parser)
    parser.set_defaults(handler=handler(run, CompareConfig))


@dataclass(frozen=True, kw_only=True)
class CompareConfig:
    """`mot compare`: a suite to run (`suite`), finished runs to tabulate (`runs`), or the list of suites."""

    runs: tuple[str, ...] = option(
        "finished run directories to tabulate (without --suite)", (), positional=True, metavar="runs"
    )
    plot: str = option("where to write the plot of RUN_DIR ...", "runs/compare.png")
    suite: str | None = option(f"the suite to run: {', '.join(SUITES)} (`--list` describes them)", None)
    out: str | None = option("the suite's directory: its runs, report.md and plots (default runs/NAME)", None)
    device: str = option(f"{' | '.join(DEVICES)} (default auto)", "auto")
    parallel: int = option("trainings at once, each in its own process with cores/N threads", 1)
    size: str | None = option("cpu | gpu (default: gpu on a CUDA device, else cpu; smoke has one size)", None)
    data: str | None = option("text source replacing the suite's (e.g. text:PATH, packaged+brown)", None)
    list: bool = option("list the suites: models, claims, runs and budgets", False)
    report_only: bool = option("with --suite: rebuild the report from the runs on disk, train none", False)

    def __post_init__(self) -> None:
        if self.list:
            return
        if self.report_only and not self.suite:
            raise ValueError(
                f"{setting('report_only')} goes with {setting('suite')} NAME (it rebuilds that suite's report)."
            )
        if self.suite and self.runs:
            raise ValueError(f"pass either {setting('suite')} NAME or run directories, not both.")
        if self.device not in DEVICES:
            raise ValueError(
                f"{setting('device')} {self.device!r} is not supported; allowed values: {', '.join(DEVICES)}."
            )
        if self.parallel < 1:
            raise ValueError(f"{setting('parallel')} must be a positive integer, got {self.parallel}.")
        if self.suite:
            from ..experiments.catalog import get_suite

            get_suite(self.suite)


def run(config: CompareConfig) -> None:
    if config.list:
        print(list_suites())
        return
    if config.suite:
        run_suite_command(config)
        return
    if not config.runs:
        raise ValueError("pass run directories to tabulate, or --suite NAME to run a suite (see --list).")
    from ..experiments.report import comparison_table, load_run, plot_runs

    runs = [load_run(Path(d)) for d in config.runs]
    print(comparison_table(runs))
    print(f"plot: {plot_runs(runs, Path(config.plot))}")


def run_suite_command(config: CompareConfig) -> None:
    from ..experiments.compare_suite import compare_suite
    from ..experiments.suite_report import verdict_sentence

    out = Path(config.out or f"runs/{config.suite}")
    report, verdicts = compare_suite(
        config.suite, out, device=config.device, parallel=config.parallel, size=config.size, data=config.data,
        progress=config.parallel == 1, train=not config.report_only,
    )  # fmt: skip
    print()
    print(verdict_sentence(verdicts))
    print(f"report: {report}")


def list_suites() -> str:
    from ..experiments.catalog import SUITES
    from ..experiments.planner import expected_runs
    from ..experiments.suite_report import tokens

    lines = []
    for suite in SUITES.values():
        lines.append(f"{suite.name}: {suite.description}")
        lines.append(f"  models: {', '.join(arm.name for arm in suite.arms)}")
        lines.append(f"  claims: {', '.join(claim.key for claim in suite.claims)}")
        for size in suite.sizes.values():
            runs = expected_runs(suite, size)
            more = " or more (a sweep widens at an edge)" if size.widen else ""
            lines.append(
                f"  size {size.name}: d_model {size.d_model}, {size.n_blocks} blocks, batch {size.batch_size} x "
                f"{size.seq_len}, {size.steps} steps ({tokens(size.tokens_per_run)} per run), {runs} runs{more}"
            )
    return "\n".join(lines)
