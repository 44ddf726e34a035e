"""One progress bar for the package: tqdm on a terminal, and one plain line every N updates otherwise (a log file,
a pipe, a batch job), so logs stay readable instead of filling with carriage-return redraws."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO

PLAIN_LINES = 25
"""About how many lines a plain progress report prints over its whole run (plus a last one at close)."""


def interactive(stream: TextIO) -> bool:
    """Whether a redrawn bar reads well on `stream`: a terminal, or a Jupyter kernel (tqdm.auto's widget)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or "ipykernel" in sys.modules


def progress_bar(
    total: int,
    desc: str = "",
    *,
    initial: int = 0,
    disable: bool = False,
    stream: TextIO | None = None,
    lines: int = PLAIN_LINES,
    **tqdm_kwargs: Any,
):
    """A tqdm bar on a terminal; elsewhere a `PlainProgress` with the same update/set_postfix/write/close methods
    printing `desc: n/total (pct%)` about `lines` times. `tqdm_kwargs` (e.g. leave, dynamic_ncols) go to tqdm."""
    stream = sys.stderr if stream is None else stream
    if disable or interactive(stream):
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, desc=desc, disable=disable, file=stream, **tqdm_kwargs)
    return PlainProgress(total, desc, initial=initial, stream=stream, lines=lines)


class PlainProgress:
    """Progress as plain lines: one each time another 1/`lines` of the steps is done, and one at close if the last
    count was not printed. Lines carry the count, percentage, elapsed seconds and the latest postfix."""

    def __init__(self, total: int, desc: str = "", *, initial: int = 0, stream: TextIO, lines: int = PLAIN_LINES):
        self.total, self.desc, self.n, self.stream = total, desc, initial, stream
        self.every = max(1, math.ceil(max(total - initial, 1) / max(lines, 1)))
        self.postfix = ""
        self._printed, self._next = initial, initial + self.every
        self._start = time.perf_counter()

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.n >= self._next or self.n == self.total:
            self._print()
            self._next = (self.n // self.every + 1) * self.every

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{key}={value}" for key, value in items.items())

    def write(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.n != self._printed:
            self._print()

    def _print(self) -> None:
        self._printed = self.n
        share = f" ({self.n / self.total:.0%})" if self.total else ""
        postfix = f", {self.postfix}" if self.postfix else ""
        elapsed = time.perf_counter() - self._start
        label = f"{self.desc}: " if self.desc else ""
        self.write(f"{label}{self.n}/{self.total}{share} {elapsed:.0f}s{postfix}")
