"""The ```python blocks of README.md and docs/*.md, and the place they run in (used by test_doc_snippets.py and
test_python_api.py).

A block preceded by `<!-- not-run: reason -->` (on its own line, blank lines allowed between) is listed with that
reason and not run. The blocks of one file run in order in one namespace, so a block may use what an earlier
block of the same file defined, and in one working directory that holds `corpus.txt`, the small English text
the README's training example names as "any text of yours".
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from corpus import OBJECTS, SUBJECTS, VERBS
from helpers import REPO_ROOT

ROOT = REPO_ROOT
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*((?:(?!-->).)+?)\s*-->\s*\Z", re.DOTALL)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    code: str
    not_run: str | None = None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks(path: Path) -> list[Block]:
    """Every ```python block of a Markdown file, with its first line number and its not-run reason if any."""
    text = path.read_text(encoding="utf-8")
    blocks = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()]
        reason = _NOT_RUN.search(before.rstrip() + "\n")
        blocks.append(Block(path, before.count("\n") + 1, match.group(1), reason.group(1) if reason else None))
    return blocks


def write_corpus_txt(directory: Path, paragraphs: int = 150, sentences: int = 60, seed: int = 0) -> Path:
    """corpus.txt: grammar sentences in paragraphs separated by blank lines (the `text:` source's documents)."""
    rng = random.Random(seed)
    sentence = lambda: f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}."  # noqa: E731
    text = "\n\n".join(" ".join(sentence() for _ in range(sentences)) for _ in range(paragraphs))
    path = directory / "corpus.txt"
    path.write_text(text + "\n", encoding="utf-8")
    return path


def run_blocks(blocks: list[Block], namespace: dict | None = None) -> dict:
    """Run blocks in order in one namespace (each compiled under its file and line, so a traceback points there)."""
    namespace = {"__name__": "__doc_snippet__"} if namespace is None else namespace
    for block in blocks:
        if block.not_run is None:
            code = "\n" * (block.line) + block.code
            exec(compile(code, str(block.path), "exec"), namespace)
    return namespace
