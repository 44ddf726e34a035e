"""One entry point for every text source, chosen by a string such as "packaged" or "text:PATH".

In-memory sources ("packaged", "packaged+brown", "brown", "text:PATH") are read whole by `load_splits`;
streaming sources ("c4", "c4:PATH", "hf:NAME[:CONFIG]", see streaming.py) are read by `prepare_data`
up to a token budget. `text:` sources hold out every 10th document (sorted by name) for evaluation;
malformed input is skipped and counted, never fatal, the same way for every source (see documents.py): a file
that is unreadable, truncated, binary or not UTF-8 is dropped whole, a bad JSON line alone.
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path
from typing import Literal

from .brown import BROWN, BROWN_FORMAT, brown_splits
from .documents import Document, SkipCounts, SplitDocuments, parse_json_line, read_text_file, record_text
from .packaged import packaged_fingerprint, packaged_splits
from .streaming import parse_stream_source, stream_fingerprint

__all__ = ["is_streaming", "load_documents", "load_splits", "source_fingerprint", "source_slug", "SOURCE_FORMS"]

SOURCE_FORMS = (
    "'packaged', 'packaged+brown', 'brown', 'text:PATH' (a file, glob or directory of .txt, .jsonl or .gz of "
    "either), 'c4', 'c4:PATH' (local C4 .json/.jsonl files) or 'hf:NAME[:CONFIG]'"
)
_PACKAGED_KINDS = ("packaged", "packaged+brown", "brown")
TEXT_FORMAT = 2  # bump when reading or splitting of text: sources changes (2: binary and non-UTF-8 files dropped)
EVAL_EVERY = 10
_SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz", ".gz")


def _parse(source: str) -> tuple[str, str]:
    if source in _PACKAGED_KINDS:
        return source, ""
    if source.startswith("text:") and source[len("text:") :].strip():
        return "text", source[len("text:") :].strip()
    if source == "c4" or source.startswith(("c4:", "hf:")):
        return "stream", source
    raise ValueError(f"Unknown data source {source!r}: use {SOURCE_FORMS}.")


def is_streaming(source: str) -> bool:
    """True for sources read through HF datasets up to a budget (c4, c4:PATH, hf:NAME)."""
    return _parse(source)[0] == "stream"


def _brown_fingerprint() -> str:
    return f"{BROWN.name}@{BROWN.version}:{BROWN.sha256}|brown-format={BROWN_FORMAT}"


def _supported(path: Path) -> bool:
    return path.name.lower().endswith(_SUFFIXES)


def _text_files(spec: str, skipped: SkipCounts | None = None) -> list[Path]:
    """Files named by a text: PATH, sorted; unsupported files inside a glob/directory are counted."""
    path = Path(spec).expanduser()
    if path.is_file():
        if not _supported(path):
            raise ValueError(f"text:{spec} must end in .txt, .jsonl or .gz (of either), got {path.name!r}.")
        return [path]
    if path.is_dir():
        candidates = [p for p in path.rglob("*") if p.is_file()]
    else:
        candidates = [Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file()]
    files = sorted(p for p in candidates if _supported(p))
    if skipped is not None:
        skipped.unsupported_files += len(candidates) - len(files)
    if not files:
        raise ValueError(f"text:{spec} matched no .txt, .jsonl or .gz files; give a file, glob or directory.")
    return files


def source_fingerprint(source: str) -> str:
    """Cheap identity of a source's content (file paths, sizes, mtimes) for cache invalidation."""
    kind, spec = _parse(source)
    if kind == "packaged":
        return packaged_fingerprint()
    if kind in ("brown", "packaged+brown"):
        parts = [packaged_fingerprint()] if kind == "packaged+brown" else []
        return hashlib.sha256("|".join([*parts, _brown_fingerprint()]).encode()).hexdigest()
    if kind == "stream":
        return stream_fingerprint(parse_stream_source(source))  # type: ignore[arg-type]
    digest = hashlib.sha256(f"text-format={TEXT_FORMAT}".encode())
    for path in _text_files(spec):
        stat = path.stat()
        digest.update(f"|{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def source_slug(source: str) -> str:
    """Directory name for a source's cache: 'packaged', 'c4' or '<kind>-<name>-<hash of the spec>'."""
    kind, spec = _parse(source)
    if kind in _PACKAGED_KINDS:
        return kind.replace("+", "-")
    if source == "c4":
        return "c4"
    if kind == "stream":
        prefix, _, rest = source.partition(":")
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(rest).name)[:40] or prefix
        return f"{prefix}-{stem}-{hashlib.sha256(source.encode()).hexdigest()[:10]}"
    resolved = str(Path(spec).expanduser().resolve()) if "*" not in spec else str(Path(spec).expanduser())
    stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(spec).name)[:40] or "text"
    return f"text-{stem}-{hashlib.sha256(resolved.encode()).hexdigest()[:10]}"


def _jsonl_documents(path: Path, text: str, skipped: SkipCounts) -> list[Document]:
    documents = []
    for number, line in enumerate(text.splitlines(), start=1):
        record = parse_json_line(line, skipped)
        value = None if record is None else record_text(record, skipped)
        if value is not None:
            documents.append(Document(f"{path}:{number:09d}", value))
    return documents


def _read_text_documents(spec: str, skipped: SkipCounts) -> list[Document]:
    documents: list[Document] = []
    for path in _text_files(spec, skipped):
        text = read_text_file(path, skipped)  # None: unreadable, binary or not UTF-8 (dropped, counted)
        if text is None:
            continue
        if not text.strip():
            skipped.empty_files += 1
        elif path.name.lower().removesuffix(".gz").endswith(".jsonl"):
            documents.extend(_jsonl_documents(path, text, skipped))
        else:
            documents.append(Document(str(path), text))
    return sorted(documents, key=lambda d: d.name)


def _every_tenth(count: int) -> list[bool]:
    """Held-out mask: every 10th item, and at least one item in each split when count >= 2."""
    mask = [index % EVAL_EVERY == EVAL_EVERY - 1 for index in range(count)]
    if count >= 2 and not any(mask):
        mask[-1] = True
    return mask


def _split_one_document(document: Document, spec: str) -> tuple[list[Document], list[Document]]:
    """A single document is cut into paragraphs (else lines) so that both splits are non-empty."""
    pieces = [p for p in document.text.split("\n\n") if p.strip()]
    joiner = "\n\n"
    if len(pieces) < 2:
        pieces, joiner = [p for p in document.text.splitlines() if p.strip()], "\n"
    if len(pieces) < 2:
        raise ValueError(
            f"text:{spec} holds one document with one line; it needs at least two documents, paragraphs "
            "or lines to make both a train and an eval split."
        )
    mask = _every_tenth(len(pieces))
    train = joiner.join(p for p, held in zip(pieces, mask, strict=True) if not held)
    held = joiner.join(p for p, held in zip(pieces, mask, strict=True) if held)
    return [Document(f"{document.name}#train", train)], [Document(f"{document.name}#eval", held)]


def load_splits(source: str, cache_dir: Path | None = None) -> SplitDocuments:
    """Both splits of a source with its skip counts (read once; `load_documents` picks one)."""
    kind, spec = _parse(source)
    if kind == "packaged":
        return packaged_splits(cache_dir)
    if kind in ("brown", "packaged+brown"):
        brown = brown_splits(cache_dir)
        if kind == "brown":
            return brown
        splits = packaged_splits(cache_dir)
        splits.skipped.add(brown.skipped)
        return SplitDocuments(splits.train + brown.train, splits.eval + brown.eval, splits.skipped)
    if kind == "stream":
        raise ValueError(f"{source} is a streaming source: read it through prepare_data (mot data prepare).")
    skipped = SkipCounts()
    documents = _read_text_documents(spec, skipped)
    if not documents:
        raise ValueError(f"text:{spec} contains no usable text (skipped: {skipped.summary()}).")
    if len(documents) == 1:
        train, held = _split_one_document(documents[0], spec)
    else:
        mask = _every_tenth(len(documents))
        train = [d for d, is_held in zip(documents, mask, strict=True) if not is_held]
        held = [d for d, is_held in zip(documents, mask, strict=True) if is_held]
    return SplitDocuments(train=train, eval=held, skipped=skipped)


def load_documents(source: str, split: Literal["train", "eval"], cache_dir: Path | None = None) -> list[Document]:
    """Documents of one split of an in-memory source; see `load_splits` for skip counts."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}.")
    splits = load_splits(source, cache_dir)
    return splits.train if split == "train" else splits.eval
