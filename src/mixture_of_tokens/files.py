"""File helpers shared by checkpoints, token files and tokenizers: atomic writes and sha256 digests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def temporary_path(path: Path) -> Path:
    """A hidden sibling of `path` (same directory, so the final rename is atomic), unique to this process."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path` in one rename, on failure it is removed.

    A crash or a full disk mid-write therefore never leaves half a file under the final name.
    """
    path = Path(path)
    temp = temporary_path(path)
    try:
        yield temp
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_path(path) as temp:
        temp.write_text(text, encoding="utf-8")


def write_json_atomic(path: Path, payload: Any, *, sort_keys: bool = False) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=sort_keys, default=str) + "\n")


def sha256_file(path: Path) -> str:
    """sha256 of a file, read in 1 MiB blocks: pinned downloads, shipped assets and checkpoint manifests."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
