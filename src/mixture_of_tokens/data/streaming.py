"""Streaming sources (C4, any HF text dataset) read through HF `datasets`, tokenised up to a budget.

The paper trains on C4 English (`allenai/c4`, config `en`); 10B tokens cannot be held in memory, so a
streaming source is read one pass, shuffled with a seeded buffer, and tokenised straight into the token
files until `max_tokens` train tokens (or `max_documents` documents) are written. Training then samples
from those files, so its position is resumable by step like any other source (see batches.py).

Source strings:
  c4              `allenai/c4` config `en` from the hub; eval documents from its validation split.
  c4:PATH         local JSON-lines files in the C4 schema (text, timestamp, url), e.g. downloaded C4 shards
                  (.json, .jsonl, optionally .gz; a file, glob or directory). Files named *validation* are
                  the eval split; without them the eval split is a held-out slice of the train stream.
  hf:NAME[:CONFIG] any HF dataset with a string text column (`text`, or the one `text_column` names; a hub
                  name or a local directory of .jsonl/.parquet/... files); eval from its validation split when
                  it has one, else a held-out slice.
Held-out slice: every 10th document of the shuffled train stream goes to eval until eval is full.
Records whose text is missing, not a string or blank are skipped and counted; local files that are
unreadable, truncated, binary or not UTF-8 are dropped whole and counted, as text:PATH does (documents.py).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .documents import Document, SkipCounts, find_files, is_held_out, parse_json_line, read_text_file, record_text
from .source_kinds import SourceDefaults

__all__ = [
    "C4Files",
    "C4Hub",
    "HFDataset",
    "StreamSource",
    "StreamingSource",
    "import_datasets",
    "open_stream",
    "route_documents",
    "stream_fingerprint",
]

STREAM_FORMAT = 2  # bump when reading, shuffling or routing changes (2: unusable local files dropped)
C4_HUB_NAME, C4_CONFIG = "allenai/c4", "en"
_JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")


def import_datasets() -> Any:
    """HF `datasets`, imported only when a streaming source is used (it is heavy and optional)."""
    from ..extras import require

    return require("datasets", "c4", purpose="reading the c4 and hf: sources")


@dataclass(frozen=True)
class StreamSource:
    """How to open one streaming source with `datasets.load_dataset`."""

    source: str
    path: str  # the dataset name, a local directory, or "json" for local C4 files
    config: str | None = None
    train_files: tuple[str, ...] = ()
    eval_files: tuple[str, ...] = ()

    @property
    def local_files(self) -> tuple[str, ...]:
        return self.train_files + self.eval_files


def _c4_files(spec: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    files = sorted(str(p.resolve()) for p in find_files(spec, _JSON_SUFFIXES)[0])
    if not files:
        raise ValueError(f"c4:{spec} matched no .json/.jsonl files (optionally .gz); give a file, glob or directory.")
    is_eval = ["validation" in Path(f).name.lower() for f in files]
    train = tuple(f for f, held in zip(files, is_eval, strict=True) if not held)
    if not train:
        raise ValueError(f"c4:{spec} matched only validation files; it needs train files too.")
    return train, tuple(f for f, held in zip(files, is_eval, strict=True) if held)


class StreamingSource(SourceDefaults):
    """A source read once through HF datasets up to a budget; identified by what `stream` opens."""

    streaming = True

    def fingerprint(self, argument: str) -> str:
        return stream_fingerprint(self.stream(argument))


class C4Hub(StreamingSource):
    """c4: C4 English from the hub."""

    form = "c4"
    help = f"C4 English from the Hugging Face hub ({C4_HUB_NAME}, config {C4_CONFIG}; needs the network)"

    def stream(self, argument: str) -> StreamSource:
        return StreamSource("c4", C4_HUB_NAME, C4_CONFIG)


class C4Files(StreamingSource):
    """c4:PATH: local JSON-lines files in the C4 schema."""

    form = "c4:PATH"
    help = "local C4 .json/.jsonl files (optionally .gz; a file, glob or directory); *validation* files are eval"

    def stream(self, argument: str) -> StreamSource:
        spec = argument.strip()
        if not spec:
            raise ValueError("c4:PATH needs a PATH of C4-style .json/.jsonl files; use 'c4' for the hub.")
        train, held = _c4_files(spec)
        return StreamSource(f"c4:{argument}", "json", None, train, held)


class HFDataset(StreamingSource):
    """hf:NAME[:CONFIG]: any HF dataset with a text column."""

    form = "hf:NAME[:CONFIG]"
    help = "an HF dataset (hub name or local directory) with a string text column (see --text-column)"
    text_column = True

    def stream(self, argument: str) -> StreamSource:
        name, _, config = argument.partition(":")
        if not name.strip():
            raise ValueError(f"{'hf:' + argument!r} names no dataset: use hf:NAME or hf:NAME:CONFIG.")
        return StreamSource(f"hf:{argument}", name.strip(), config.strip() or None)


def stream_fingerprint(stream: StreamSource) -> str:
    """Identity of the data read: the name and config, plus paths, sizes and mtimes of local files."""
    digest = hashlib.sha256(f"stream-format={STREAM_FORMAT}|{stream.path}|{stream.config}".encode())
    local = list(stream.local_files)
    if not local and Path(stream.path).expanduser().is_dir():  # hf: with a local dataset directory
        local = sorted(str(p.resolve()) for p in find_files(stream.path, None)[0])
    for name in local:
        stat = Path(name).stat()
        digest.update(f"|{name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _documents(
    records: Any, split: str, skipped: SkipCounts, *, json_lines: bool = False, column: str = "text"
) -> Iterator[Document]:
    """Documents of a record stream (the text in `column`); with `json_lines` each record is one raw line of a
    local JSON-lines file, parsed here so that a malformed line is skipped and counted instead of failing the
    whole file."""
    for index, record in enumerate(records):
        if json_lines and (record := parse_json_line(record.get("text", ""), skipped)) is None:
            continue
        text = record_text(record, skipped, column)
        if text is not None:
            yield Document(str(record.get("url") or f"{split}:{index:09d}"), text)


HUB_HOST = "huggingface.co"


def hub_unreachable_reason(timeout: float = 5.0) -> str | None:
    """None when the Hugging Face hub answers, else why not (HF_HUB_OFFLINE set, or no connection)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes"):
        return "HF_HUB_OFFLINE is set"
    try:
        socket.create_connection((HUB_HOST, 443), timeout=timeout).close()
    except OSError as error:
        return f"{HUB_HOST} cannot be reached: {error.strerror or error}"
    return None


def check_hub_reachable(source: str) -> None:
    """Fail before any download or compute when a hub source cannot be streamed, naming the offline choices."""
    reason = hub_unreachable_reason()
    if reason is not None:
        raise ValueError(
            f"data={source!r} streams from the Hugging Face hub, but {reason}; offline choices: "
            "--data packaged+brown --tokenizer gpt2 (the packaged English corpus with the paper's tokenizer), or "
            "--data c4:PATH with local C4 .json/.jsonl(.gz) files."
        )


def usable_local_files(stream: StreamSource, skipped: SkipCounts) -> dict[str, list[str]]:
    """{"train": files, "validation": files} of a c4:PATH source without the files that are unreadable,
    truncated, binary or not UTF-8 (each read through once and counted, as text:PATH does); none usable for
    train is one clear error."""
    usable = {
        split: [name for name in files if read_text_file(Path(name), skipped, keep=False) is not None]
        for split, files in (("train", stream.train_files), ("validation", stream.eval_files))
    }
    if not usable["train"]:
        raise ValueError(f"{stream.source} has no readable UTF-8 train files (skipped: {skipped.summary()}).")
    return {split: files for split, files in usable.items() if files}


def check_text_column(stream: StreamSource, split: Any, column: str) -> None:
    """A dataset split without the text column is one sentence naming the column and the columns found."""
    columns = split.column_names
    if columns is None:  # a stream whose features are unknown until read: its first record says
        first = next(iter(split), None)
        columns = list(first) if isinstance(first, dict) else None
    if columns is not None and column not in columns:
        found = ", ".join(map(str, columns)) or "none"
        raise ValueError(
            f"{stream.source} has no column {column!r} (columns found: {found}); name the one holding the text "
            "with --text-column (text_column)."
        )


def open_stream(
    stream: StreamSource, *, seed: int, shuffle_buffer: int, skipped: SkipCounts, text_column: str = "text"
) -> tuple[Iterator[Document], Iterator[Document] | None]:
    """(shuffled train documents, eval documents or None when the eval split is a held-out slice). `text_column`:
    the column an hf: dataset holds its text in (local C4 files always use "text")."""
    if stream.path != "json" and not Path(stream.path).exists():  # a hub name, not a local dataset directory
        check_hub_reachable(stream.source)
    datasets = import_datasets()
    try:
        if stream.path == "json":
            data_files = usable_local_files(stream, skipped)
            # read as lines and parsed in `_documents`: one malformed line must not fail the whole file
            splits = datasets.load_dataset("text", data_files=data_files, streaming=True)
        else:
            splits = datasets.load_dataset(stream.path, stream.config, streaming=True)
    except (ConnectionError, OSError) as error:  # hub unreachable, dataset or config not found
        raise RuntimeError(
            f"HF datasets could not open {stream.source} ({error}); hub datasets need access to huggingface.co, "
            "local C4 files can be read with c4:PATH."
        ) from error
    if "train" not in splits:
        raise ValueError(f"{stream.source} has no 'train' split (it has: {', '.join(splits)}).")
    json_lines = stream.path == "json"
    column = "text" if json_lines else text_column
    if not json_lines:
        check_text_column(stream, splits["train"], column)
    train = splits["train"].shuffle(seed=seed, buffer_size=shuffle_buffer)
    held = splits["validation"] if "validation" in splits else None
    return (
        _documents(train, "train", skipped, json_lines=json_lines, column=column),
        None if held is None else _documents(held, "validation", skipped, json_lines=json_lines, column=column),
    )


def route_documents(
    train: Iterator[Document], held: Iterator[Document] | None, full: Callable[[str], bool]
) -> Iterator[tuple[str, Document]]:
    """("train" | "eval", document) pairs until both splits are full (`full(split)`) or the stream ends.

    With no eval stream, every 10th train document is held out until the eval split is full, so no
    document is in both splits.
    """
    if held is not None:
        for document in held:
            if full("eval"):
                break
            yield "eval", document
        for document in train:
            if full("train"):
                break
            yield "train", document
        return
    for index, document in enumerate(train):
        if full("train") and full("eval"):
            break
        if is_held_out(index) and not full("eval"):
            yield "eval", document
        elif not full("train"):
            yield "train", document
