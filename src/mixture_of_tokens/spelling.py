"""How a message names a setting: as the caller spells it.

A refusal raised under `train()` from Python names the argument or config field (`force=True`,
`resume_from='runs/a'`, `steps=8`); the same refusal raised under the `mot` command line names the flag
(`--force`, `--resume runs/a`, `--steps 8`). The command line turns flag spelling on around the command it runs
(`command_line()`); everything else gets the Python spelling.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

FLAG_NAMES = {"resume_from": "--resume", "run_name": "--name", "target": "--to"}
"""Python arguments whose `mot` flag is not the argument's name with dashes (`train(resume_from=...)`,
`convert_checkpoint(..., target)`)."""

_UNSET = object()
_flags: ContextVar[bool] = ContextVar("mixture_of_tokens_flag_spelling", default=False)


def uses_flags() -> bool:
    """True while a `mot` command runs: messages name flags, not Python arguments."""
    return _flags.get()


@contextlib.contextmanager
def command_line() -> Iterator[None]:
    """Name flags in every message raised inside this block (the `mot` command line's way)."""
    token = _flags.set(True)
    try:
        yield
    finally:
        _flags.reset(token)


def flag(name: str) -> str:
    """The `mot` flag of a Python argument or config field: `resume_from` -> `--resume`, `out_dir` -> `--out-dir`."""
    return FLAG_NAMES.get(name, "--" + name.replace("_", "-"))


def setting(name: str, value: object = _UNSET, *, command: str | None = None) -> str:
    """`name` (and `value`) as the caller writes it. Python: `name`, `name=value` (text quoted). Command line:
    `--flag`, `--flag value` (a True switch is the flag alone); with `command` the whole command, in backquotes:
    `mot train --resume runs/a`."""
    if not uses_flags():
        if value is _UNSET:
            return name
        shown = repr(str(value)) if isinstance(value, (str, Path)) else str(value)
        return f"{name}={shown}"
    spelled = flag(name) if value is _UNSET or value is True else f"{flag(name)} {value}"
    return f"`mot {command} {spelled}`" if command else spelled
