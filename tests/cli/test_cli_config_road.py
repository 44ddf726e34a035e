"""One configuration road (issue 24 item 2): a converted command's flags are generated from its config dataclass,
one flag per field with the field's docstring as help; the handler gets the dataclass, which checks itself, so a
bad value is one line naming the flag (exit status 2) and the same dataclass runs the command from Python."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
from cli_runs import error_lines, run_mot

from mixture_of_tokens.cli import build_parser
from mixture_of_tokens.cli.audit import AuditConfig
from mixture_of_tokens.cli.compare import CompareConfig
from mixture_of_tokens.cli.config_args import config_from_args, flag_of, help_text
from mixture_of_tokens.cli.convert import ConvertConfig
from mixture_of_tokens.cli.data import DataInfoConfig, DataPrepareConfig
from mixture_of_tokens.cli.demo import DemoConfig
from mixture_of_tokens.cli.eval import EvalRunOptions
from mixture_of_tokens.cli.experiment import TransitionExperimentConfig
from mixture_of_tokens.cli.export import ExportConfig
from mixture_of_tokens.cli.generate import GenerateRunOptions
from mixture_of_tokens.cli.scaling import ScalingFitConfig, ScalingPlanConfig, ScalingPredictConfig
from mixture_of_tokens.cli.train import TrainRunOptions
from mixture_of_tokens.config import ModelConfig, TrainConfig, field_help
from mixture_of_tokens.config_renames import old_names

COMMANDS = {
    ("audit",): AuditConfig,
    ("demo",): DemoConfig,
    ("compare",): CompareConfig,
    ("convert",): ConvertConfig,
    ("export",): ExportConfig,
    ("experiment", "transition"): TransitionExperimentConfig,
    ("data", "prepare"): DataPrepareConfig,
    ("data", "info"): DataInfoConfig,
    ("scaling", "plan"): ScalingPlanConfig,
    ("scaling", "predict"): ScalingPredictConfig,
    ("scaling", "fit"): ScalingFitConfig,
    ("generate",): GenerateRunOptions,
    ("eval",): EvalRunOptions,
    ("train",): (TrainRunOptions, ModelConfig, TrainConfig),
}
"""Each command's config dataclass, or its dataclasses when its flags are the fields of several (`mot train`: its
run options beside the ModelConfig and TrainConfig fields over the preset)."""
NOT_FIELDS = {"-h", "--config", "--G"}
"""Flags of no field: help, `--config FILE` (a file of the fields' values: `mot compare`, `mot train`) and `mot
scaling predict`'s hidden legacy alias `--G` of `--granularity`."""


def _subparser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    return parser


def _config_help(cls: type, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """{flag: help} of a ModelConfig-style dataclass's fields (those in `names`): its docstring and default."""
    helps = field_help(cls)
    expected = {}
    for f in dataclasses.fields(cls):
        if names is None or f.name in names:
            default = f.default if f.type in ("bool", "bool | None") else repr(f.default)
            expected["--" + f.name.replace("_", "-")] = f"{helps[f.name]} (default {default})"
    return expected


def _expected_help(classes: type | tuple[type, ...]) -> dict[str, str]:
    """{flag (or positional name): help} as the dataclasses declare them; fields of another config held as
    overrides (`mot convert`'s routing, `mot generate`'s decoding) are that config's fields, with their own help
    and default."""
    expected: dict[str, str] = {}
    for cls in classes if isinstance(classes, tuple) else (classes,):
        for f in dataclasses.fields(cls):
            if "overrides" in f.metadata:
                expected |= _config_help(*f.metadata["overrides"])
            elif "cli" not in f.metadata:  # a ModelConfig / TrainConfig field
                expected |= _config_help(cls, (f.name,))
            else:
                assert f.metadata["help"], f"{cls.__name__}.{f.name} has no docstring"
                text = help_text(f)
                assert text == f.metadata["help"] or text.startswith(f.metadata["help"] + " (default ")
                expected[flag_of(f)] = text
    return expected


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_every_flag_is_a_field_and_every_field_a_flag_with_its_docstring(path: tuple[str, ...]) -> None:
    parser = _subparser(path)
    shown = {}
    for action in parser._actions:
        names = action.option_strings or [action.dest]
        if NOT_FIELDS & set(names):
            continue
        name, *aliases = [n for n in names if not n.startswith("--no-")]  # --x / --no-x is one field
        assert aliases == ["--" + old.replace("_", "-") for old in old_names(action.dest)]  # --top-k: --tc-top-k
        shown[name] = action.help.replace("%%", "%")  # argparse formats help: a literal % is written %%
    assert shown == _expected_help(COMMANDS[path])
    printed = "".join(parser.format_help().split())  # --help wraps lines (also at hyphens)
    for text in shown.values():
        assert "".join(text.split()) in printed


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["audit", "--seq-len", "0"], "--seq-len"),
        (["audit", "--seed", "one"], "--seed"),
        (["demo", "--parallel", "0"], "--parallel"),
        (["compare", "--suite", "smoke", "--device", "tpu"], "--device"),
        (["compare", "runs/a", "--report-only"], "--report-only"),
        (["convert", "--checkpoint", "a", "--to", "switch", "--out", "b"], "--to"),
        (["convert", "--checkpoint", "a", "--to", "token-choice", "--out", "b", "--top-k", "two"], "--top-k"),
        (["export", "--checkpoint", "a", "--to", "onnx", "--out", "b"], "--to"),
        (["experiment", "transition", "--continue-steps", "0"], "--continue-steps"),
        (["data", "prepare", "--source", "c5"], "--source"),
        (["data", "prepare", "--vocab-size", "big"], "--vocab-size"),
        (["scaling", "plan", "--flops", "1e20", "--granularities", "0,8"], "--granularities"),
        (["scaling", "predict", "--N", "1e9", "--D", "0"], "--D"),
        (["scaling", "predict", "--N", "1e9", "--D", "1e10", "--granularity", "-1"], "--granularity"),
        (["scaling", "fit", "--runs", "runs.csv", "--holdout", "1"], "--holdout"),
        (["scaling", "fit", "--runs", "runs.csv", "--kind", "moe"], "--kind"),
        (["generate", "--checkpoint", "runs/a"], "--prompt"),
        (["generate", "--checkpoint", "runs/a", "--prompts-file", "prompts.txt"], "--prompts-file"),
        (["eval", "--checkpoint", "runs/a", "--task-file", "piqa"], "--task-file"),
        (["train", "--resume", "runs/a", "--preset", "tiny-mot"], "--preset"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_flag(argv, flag, capsys, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    status, stdout, stderr = run_mot(argv, capsys)
    (line,) = error_lines(stderr)
    assert status == 2 and flag in line and "Traceback" not in stderr and not stdout
    assert not any(tmp_path.iterdir())  # nothing written


def test_the_handler_gets_the_dataclass_built_from_the_flags() -> None:
    parser = build_parser()
    args = parser.parse_args(["compare", "runs/a", "runs/b", "--plot", "p.png"])
    assert config_from_args(args, CompareConfig) == CompareConfig(runs=("runs/a", "runs/b"), plot="p.png")
    args = parser.parse_args(["convert", "--checkpoint", "a", "--to", "expert-choice", "--out", "b", "--top-k", "2"])
    assert config_from_args(args, ConvertConfig) == ConvertConfig(
        checkpoint="a", target="expert-choice", out="b", routing={"tc_top_k": 2}
    )
    args = parser.parse_args(["audit", "runs/x", "--json", "--position", "3"])
    assert config_from_args(args, AuditConfig) == AuditConfig(checkpoint="runs/x", json=True, position=3)
    assert config_from_args(parser.parse_args(["demo"]), DemoConfig) == DemoConfig()
    args = parser.parse_args(["data", "prepare", "--source", "text:corpus/", "--vocab-size", "4096"])
    assert config_from_args(args, DataPrepareConfig) == DataPrepareConfig(source="text:corpus/", vocab_size=4096)
    assert config_from_args(parser.parse_args(["data", "info"]), DataInfoConfig) == DataInfoConfig()
    args = parser.parse_args(["scaling", "predict", "--N", "1e9", "--D", "2e10", "--G", "8", "--json"])
    assert config_from_args(args, ScalingPredictConfig) == ScalingPredictConfig(
        params=1e9, tokens=2e10, granularity=8.0, json=True
    )
    args = parser.parse_args(["scaling", "plan", "--flops", "1e18:1e25", "--granularities", "1,8,32"])
    config = config_from_args(args, ScalingPlanConfig)
    assert config == ScalingPlanConfig(flops="1e18:1e25", granularities="1,8,32")
    assert config.granularity_choices == (1, 8, 32)
    args = parser.parse_args(["scaling", "fit", "--runs", "runs/", "--kind", "dense", "--bootstrap", "0"])
    assert config_from_args(args, ScalingFitConfig) == ScalingFitConfig(runs="runs/", kind="dense", bootstrap=0)
    args = parser.parse_args(["generate", "--checkpoint", "a", "--prompt", "Once", "--prompt", "The", "--top-k", "4"])
    assert config_from_args(args, GenerateRunOptions) == GenerateRunOptions(
        checkpoint="a", prompt=("Once", "The"), decoding={"top_k": 4}
    )
    args = parser.parse_args(["eval", "--checkpoint", "a", "--task-file", "piqa=p.jsonl", "--no-perplexity"])
    options = config_from_args(args, EvalRunOptions)
    assert options == EvalRunOptions(checkpoint="a", task_file=("piqa=p.jsonl",), evaluation={"perplexity": False})
    assert options.task_files() == {"piqa": Path("p.jsonl")}
    args = parser.parse_args(["train", "--preset", "tiny-mot", "--steps", "3", "--dry-run", "--name", "x"])
    assert config_from_args(args, TrainRunOptions) == TrainRunOptions(preset="tiny-mot", name="x", dry_run=True)
    args = parser.parse_args(["train", "--resume", "runs/x", "--force"])
    assert config_from_args(args, TrainRunOptions) == TrainRunOptions(resume="runs/x", force=True)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DemoConfig(parallel=0), "parallel must be a positive integer, got 0."),
        (lambda: AuditConfig(checkpoint="runs/x", preset="tiny-mot"), "or preset, not both."),
        (lambda: CompareConfig(suite="smoke", device="tpu"), "device 'tpu' is not supported"),
        (lambda: ConvertConfig(checkpoint="a", target="switch", out="b"), "target='switch' is not a conversion"),
        (lambda: TransitionExperimentConfig(mot_steps=0), "mot_steps must be a positive integer"),
        (lambda: DataPrepareConfig(source="c5"), "source: Unknown data source 'c5'"),
        (lambda: ScalingPlanConfig(flops="1e20", granularities="0"), "granularities '0' must be comma-separated"),
        (lambda: ScalingPredictConfig(params=0, tokens=1e9), "params must be a positive number, got 0."),
        (lambda: ScalingFitConfig(runs="r.csv", holdout=1.0), "bootstrap must be >= 0 and holdout in [0, 1)."),
        (lambda: ScalingFitConfig(runs="r.csv", kind="moe"), "kind='moe' is not a law; allowed values:"),
        (lambda: GenerateRunOptions(checkpoint="a"), "no prompt given; pass prompt TEXT (repeatable) or prompts_file"),
        (lambda: EvalRunOptions(checkpoint="a", task_file=("piqa",)), "task_file 'piqa' must look like TASK=PATH"),
    ],
)
def test_from_python_the_dataclass_checks_itself_in_python_spelling(make, message) -> None:
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value) and "--" not in str(error.value)
