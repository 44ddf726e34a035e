"""`mot compare --suite NAME --out DIR`: train a comparison suite and write its report with computed verdicts;
`mot compare RUN_DIR ...`: a table of finished runs' final losses and a plot of their loss curves."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..runtime.devices import DEVICES
from .config_file import add_config_file_argument
from .help_text import examples


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..experiments.catalog import SUITES

    parser = subparsers.add_parser(
        "compare",
        help="run a comparison suite with computed verdicts (--suite), or tabulate finished runs",
        **examples(
            "mot compare --list",
            "mot compare --suite smoke --out runs/smoke",
            "mot compare runs/tiny-dense runs/tiny-mot --plot runs/tiny.png    # finished runs: table and plot",
        ),
    )
    parser.add_argument("runs", nargs="*", help="finished run directories to tabulate (without --suite)")
    parser.add_argument("--plot", default="runs/compare.png", help="where to write the plot of RUN_DIR ...")
    parser.add_argument("--suite", help=f"the suite to run: {', '.join(SUITES)} (`--list` describes them)")
    parser.add_argument("--out", help="the suite's directory: its runs, report.md and plots (default runs/NAME)")
    parser.add_argument("--device", default="auto", help=f"{' | '.join(DEVICES)} (default auto)")
    parser.add_argument(
        "--parallel", type=int, default=1, help="trainings at once, each in its own process with cores/N threads"
    )
    parser.add_argument("--size", help="cpu | gpu (default: gpu on a CUDA device, else cpu; smoke has one size)")
    parser.add_argument("--data", help="text source replacing the suite's (e.g. text:PATH, packaged+brown)")
    add_config_file_argument(parser)
    parser.add_argument("--list", action="store_true", help="list the suites: models, claims, runs and budgets")
    parser.add_argument(
        "--report-only", action="store_true", help="with --suite: rebuild the report from the runs on disk, train none"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    if args.list:
        print(list_suites())
        return
    if args.report_only and not args.suite:
        raise ValueError("--report-only goes with --suite NAME (it rebuilds that suite's report).")
    if args.suite:
        if args.runs:
            raise ValueError("pass either --suite NAME or run directories, not both.")
        run_suite_command(args)
        return
    if not args.runs:
        raise ValueError("pass run directories to tabulate, or --suite NAME to run a suite (see --list).")
    from ..experiments.report import comparison_table, load_run, plot_runs

    runs = [load_run(Path(d)) for d in args.runs]
    print(comparison_table(runs))
    print(f"plot: {plot_runs(runs, Path(args.plot))}")


def run_suite_command(args: argparse.Namespace) -> None:
    from ..experiments.catalog import get_suite
    from ..experiments.compare_suite import compare_suite
    from ..experiments.suite_report import verdict_sentence

    if args.device not in DEVICES:
        raise ValueError(f"--device {args.device!r} is not supported; allowed values: {', '.join(DEVICES)}.")
    if args.parallel < 1:
        raise ValueError(f"--parallel must be a positive integer, got {args.parallel}.")
    get_suite(args.suite)
    out = Path(args.out or f"runs/{args.suite}")
    report, verdicts = compare_suite(
        args.suite, out, device=args.device, parallel=args.parallel, size=args.size, data=args.data,
        progress=args.parallel == 1, train=not args.report_only,
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
