"""One JSONL metrics file per run: one JSON object per line, written through to the file at once. Every line is
valid JSON: a NaN or infinite value is written as null (JSON has no NaN), and a line that does not fit (a full
disk) is cut off again, so the file never ends in half a line."""

from __future__ import annotations

import contextlib
import json
import math
import os
from pathlib import Path
from typing import Any


class MetricsWriter:
    """Appends records to `path` (emptied first unless `append`); a failed write raises the OSError behind it."""

    def __init__(self, path: Path, *, append: bool = False) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC)
        self._fd = os.open(path, flags, 0o666)
        self._size = os.fstat(self._fd).st_size

    def write(self, record: dict[str, Any]) -> None:
        line = memoryview((json.dumps(jsonable(record), allow_nan=False) + "\n").encode("utf-8"))
        try:
            while line:
                line = line[os.write(self._fd, line) :]
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)  # no half line: a resumed run appends after whole records
            raise
        self._size = os.fstat(self._fd).st_size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def jsonable(value: Any) -> Any:
    """`value` with tensors and numpy scalars as numbers and NaN or infinity as None, at any depth."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if getattr(value, "ndim", 0) > 0:  # a tensor or array of several values
        return jsonable(value.tolist())
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a metrics file (blank or truncated last lines are ignored)."""
    records = []
    if not Path(path).exists():
        return records
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records
