"""File helpers shared by checkpoints, token files and tokenizers: atomic writes, sha256 digests, and a failed
write (a full disk) as one sentence.

A full disk reaches the writers in three shapes: Python's own writes raise OSError(ENOSPC); torch.save into an
open file raises a RuntimeError while handling that OSError; safetensors' Rust writer raises a SafetensorError
whose text ends in `(os error 28)`. `os_errors` turns the last two into the first, so every writer catches OSError
alone, and `write_failed` words it: what could not be written where, why, the free space there, what is kept.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""A full disk and an exhausted quota: the errors a writer turns into one sentence wherever it writes."""

_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


class WriteFailed(OSError):
    """A write that failed (e.g. a full disk) as one sentence for the user (`write_failed`); the partial write was
    removed and nothing saved before it was touched. The command line prints it without a traceback, status 1."""


def os_error_behind(error: BaseException) -> OSError | None:
    """The operating system's error behind a failed write: `error` itself, one it was raised while handling (torch.save
    into an open file), or the `(os error N)` that safetensors' Rust writer names; None when there is none."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    match = _RUST_OS_ERROR.search(str(error))
    if match is None:
        return None
    number = int(match.group(1))
    return OSError(number, os.strerror(number))


def is_disk_full(error: BaseException) -> bool:
    """True when `error` comes from a full disk or an exhausted quota (`DISK_FULL_ERRNOS`)."""
    found = os_error_behind(error)
    return found is not None and found.errno in DISK_FULL_ERRNOS


@contextlib.contextmanager
def os_errors(path: Path) -> Iterator[None]:
    """Raise a library's failed write of `path` (torch.save, safetensors) as the OSError behind it."""
    try:
        yield
    except OSError:
        raise
    except Exception as error:
        found = os_error_behind(error)
        if found is None or found.errno is None:
            raise
        raise OSError(found.errno, found.strerror, str(path)) from None


def existing_ancestor(path: Path) -> Path:
    """`path` itself when it exists, else its nearest existing parent (where a new file would land)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def human_bytes(n_bytes: float) -> str:
    """`1.23 GB` from a gigabyte up, else `4.5 MB` (a tiny run's sizes stay readable)."""
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.1f} MB"


def free_space(path: Path) -> int:
    """Bytes free on the disk that holds `path` (or would hold it)."""
    return shutil.disk_usage(existing_ancestor(path)).free


def write_failed(
    what: str, where: Path, error: BaseException, kept: str, *, error_type: type[WriteFailed] = WriteFailed
) -> WriteFailed:
    """One sentence for a failed write: `writing WHAT into WHERE failed (REASON, N MB free there); KEPT`, where
    `kept` says what is safe on disk and what to do next."""
    found = os_error_behind(error)
    reason = found.strerror if found is not None and found.strerror else str(error)
    free = human_bytes(free_space(where))
    return error_type(f"writing {what} into {where} failed ({reason}, {free} free there); {kept}")


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


def usual_file_mode(path: Path) -> None:
    """Give the file at `path` the mode a newly created file gets: 0o666 less the process's umask (0644 under umask
    022). safetensors creates its files (model.safetensors) through a temporary file of mode 0600, which only its
    owner can read."""
    umask = os.umask(0o022)  # reading the umask sets it: put it straight back
    os.umask(umask)
    Path(path).chmod(0o666 & ~umask)
