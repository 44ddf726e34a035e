"""`mot compare RUN_DIR ...`: a table of final losses and a plot of the loss curves."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("compare", help="table and plot of finished runs")
    parser.add_argument("runs", nargs="+", help="run directories")
    parser.add_argument("--plot", default="runs/compare.png", help="where to write the plot")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from ..experiments.report import comparison_table, load_run, plot_runs

    runs = [load_run(Path(d)) for d in args.runs]
    print(comparison_table(runs))
    print(f"plot: {plot_runs(runs, Path(args.plot))}")
