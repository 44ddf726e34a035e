"""The `text:PATH` source: your own .txt, .jsonl or .gz (of either) files: one file, a glob or a directory.

Every .txt file is one document and every line of a .jsonl file with a string "text" is one; documents are sorted
by name and every 10th is held out for evaluation (documents.hold_out_every_tenth). A single document is cut into
paragraphs (else lines) so that both splits are non-empty. Malformed input is skipped and counted (documents.py).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .documents import (
    Document,
    SkipCounts,
    SplitDocuments,
    find_files,
    hold_out_every_tenth,
    parse_json_line,
    read_text_file,
    record_text,
)
from .source_kinds import SourceDefaults, hashed_slug

__all__ = ["TEXT_FORMAT", "TextFiles"]

TEXT_FORMAT = 2  # bump when reading or splitting of text: sources changes (2: binary and non-UTF-8 files dropped)
_SUFFIXES = (".txt", ".jsonl", ".txt.gz", ".jsonl.gz", ".gz")


def _text_files(spec: str, skipped: SkipCounts | None = None) -> list[Path]:
    """Files named by a text: PATH, sorted; unsupported files inside a glob/directory are counted."""
    path = Path(spec).expanduser()
    if path.is_file() and not path.name.lower().endswith(_SUFFIXES):
        raise ValueError(f"text:{spec} must end in .txt, .jsonl or .gz (of either), got {path.name!r}.")
    files, unsupported = find_files(spec, _SUFFIXES)
    if skipped is not None:
        skipped.unsupported_files += unsupported
    if not files:
        raise ValueError(f"text:{spec} matched no .txt, .jsonl or .gz files; give a file, glob or directory.")
    return files


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
    train, held = hold_out_every_tenth(pieces)
    return [Document(f"{document.name}#train", joiner.join(train))], [
        Document(f"{document.name}#eval", joiner.join(held))
    ]


class TextFiles(SourceDefaults):
    """text:PATH: .txt, .jsonl or .gz (of either) files; every 10th document by name held out."""

    form = "text:PATH"
    help = 'your .txt, .jsonl (a "text" field a line) or .gz files: a file, glob or directory'

    def _spec(self, argument: str) -> str:
        spec = argument.strip()
        if not spec:
            raise ValueError("text:PATH needs a PATH: a .txt, .jsonl or .gz file, a glob or a directory.")
        return spec

    def fingerprint(self, argument: str) -> str:
        """The paths, sizes and mtimes of the files read (and the reading rules' version)."""
        digest = hashlib.sha256(f"text-format={TEXT_FORMAT}".encode())
        for path in _text_files(self._spec(argument)):
            stat = path.stat()
            digest.update(f"|{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()

    def slug(self, argument: str) -> str:
        spec = self._spec(argument)
        resolved = str(Path(spec).expanduser().resolve()) if "*" not in spec else str(Path(spec).expanduser())
        return hashed_slug("text", spec, resolved)

    def splits(self, argument: str, cache_dir: Path | None) -> SplitDocuments:
        spec = self._spec(argument)
        skipped = SkipCounts()
        documents = _read_text_documents(spec, skipped)
        if not documents:
            raise ValueError(f"text:{spec} contains no usable text (skipped: {skipped.summary()}).")
        if len(documents) == 1:
            train, held = _split_one_document(documents[0], spec)
        else:
            train, held = hold_out_every_tenth(documents)
        return SplitDocuments(train=train, eval=held, skipped=skipped)
