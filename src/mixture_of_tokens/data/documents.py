"""Plain containers and readers shared by every text source, kept apart so sources never import each other.

Malformed input is handled the same way by every source that reads files (text:PATH and c4:PATH): a file that
cannot be read to its end (a corrupt or truncated .gz), holds NUL bytes (binary) or is not UTF-8 is dropped
whole and counted; inside a JSON-lines file, a line that is not JSON, has no string "text" or only blank text is
dropped and counted. Nothing dropped is ever tokenised, so the counts in the data summary are what was left out.
"""

from __future__ import annotations

import codecs
import glob
import gzip
import json
import os
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TypeVar

from ..progress import progress_bar

EVAL_EVERY = 10
"""The held-out rule of every source that has no split of its own: the 10th, 20th, ... item goes to eval."""

Item = TypeVar("Item")


@dataclass
class Document:
    """One whole document; the unit that is held out for evaluation and followed by eos."""

    name: str
    text: str


@dataclass
class SkipCounts:
    """What a loader skipped or repaired instead of crashing, so the caller can report it."""

    invalid_utf8_files: int = 0  # not UTF-8: dropped whole, never partly kept
    binary_files: int = 0  # holds NUL bytes (an image, an archive, UTF-16 text): dropped whole
    empty_files: int = 0
    unreadable_files: int = 0  # e.g. a corrupt or truncated .gz: dropped whole
    unsupported_files: int = 0  # matched by a glob/directory but not .txt/.jsonl/.gz
    invalid_json_lines: int = 0
    missing_text_lines: int = 0  # valid JSON without a string "text" field
    empty_documents: int = 0  # a JSONL record whose text is blank
    untagged_words: int = 0  # Brown tokens without a /tag (kept as they are)

    def to_dict(self) -> dict[str, int]:
        """Plain dict for manifests."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, int]) -> SkipCounts:
        """Inverse of to_dict; unknown keys are ignored so old manifests still load."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in values.items() if k in names})

    def add(self, other: SkipCounts) -> None:
        """Add another loader's counts (sources combined with '+')."""
        for name, value in other.to_dict().items():
            setattr(self, name, getattr(self, name) + value)

    def total(self) -> int:
        """Number of problems seen (files and lines)."""
        return sum(self.to_dict().values())

    def summary(self) -> str:
        """Short human text such as 'empty_files=1, invalid_json_lines=2' or 'none'."""
        parts = [f"{k}={v}" for k, v in self.to_dict().items() if v]
        return ", ".join(parts) if parts else "none"


@dataclass
class SplitDocuments:
    """Both splits of one source plus what was skipped while reading it."""

    train: list[Document]
    eval: list[Document]
    skipped: SkipCounts


def default_cache_dir() -> Path:
    """`$MOT_CACHE_DIR`, else ~/.cache/mixture-of-tokens: one home for downloads, tokenizers, token files."""
    env = os.environ.get("MOT_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "mixture-of-tokens"


def read_text_file(path: Path, skipped: SkipCounts, *, keep: bool = True) -> str | None:
    """The UTF-8 text of a file (gunzipped when its name ends in .gz), read in blocks; None (counted) when it is
    unreadable or truncated, binary or not UTF-8. With `keep=False` the file is only checked (returns "")."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    parts: list[str] = []
    try:
        opened = gzip.open(path, "rb") if Path(path).name.lower().endswith(".gz") else Path(path).open("rb")
        with opened as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                if b"\x00" in block:
                    skipped.binary_files += 1
                    return None
                text = decoder.decode(block)
                if keep:
                    parts.append(text)
            parts.append(decoder.decode(b"", final=True))
    except (OSError, EOFError, zlib.error):
        skipped.unreadable_files += 1
        return None
    except UnicodeDecodeError:
        skipped.invalid_utf8_files += 1
        return None
    return "".join(parts) if keep else ""


def parse_json_line(line: str, skipped: SkipCounts) -> Any | None:
    """The JSON value of one line of a JSON-lines file; None for a blank line or (counted) malformed JSON."""
    if not line.strip():
        return None
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        skipped.invalid_json_lines += 1
        return None


def record_text(record: Any, skipped: SkipCounts, column: str = "text") -> str | None:
    """A record's text (its `column`, "text" by default); None (counted) when it is missing, not a string, or
    blank."""
    text = record.get(column) if isinstance(record, dict) else None
    if not isinstance(text, str):
        skipped.missing_text_lines += 1
        return None
    if not text.strip():
        skipped.empty_documents += 1
        return None
    return text


def is_held_out(index: int) -> bool:
    """Whether the item at `index` (0-based, in the source's fixed order) is held out: every EVAL_EVERY-th one."""
    return index % EVAL_EVERY == EVAL_EVERY - 1


def hold_out_every_tenth(items: Sequence[Item]) -> tuple[list[Item], list[Item]]:
    """(train, eval) of items in a fixed order by `is_held_out`; with two or more items and none held out by the
    rule (fewer than ten), the last one is, so that both splits are non-empty."""
    held = [is_held_out(index) for index in range(len(items))]
    if len(items) >= 2 and not any(held):
        held[-1] = True
    train = [item for item, is_held in zip(items, held, strict=True) if not is_held]
    return train, [item for item, is_held in zip(items, held, strict=True) if is_held]


def find_files(spec: str, suffixes: tuple[str, ...] | None) -> tuple[list[Path], int]:
    """(files, unsupported): the files a PATH names (a file, a directory searched recursively, or a glob with
    `**`) whose names end in one of `suffixes` (case-insensitive; None: any), sorted, and how many other files it
    matched."""
    path = Path(spec).expanduser()
    if path.is_file():
        candidates = [path]
    elif path.is_dir():
        candidates = [p for p in path.rglob("*") if p.is_file()]
    else:
        candidates = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    files = sorted(p for p in candidates if suffixes is None or p.name.lower().endswith(suffixes))
    return files, len(candidates) - len(files)


def data_progress(total: int, what: str, *, unit: str, enabled: bool, **options: Any) -> Any:
    """The progress of one data step on stderr (`tokenising NAME`, ...): a bar on a terminal, about 25 plain lines
    elsewhere (see ..progress); `options` go to tqdm."""
    return progress_bar(total, what, unit=unit, disable=not enabled, **options)


def counted_texts(texts: Iterable[str], bar: Any, total: int) -> Iterator[str]:
    """`texts`, each counted on `bar` as it is read, up to `total` characters (a stream's last text may pass it)."""
    counted = 0
    for text in texts:
        step = min(len(text), max(total - counted, 0))
        counted += step
        bar.update(step)
        yield text
