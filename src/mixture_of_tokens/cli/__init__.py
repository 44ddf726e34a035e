"""The `mot` command line. Each subcommand lives in its own module with a `register(subparsers)` function.

Every error is one line on stderr, `mot COMMAND: error: ...`, without a traceback: bad input (flags, settings,
paths) exits with status 2, a run stopped on purpose (non-finite values) and a failed write (a full disk, in a run
or in the data cache) with 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import audit, compare, convert, data, demo, experiment, presets, scaling, train
from . import eval as eval_command
from . import export as export_command
from . import generate as generate_command

COMMAND_MODULES = (
    train,
    demo,
    compare,
    presets,
    scaling,
    eval_command,
    generate_command,
    data,
    audit,
    convert,
    export_command,
    experiment,
)


class UserError(Exception):
    """A problem with the user's input, reported as one sentence without a traceback."""


class _UsageError(UserError):
    """A flag or flag value the parser rejects."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage synopsis is replaced by a pointer to --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mot", description="Mixture of Tokens: train, compare and inspect models.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
    return parser


def with_config_file(parser: argparse.ArgumentParser, argv: list[str], args: argparse.Namespace) -> argparse.Namespace:
    """The command line read again over the settings of its `--config FILE` (`config_file.py`)."""
    from .config_file import set_config_file_defaults

    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    set_config_file_defaults(subparsers.choices[args.command], args)
    try:
        return parser.parse_args(argv)
    except _UsageError as error:  # the command line alone parsed: the file's value is the bad one
        raise _UsageError(f"--config {args.config}: {error}") from None


def main(argv: Sequence[str] | None = None) -> int:
    from ..files import WriteFailed
    from ..spelling import command_line
    from ..training.errors import TrainingStopped

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except _UsageError as error:
        print(f"mot: error: {error}", file=sys.stderr)
        return 2
    if getattr(args, "config", None):
        try:
            args = with_config_file(parser, list(sys.argv[1:] if argv is None else argv), args)
        except (_UsageError, ValueError) as error:
            print(f"mot {args.command}: error: {error}", file=sys.stderr)
            return 2
    try:
        with command_line():  # messages name flags (--force), not the Python arguments (force=True)
            args.handler(args)
    except (TrainingStopped, WriteFailed) as error:
        print(f"mot {args.command}: error: {error}", file=sys.stderr)
        return 1
    except (UserError, ValueError, FileNotFoundError, FileExistsError, NotADirectoryError) as error:
        print(f"mot {args.command}: error: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into a reader that closed early (`mot ... | head`)
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"mot {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
