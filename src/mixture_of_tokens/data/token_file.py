"""The corpus tokenised once into a flat memory-mapped array, so training never re-tokenises.

Layout: the ids of every document followed by eos, concatenated; uint16 when the vocabulary fits, else
uint32. A JSON manifest beside it (train.bin -> train.json) says what was tokenised with what, so a
stale file is detected and rebuilt instead of silently reused.
"""

from __future__ import annotations

import contextlib
import json
import string
from pathlib import Path
from typing import Any

import numpy as np

from ..files import atomic_path, temporary_path
from .batches import entropy_from_counts
from .documents import Document, data_progress
from .tokenizer import Tokenizer

__all__ = [
    "TOKEN_FILE_FORMAT",
    "TokenFileWriter",
    "encode_documents",
    "build_token_file",
    "load_token_file",
    "token_file_is_current",
    "expected_manifest",
    "manifest_path",
    "read_manifest",
    "token_dtype",
]

TOKEN_FILE_FORMAT = 1
_PIECE_CHARS = 1 << 12  # ~4k-character pieces: both cores stay busy, and HF tokenizers is 2x faster than on 64k
_CHUNK_CHARS = 4 << 20  # characters handed to encode_batch per progress step
_SAFE_BEFORE = frozenset(string.ascii_letters + string.digits + string.punctuation)


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab_size <= 65536), else uint32."""
    if vocab_size <= 0:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}.")
    return np.dtype(np.uint16 if vocab_size <= 65536 else np.uint32)


def manifest_path(path: Path) -> Path:
    """The manifest that describes a token file: same name with .json."""
    return Path(path).with_suffix(".json")


def expected_manifest(tokenizer: Tokenizer, manifest_extra: dict[str, Any]) -> dict[str, Any]:
    """Fields a token file must match to be reused (counts such as n_tokens are added when built)."""
    return {
        "format_version": TOKEN_FILE_FORMAT,
        "tokenizer": tokenizer.name,
        "tokenizer_fingerprint": tokenizer.fingerprint(),
        "vocab_size": tokenizer.vocab_size,
        "eos_id": tokenizer.eos_id,
        "dtype": token_dtype(tokenizer.vocab_size).name,
        **manifest_extra,
    }


def split_for_encoding(text: str, piece_chars: int = _PIECE_CHARS) -> list[str]:
    """Cut text at whitespace that follows a letter, digit or ASCII punctuation mark.

    The byte-level pre-tokenizer always starts a new pre-token there, so encoding the pieces and
    concatenating gives exactly the ids of the whole text; the pieces only spread work over cores.
    """
    pieces = []
    start = 0
    while len(text) - start > piece_chars:
        cut = start + piece_chars
        while cut < len(text) and not (text[cut] in " \n" and text[cut - 1] in _SAFE_BEFORE):
            cut += 1
        if cut >= len(text):
            break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


class TokenFileWriter:
    """Appends encoded documents (each followed by eos) to a temp file; `finish` renames it and writes the manifest.

    Unigram counts are accumulated while writing, so the manifest carries the entropy of the split without
    a second pass over a file that may not fit in memory.
    """

    def __init__(self, path: Path, tokenizer: Tokenizer) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tokenizer = tokenizer
        self.dtype = token_dtype(tokenizer.vocab_size)
        self.n_tokens = 0
        self.n_documents = 0
        self._counts = np.zeros(tokenizer.vocab_size, dtype=np.int64)
        self._temp = temporary_path(self.path)
        self._handle = self._temp.open("wb")

    def write_pieces(self, pieces: list[list[int]], ends_document: list[bool]) -> None:
        """Write the ids of consecutive pieces; eos follows each piece that ends a document."""
        eos = [self.tokenizer.eos_id]
        flat = [i for ids, end in zip(pieces, ends_document, strict=True) for i in (ids + eos if end else ids)]
        array = np.asarray(flat, dtype=np.int64)
        if array.size and (int(array.min()) < 0 or int(array.max()) >= self.tokenizer.vocab_size):
            raise ValueError(
                f"{self.tokenizer.name} produced an id outside its vocab_size {self.tokenizer.vocab_size}."
            )
        self._handle.write(array.astype(self.dtype).tobytes())  # tofile's error on a full disk has no errno
        self._counts += np.bincount(array, minlength=self.tokenizer.vocab_size)
        self.n_tokens += array.size
        self.n_documents += sum(ends_document)

    def finish(self, manifest_extra: dict[str, Any]) -> np.ndarray:
        """Write the manifest under a temp name, rename the token file and then the manifest into place (renames
        need no space: a full disk stops the build before either is replaced), return the read-only memmap."""
        self._handle.close()
        counts = {
            "n_documents": self.n_documents,
            "n_tokens": self.n_tokens,
            "unigram_entropy": entropy_from_counts(self._counts) if self.n_tokens else None,
        }
        manifest = {**expected_manifest(self.tokenizer, manifest_extra), **counts}
        with atomic_path(manifest_path(self.path)) as temp:
            temp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
            self._temp.replace(self.path)
        return load_token_file(self.path)

    def abort(self) -> None:
        """Drop the temp file (after an error or interrupt); an older complete file stays untouched."""
        with contextlib.suppress(OSError):  # closing flushes what a full disk refused: it fails again
            self._handle.close()
        self._temp.unlink(missing_ok=True)


def encode_documents(tokenizer: Tokenizer, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
    """Encode texts as pieces cut by `split_for_encoding` (so all cores work on long documents).

    Returns the pieces' ids and, for each piece, whether it ends its document.
    """
    pieces: list[str] = []
    ends: list[bool] = []
    for text in texts:
        split = split_for_encoding(text)
        pieces.extend(split)
        ends.extend([False] * (len(split) - 1) + [True])
    return tokenizer.encode_batch(pieces), ends


def build_token_file(
    documents: list[Document],
    tokenizer: Tokenizer,
    path: Path,
    manifest_extra: dict[str, Any],
    *,
    progress: bool = True,
) -> np.ndarray:
    """Tokenise `documents` (eos after each) into `path` plus its manifest; returns the read-only memmap."""
    writer = TokenFileWriter(path, tokenizer)
    bar = data_progress(len(documents), f"tokenising {Path(path).name}", unit="doc", enabled=progress, leave=False)
    try:
        index = 0
        while index < len(documents):
            chunk, chars = [], 0
            while index < len(documents) and (not chunk or chars < _CHUNK_CHARS):
                chunk.append(documents[index].text)
                chars += len(documents[index].text)
                index += 1
            writer.write_pieces(*encode_documents(tokenizer, chunk))
            bar.update(len(chunk))
        return writer.finish(manifest_extra)
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()


def read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest of a token file, or None when it is missing or unreadable."""
    try:
        return json.loads(manifest_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def load_token_file(path: Path) -> np.ndarray:
    """Read-only memmap of a token file; dtype comes from its manifest (uint16 if it has none)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Token file {path} does not exist; build it with build_token_file.")
    manifest = read_manifest(path) or {}
    dtype = np.dtype(manifest.get("dtype", "uint16"))
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r")


def token_file_is_current(path: Path, expected_manifest: dict[str, Any]) -> bool:
    """True when the file exists, its manifest holds every expected field unchanged and its size fits."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest is None or not path.is_file():
        return False
    if any(manifest.get(key) != value for key, value in expected_manifest.items()):
        return False
    try:
        itemsize = np.dtype(manifest["dtype"]).itemsize
        return path.stat().st_size == int(manifest["n_tokens"]) * itemsize
    except (KeyError, TypeError, ValueError):
        return False
