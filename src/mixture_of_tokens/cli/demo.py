"""`mot demo`: train tiny-dense and tiny-mot on the packaged corpus, print both eval losses side by side and write
RUN_DIR/report.md (table, loss and merge-entropy plots, the one comparison's margin)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..presets import get_preset
from .help_text import examples

DEMO_PRESETS = ("tiny-dense", "tiny-mot")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train tiny-dense and tiny-mot on the packaged corpus and compare",
        **examples("mot demo", "mot demo --steps 100 --out runs/demo-short --force"),
    )
    parser.add_argument("--out", default="runs/demo", help="directory for the two runs and the plot")
    parser.add_argument("--steps", type=int, default=0, help="steps per run (default: the presets' own)")
    parser.add_argument(
        "--force", action="store_true", help="move runs already under --out aside (NAME.old-<timestamp>) and rerun"
    )
    parser.add_argument("--data", default="", help="text source replacing the presets' (e.g. text:PATH)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from ..data import prepare_data
    from ..experiments.report import comparison_table, load_run, plot_runs

    out_root = Path(args.out)
    runs = []
    data = None
    for name in DEMO_PRESETS:
        preset = get_preset(name)
        train_config = dataclasses.replace(preset.train, out_dir=str(out_root / name))
        if args.steps:
            steps = args.steps
            train_config = dataclasses.replace(
                train_config, steps=steps, eval_every=max(steps // 4, 1), warmup_steps=steps // 10
            )
        if args.data:
            train_config = dataclasses.replace(train_config, data=args.data)
        data = data or prepare_data(train_config.data, vocab_size=preset.model.vocab_size)
        print(f"[{name}] {train_or_reuse(preset.model, train_config, name, data, force=args.force)}")
        runs.append(load_run(out_root / name))
    print()
    print(comparison_table(runs))
    print(f"plot: {plot_runs(runs, out_root / 'demo.png')}")
    report, sentence = write_demo_report(out_root, DEMO_PRESETS)
    print(sentence)
    print(f"report: {report}")
    print(
        "For verdicts judged against the spread over two seeds, with a learning-rate sweep per model: "
        "mot compare --suite claims-core; where extra parameters can pay (narrow models trained long): "
        "mot compare --suite claims-capacity (docs/compare.md)."
    )


def train_or_reuse(model_config, train_config, name: str, data, *, force: bool) -> str:
    """Train one demo run, or reuse it: a finished run of the same settings is kept, a half-finished one resumes
    from its newest checkpoint (so `make demo` can be run again); --force moves an old run aside and trains anew."""
    from ..checkpoint import read_config
    from ..experiments.runner import RunSpec, config_difference
    from ..training.loop import train
    from ..training.state import resolve_resume_checkpoint

    run_dir = Path(train_config.out_dir)
    if force or not (run_dir / "config.json").exists():
        train(model_config, train_config, run_name=name, data=data, force=force)
        return "trained"
    spec = RunSpec(name, train_config.lr, train_config.seed, model_config, train_config)
    difference = config_difference(spec, read_config(run_dir))
    if difference is not None:
        raise ValueError(
            f"{run_dir} holds a run of other settings ({difference}); pass --force to move it aside and train anew, "
            "or another --out."
        )
    if (run_dir / "summary.json").exists():
        return f"finished before: reused {run_dir}"
    try:
        resolve_resume_checkpoint(run_dir)
    except ValueError:  # stopped before its first checkpoint: nothing to resume
        train(model_config, train_config, run_name=name, data=data, force=True)
        return "restarted (the unfinished run moved aside)"
    train(None, None, run_name=name, data=data, resume_from=run_dir)
    return "resumed from its newest checkpoint"


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
        "mot demo: tiny-dense against tiny-mot",
        [f"Two runs of the CPU presets, {config['steps']} steps of {tokens_per_step:,} tokens ({budget} per run) "
         f"on `{config['data']}`, one seed each at the presets' learning rate.", "", sentence],
        summaries,
        [verdict],
        noise,
        tokens_per_step,
        config["steps"] * tokens_per_step,
        reference=dense,
        footer=["`mot compare --suite claims-core` runs the comparisons behind the paper's claims, with a "
                "learning-rate sweep and two seeds per model, and judges each claim against the seeds' spread "
                "(docs/compare.md)."],
    )  # fmt: skip
    return write_report(report, out_root), sentence
