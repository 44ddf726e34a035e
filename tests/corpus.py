"""Small text corpora written to disk for the `text:` data source (one file per document).

`write_corpus` draws sentences from a tiny grammar, so context predicts the next token far better than unigram
frequencies and a few dozen training steps visibly lower the held-out loss.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path

SUBJECTS = ["the cat", "a dog", "my neighbour", "the old sailor", "every child", "the queen"]
VERBS = ["sees", "follows", "remembers", "writes to", "laughs at", "waits for"]
OBJECTS = ["the river", "a letter", "the garden", "his brother", "the ship", "a small bird"]


def write_documents(directory: Path, texts: Iterable[str]) -> Path:
    """Each text as its own file doc000.txt, doc001.txt, ... (the `text:` source reads them in name order)."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, text in enumerate(texts):
        (directory / f"doc{index:03d}.txt").write_text(text, encoding="utf-8")
    return directory


def write_corpus(directory: Path, n_documents: int = 40, sentences: int = 60, seed: int = 0) -> Path:
    """`n_documents` documents of `sentences` grammar sentences each, the same for the same seed."""
    rng = random.Random(seed)
    texts = (
        " ".join(
            f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}." for _ in range(sentences)
        )
        for _ in range(n_documents)
    )
    return write_documents(directory, texts)
