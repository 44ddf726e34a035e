"""Helpers for tests that drive `mot` in-process: a tiny `mot train` command line, one call returning the exit
status and both output streams, and a digest of a directory tree to show that nothing in it changed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mixture_of_tokens.cli import build_parser, main, with_config_file

TINY_TRAIN_FLAGS = [
    "--preset", "tiny-mot", "--vocab-size", "300", "--max-seq-len", "32", "--d-model", "32", "--n-blocks", "2",
    "--n-heads", "2", "--d-ff", "128", "--n-experts", "4", "--group-size", "4", "--expert-size", "128",
    "--batch-size", "8", "--eval-batches", "1", "--eval-every", "4", "--log-every", "1", "--warmup-steps", "2",
    "--device", "cpu",
]  # fmt: skip
"""The tiny trainer model of helpers.TINY_MODEL as `mot train` flags, 8 sequences a step on the CPU."""


def train_argv(data: str, *extra: str) -> list[str]:
    """`mot train` of the tiny model on `data` with `extra` flags."""
    return ["train", *TINY_TRAIN_FLAGS, "--data", data, *extra]


def run_mot(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `mot ARGV` run in this process."""
    capsys.readouterr()
    status = main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def error_lines(stderr: str) -> list[str]:
    """The non-blank lines of stderr (progress bars are off in these tests only when nothing is trained)."""
    return [line for line in stderr.splitlines() if line.strip()]


def tree_digest(directory: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `directory`."""
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(Path(directory).rglob("*"))
        if path.is_file()
    }


def parsed(argv: list[str]):
    """`mot ARGV` parsed as the command line does, a `--config FILE` read under the flags."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return with_config_file(parser, argv, args) if args.config else args


def planned_train(argv: list[str]):
    """The run `mot train ARGV[1:]` resolves to (`argv[0]` is "train"), without training."""
    from mixture_of_tokens.cli.train import plan_from_args

    return plan_from_args(parsed(argv))
