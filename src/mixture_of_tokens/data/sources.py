"""The registry of text sources: one line per source below, and every question about a source string asked here.

A source string is a registered name ("packaged") or a registered prefix with an argument ("text:PATH"). Each kind
answers for itself through the `DataSource` protocol (source_kinds.py): its help line, whether it streams, its
fingerprint and cache directory, and how it is read. In-memory sources are read whole by `load_splits`; streaming
sources (`streaming = True`) are read by `prepare_data` up to a token budget. Help texts, the prepare command's
choices and the error for an unknown source are generated from the registry, so adding a source is its module and
one `register_source` line.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal, Protocol

from .brown import Brown
from .documents import Document, SkipCounts, SplitDocuments
from .packaged import Packaged
from .source_kinds import DataSource, SourceDefaults, source_prefix, takes_argument
from .streaming import C4Files, C4Hub, HFDataset, StreamSource
from .text_files import TextFiles

__all__ = [
    "SOURCES",
    "Combined",
    "DataSource",
    "is_streaming",
    "load_documents",
    "load_splits",
    "register_source",
    "resolve_source",
    "source_fingerprint",
    "source_forms",
    "source_slug",
    "stream_source",
]

SOURCES: dict[str, DataSource] = {}
"""Every registered source by its form ("packaged", "text:PATH"), in the order help texts list them."""


class Corpus(DataSource, Protocol):
    """An in-memory source that can be part of a `Combined` one."""

    def content_id(self) -> str:
        """The string a combination hashes for this part."""
        ...


class Combined(SourceDefaults):
    """Several in-memory corpora read as one ("packaged+brown"): each split is the parts' splits in order. Its
    fingerprint hashes the parts' `content_id()`s (that of "packaged+brown" is unchanged since before the
    registry, so prepared caches stay valid)."""

    def __init__(self, *parts: Corpus, help: str) -> None:
        self.parts = parts
        self.form = "+".join(part.form for part in parts)
        self.help = help

    def fingerprint(self, argument: str) -> str:
        return hashlib.sha256("|".join(part.content_id() for part in self.parts).encode()).hexdigest()

    def splits(self, argument: str, cache_dir: Path | None) -> SplitDocuments:
        parts = [part.splits("", cache_dir) for part in self.parts]
        skipped = SkipCounts()
        for part in parts:
            skipped.add(part.skipped)
        return SplitDocuments([d for p in parts for d in p.train], [d for p in parts for d in p.eval], skipped)


def register_source(source: DataSource) -> DataSource:
    """Add a source to the registry (its form must be new) and return it."""
    if source.form in SOURCES:
        raise ValueError(f"A data source {source.form!r} is already registered.")
    SOURCES[source.form] = source
    return source


register_source(Packaged())
register_source(Combined(Packaged(), Brown(), help="the packaged corpus and the Brown corpus together (~28 MB)"))
register_source(Brown())
register_source(TextFiles())
register_source(C4Hub())
register_source(C4Files())
register_source(HFDataset())


def source_forms(separator: str = ", ", quote: bool = True) -> str:
    """Every registered form, e.g. "'packaged', 'packaged+brown', ..., 'hf:NAME[:CONFIG]'" or, with
    separator " | " and quote=False, "packaged | packaged+brown | ... | hf:NAME[:CONFIG]"."""
    return separator.join(repr(form) if quote else form for form in SOURCES)


def resolve_source(source: str) -> tuple[DataSource, str]:
    """(the registered source, its argument) of a source string; an unknown one is one sentence naming the forms."""
    if not isinstance(source, str):
        raise ValueError(f"A data source is a string such as 'packaged', got {source!r}.")
    prefix, colon, argument = source.partition(":")
    for form, kind in SOURCES.items():
        if (form == source and not colon) or (colon and takes_argument(form) and source_prefix(form) == prefix):
            return kind, argument
    raise ValueError(f"Unknown data source {source!r}: use {source_forms()}.")


def is_streaming(source: str) -> bool:
    """True for sources read through HF datasets up to a budget (c4, c4:PATH, hf:NAME); unknown ones fail."""
    return resolve_source(source)[0].streaming


def source_fingerprint(source: str) -> str:
    """Cheap identity of a source's content (pinned hashes, or file paths, sizes and mtimes) for cache invalidation."""
    kind, argument = resolve_source(source)
    return kind.fingerprint(argument)


def source_slug(source: str) -> str:
    """Directory name of a source's cache: 'packaged', 'packaged-brown', 'c4' or '<prefix>-<name>-<hash>'."""
    kind, argument = resolve_source(source)
    return kind.slug(argument)


def stream_source(source: str) -> StreamSource:
    """How HF datasets opens a streaming source."""
    kind, argument = resolve_source(source)
    if not kind.streaming:
        raise ValueError(f"{source} is read into memory, not streamed: read it with load_splits.")
    return kind.stream(argument)


def load_splits(source: str, cache_dir: Path | None = None) -> SplitDocuments:
    """Both splits of an in-memory source with its skip counts (read once; `load_documents` picks one)."""
    kind, argument = resolve_source(source)
    if kind.streaming:
        raise ValueError(f"{source} is a streaming source: read it through prepare_data (mot data prepare).")
    return kind.splits(argument, cache_dir)


def load_documents(source: str, split: Literal["train", "eval"], cache_dir: Path | None = None) -> list[Document]:
    """Documents of one split of an in-memory source; see `load_splits` for skip counts."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}.")
    splits = load_splits(source, cache_dir)
    return splits.train if split == "train" else splits.eval
