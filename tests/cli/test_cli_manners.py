"""CLI manners: every --help ends with real examples, `mot train` says where its files are and what to run next,
`mot scaling plan` prints a `mot train` command that builds the planned model, and progress outside a terminal is
plain lines (training, scoring, and data preparation with stderr redirected to a file)."""

from __future__ import annotations

import argparse
import dataclasses
import io
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from cli_runs import run_mot, train_argv
from corpus import write_corpus
from helpers import FIXTURES

from mixture_of_tokens.cli import build_parser
from mixture_of_tokens.cli.config_args import configs_from_args
from mixture_of_tokens.cli.scaling import planned_model, train_command
from mixture_of_tokens.config import ModelConfig
from mixture_of_tokens.progress import PlainProgress, progress_bar
from mixture_of_tokens.scaling import plan


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "mot"):
    """(command path, parser) of every subcommand, nested ones included."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _subcommands(sub, f"{prefix} {name}")


def test_every_subcommand_help_ends_with_examples() -> None:
    commands = dict(_subcommands(build_parser()))
    assert {"mot train", "mot scaling plan", "mot data info", "mot experiment transition", "mot export"} <= set(
        commands
    )
    for command, parser in commands.items():
        help_text = parser.format_help()
        assert "\nexamples:\n" in help_text, command
        examples = help_text.split("\nexamples:\n", 1)[1].split("\n\n", 1)[0].splitlines()
        assert len([line for line in examples if line.strip().startswith("mot ")]) >= 2, command
        assert all(line.startswith("  mot ") for line in examples), command


def test_train_ends_with_where_its_files_are_and_what_to_run_next(
    tmp_path: Path, cache_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    corpus = write_corpus(tmp_path / "corpus", n_documents=12, sentences=20)
    out = tmp_path / "run"
    argv = train_argv(f"text:{corpus}", "--steps", "2", "--eval-every", "2", "--out-dir", str(out), "--name", "m")
    status, stdout, _ = run_mot(argv, capsys)
    assert status == 0
    for name in ("summary.json", "metrics.jsonl", "model.safetensors"):
        assert f"{out / name}" in stdout
        assert (out / name).is_file()
    assert f"mot eval --checkpoint {out}" in stdout
    assert f"mot generate --checkpoint {out} --prompt" in stdout


@pytest.mark.parametrize(
    ("flops", "preset", "expansion"),
    [(1e20, "mot-medium-32e", 64.0), (1e18, "tiny-mot", 64.0), (1e18, "tiny-dense", 8.0)],
)
def test_scaling_plan_prints_a_train_command_that_builds_the_planned_model(
    flops: float, preset: str, expansion: float
) -> None:
    planned = plan(flops, expansion=expansion)
    command, _ = train_command(planned, preset)
    words = shlex.split(command)
    assert words[:2] == ["mot", "train"]
    args = build_parser().parse_args(words[1:])
    model, train = configs_from_args(args)
    expected = planned_model(planned, preset)
    assert dataclasses.asdict(model) == dataclasses.asdict(expected)
    for name in ("d_model", "n_blocks", "d_ff", "group_size", "n_experts", "expert_size"):
        assert getattr(model, name) == getattr(planned.mot, name)
    assert model.ffn == "mot" and model.ffn_blocks == "all"
    assert train.batch_size % model.group_size == 0
    assert train.steps * train.batch_size * model.max_seq_len >= planned.best.tokens
    assert (train.steps - 1) * train.batch_size * model.max_seq_len < planned.best.tokens
    ModelConfig(**dataclasses.asdict(model))  # validates


def test_scaling_plan_output_holds_the_command(capsys: pytest.CaptureFixture) -> None:
    status, stdout, _ = run_mot(["scaling", "plan", "--flops", "1e19", "--preset", "tiny-mot"], capsys)
    assert status == 0
    line = next(line for line in stdout.splitlines() if line.startswith("train it: "))
    assert line.removeprefix("train it: ").startswith("mot train --preset tiny-mot --d-model ")


def test_progress_outside_a_terminal_is_plain_lines() -> None:
    stream = io.StringIO()  # not a terminal
    bar = progress_bar(200, "run", stream=stream, lines=20)
    assert isinstance(bar, PlainProgress)
    for step in range(200):
        bar.update()
        if step == 100:
            bar.set_postfix({"loss": "1.234"}, refresh=False)
            bar.write("an event")
    bar.close()
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    progress = [line for line in lines if line.startswith("run: ")]
    assert len(progress) == 20
    assert progress[0].startswith("run: 10/200 (5%)") and progress[-1].startswith("run: 200/200 (100%)")
    assert "an event" in lines and "loss=1.234" in progress[-1]


def test_progress_counts_from_a_resumed_step_and_prints_the_last_count_at_close() -> None:
    stream = io.StringIO()
    bar = progress_bar(100, "run", initial=60, stream=stream, lines=4)
    for _ in range(25):
        bar.update()
    bar.close()
    assert [line.split(" (")[0] for line in stream.getvalue().splitlines()] == [
        "run: 70/100",
        "run: 80/100",
        "run: 85/100",
    ]


def test_progress_on_a_terminal_is_tqdm() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    bar = progress_bar(10, "run", stream=Terminal())
    assert not isinstance(bar, PlainProgress)
    bar.close()


def test_data_preparation_into_a_log_file_is_plain_progress_lines(tmp_path: Path) -> None:
    """`mot data prepare 2> FILE` (a file, as a batch job's log is) for a text: corpus (BPE training, tokenising)
    and a local C4 stream: one plain line per update, no carriage-return redraws."""
    corpus = write_corpus(tmp_path / "corpus", n_documents=30)
    c4_sample = FIXTURES / "c4_sample.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MOT_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("TQDM_POSITION", None)
    for source, progress_prefix in (
        (f"text:{corpus}", "tokenising train.bin: "),
        (f"c4:{c4_sample}", f"tokenising c4:{c4_sample}: "),
    ):
        log = tmp_path / "prepare.log"
        with log.open("w") as stderr:
            command = [sys.executable, "-m", "mixture_of_tokens.cli", "data", "prepare", "--source", source]
            result = subprocess.run(
                [*command, "--vocab-size", "300"], stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
                timeout=300,
            )  # fmt: skip
        text = log.read_text()
        assert result.returncode == 0, text
        assert "\r" not in text, text
        progress = [line for line in text.splitlines() if line.startswith(progress_prefix)]
        assert progress and all(" (" in line and "%)" in line for line in progress), text
        assert f"data {source}: train " in result.stdout
