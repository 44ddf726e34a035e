"""`mot demo`: train narrow-dense and narrow-mot (the capacity-bound pair, where MoT beats dense) side by side on
`packaged+brown`, print both eval losses and write RUN_DIR/report.md (table, loss and merge-entropy plots, the one
comparison's margin)."""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..presets import get_preset
from ..spelling import setting
from .config_args import add_config_fields, handler, option
from .help_text import examples

DEMO_PRESETS = ("narrow-dense", "narrow-mot")
POLL_SECONDS = 2.0
"""How often the side-by-side progress bar reads the two runs' metrics files."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train narrow-dense and narrow-mot side by side and compare (about 15-25 minutes on 2 CPU cores)",
        **examples("mot demo", "mot demo --steps 500 --out runs/demo-short --force"),
    )
    add_config_fields(parser, DemoConfig)
    parser.set_defaults(handler=handler(run, DemoConfig))


def _default_parallel() -> int:
    return min(2, os.cpu_count() or 1)


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """Where `mot demo` writes its two runs, how long they train and how many train at once."""

    out: str = option("directory for the two runs and the plot", "runs/demo")
    steps: int = option("steps per run (default: the presets' own)", 0)
    force: bool = option("move runs already under --out aside (NAME.old-<timestamp>) and rerun", False)
    data: str = option("text source replacing the presets' (e.g. text:PATH)", "")
    parallel: int = option(
        "trainings at once, one process each with cores / N threads (default: 2 where there are 2 cores)",
        default_factory=_default_parallel,
    )

    def __post_init__(self) -> None:
        if self.parallel < 1:
            raise ValueError(f"{setting('parallel')} must be a positive integer, got {self.parallel}.")


def run(config: DemoConfig) -> None:
    from ..data import prepare_data
    from ..experiments.report import comparison_table, load_run, plot_runs
    from ..experiments.runner import run_state
    from ..training.run_directory import move_aside

    out_root = Path(config.out)
    specs = [demo_spec(name, out_root, steps=config.steps, data=config.data, parallel=config.parallel)
             for name in DEMO_PRESETS]  # fmt: skip
    if config.force:
        for spec in specs:
            if spec.run_dir.is_dir() and any(spec.run_dir.iterdir()):
                print(f"[{spec.arm}] moved the old run aside to {move_aside(spec.run_dir)}")
    remedy = f"pass {setting('force', True)} to move it aside and train anew, or another {setting('out')}."
    for spec in specs:  # every conflict is found before any training
        run_state(spec, remedy=remedy)
    data = prepare_data(specs[0].train.data, vocab_size=specs[0].model.vocab_size)
    for outcome in train_side_by_side(specs, data=data, parallel=config.parallel):
        print(f"[{outcome.spec.arm}] {describe(outcome)}")
    runs = [load_run(spec.run_dir) for spec in specs]
    print()
    print(comparison_table(runs))
    print(f"plot: {plot_runs(runs, out_root / 'demo.png')}")
    report, sentence = write_demo_report(out_root, DEMO_PRESETS)
    print(sentence)
    print(f"report: {report}")
    print(
        "For verdicts judged against the spread over seeds, with a learning-rate sweep per model: "
        "mot compare --suite claims-capacity (docs/compare.md); at the tiny shape, where MoT trails dense: "
        "mot compare --suite claims-core."
    )


def demo_spec(name: str, out_root: Path, *, steps: int, data: str, parallel: int):
    """One demo run as a suite run: the preset's model and training, written to out_root/NAME."""
    from ..experiments.runner import RunSpec, threads_per_run

    preset = get_preset(name)
    threads = threads_per_run(parallel)
    train_config = dataclasses.replace(preset.train, out_dir=str(out_root / name), threads=threads)
    if steps:
        warmup = min(train_config.warmup_steps, steps // 10)
        train_config = dataclasses.replace(
            train_config, steps=steps, eval_every=max(steps // 4, 1), warmup_steps=warmup
        )
    if data:
        train_config = dataclasses.replace(train_config, data=data)
    return RunSpec(name, train_config.lr, train_config.seed, preset.model, train_config)


def describe(outcome) -> str:
    return {
        "skipped": f"finished before: reused {outcome.spec.run_dir}",
        "trained": "trained",
        "resumed": "resumed from its newest checkpoint",
        "restarted": "restarted (the unfinished run moved aside)",
    }.get(outcome.action, f"{outcome.action}: {outcome.message}")


def train_side_by_side(specs: Sequence, *, data, parallel: int) -> list:
    """Each run skipped, resumed or trained (`runner.execute`); with `parallel` > 1 in that many processes at once,
    under one progress bar over the steps of all of them, read from their metrics files."""
    from ..experiments.runner import execute, execute_in_worker

    if parallel == 1:
        return [execute(spec, data=data, progress=True) for spec in specs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, wait

    from ..progress import progress_bar

    total = sum(spec.train.steps for spec in specs)
    done = steps_done(specs)
    bar = progress_bar(total, " + ".join(spec.arm for spec in specs), initial=done)
    with ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(execute_in_worker, spec) for spec in specs]
        started = time.perf_counter()
        while True:
            finished, _ = wait(futures, timeout=POLL_SECONDS)
            now = total if len(finished) == len(futures) else steps_done(specs)
            bar.update(max(now - done, 0))
            done = max(now, done)
            bar.set_postfix(elapsed=f"{time.perf_counter() - started:.0f}s")
            if len(finished) == len(futures):
                break
    bar.close()
    return [future.result() for future in futures]


def steps_done(specs: Sequence) -> int:
    """Training steps logged so far by every run of `specs` (its metrics file's last record)."""
    from ..training.run_files import read_run_metrics

    return sum(next((r["step"] for r in reversed(read_run_metrics(spec.run_dir)) if "step" in r), 0)
               for spec in specs)  # fmt: skip


def write_demo_report(out_root: Path, names: tuple[str, str]) -> tuple[Path, str]:
    """out_root/report.md for the two runs (table, loss and entropy plots) and its one-sentence verdict: one seed
    each, so the noise is not measured and the claim is not judged."""
    from ..experiments.catalog import claim_mot_beats_dense
    from ..experiments.results import ArmSummary, read_run
    from ..experiments.suite_report import ReportInput, tokens, write_report
    from ..experiments.suites import Arm
    from ..experiments.verdicts import judge, pooled_noise

    dense, mot = names
    summaries = {}
    for name in names:
        record = read_run(out_root / name)
        train_config = get_preset(name).train
        record.lr, record.seed = train_config.lr, train_config.seed
        summaries[name] = ArmSummary(Arm(name, get_preset(name).description), {record.lr: record}, record.lr, [record])
    results = {name: s.result() for name, s in summaries.items()}
    noise = pooled_noise(list(results.values()))
    verdict = judge(claim_mot_beats_dense(mot, dense), results, noise)
    from ..checkpoint import read_config

    config = read_config(out_root / dense)["train"]
    seq_len = get_preset(dense).model.max_seq_len
    tokens_per_step = config["batch_size"] * seq_len
    budget = tokens(config["steps"] * tokens_per_step)
    sentence = (
        f"{verdict.finding[:-1]} after {config['steps']} steps ({budget} per run). One seed each, so the noise is "
        "not measured and this is not yet a verdict."
    )
    report = ReportInput(
        f"mot demo: {dense} against {mot}",
        [f"Two runs of the CPU presets, {config['steps']} steps of {tokens_per_step:,} tokens ({budget} per run) "
         f"on `{config['data']}`, one seed each at the presets' learning rate.", "", sentence],
        summaries,
        [verdict],
        noise,
        tokens_per_step,
        config["steps"] * tokens_per_step,
        reference=dense,
        footer=["`mot compare --suite claims-capacity` runs this comparison with a learning-rate sweep for every "
                "model and a second seed, and judges it against the seeds' spread (docs/compare.md)."],
    )  # fmt: skip
    return write_report(report, out_root), sentence
