"""From a source string to ready token arrays, reusing every cached step whose inputs did not change.

Cache layout: `<cache_dir>/<source-slug>/bpe-<vocab>/{tokenizer.json, tokenizer.source.json,
train.bin, train.json, eval.bin, eval.json}`. The tokenizer is trained on the train split only.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .documents import SkipCounts, SplitDocuments, default_cache_dir
from .sources import load_splits, source_fingerprint, source_slug
from .token_file import (
    build_token_file,
    expected_manifest,
    load_token_file,
    read_manifest,
    token_file_is_current,
)
from .tokenizer import BPETokenizer, Tokenizer, train_bpe

__all__ = ["PreparedData", "prepare_data"]


@dataclass
class PreparedData:
    """Everything the trainer needs from the data side."""

    train_tokens: np.ndarray
    eval_tokens: np.ndarray
    tokenizer: Tokenizer
    manifest: dict[str, Any]
    skipped: SkipCounts


def _load_or_train_tokenizer(
    directory: Path, fingerprint: str, vocab_size: int, splits: _LazySplits
) -> BPETokenizer:
    tokenizer_path = directory / "tokenizer.json"
    stamp_path = directory / "tokenizer.source.json"
    stamp = {"source_fingerprint": fingerprint, "vocab_size": vocab_size}
    try:
        if json.loads(stamp_path.read_text(encoding="utf-8")) == stamp:
            return BPETokenizer.load(tokenizer_path)
    except (OSError, ValueError):
        pass
    tokenizer = train_bpe((d.text for d in splits.get().train), vocab_size, tokenizer_path)
    stamp_path.write_text(json.dumps(stamp) + "\n", encoding="utf-8")
    return tokenizer


class _LazySplits:
    """Reads the source at most once, and only when something has to be (re)built."""

    def __init__(self, source: str, cache_dir: Path) -> None:
        self.source = source
        self.cache_dir = cache_dir
        self._splits: SplitDocuments | None = None

    @property
    def loaded(self) -> bool:
        return self._splits is not None

    def get(self) -> SplitDocuments:
        if self._splits is None:
            self._splits = load_splits(self.source, self.cache_dir)
        return self._splits


def prepare_data(
    source: str = "packaged", vocab_size: int = 8192, cache_dir: Path | None = None, progress: bool = True
) -> PreparedData:
    """Load documents, train or reuse the BPE, build or reuse train.bin / eval.bin; print one summary line."""
    started = time.perf_counter()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fingerprint = source_fingerprint(source)
    directory = cache_dir / source_slug(source) / f"bpe-{vocab_size}"
    directory.mkdir(parents=True, exist_ok=True)
    splits = _LazySplits(source, cache_dir)
    tokenizer = _load_or_train_tokenizer(directory, fingerprint, vocab_size, splits)

    manifests: dict[str, dict[str, Any]] = {}
    arrays: dict[str, np.ndarray] = {}
    for split in ("train", "eval"):
        path = directory / f"{split}.bin"
        extra = {"source": source, "source_fingerprint": fingerprint, "split": split}
        if token_file_is_current(path, expected_manifest(tokenizer, extra)):
            arrays[split] = load_token_file(path)
        else:
            loaded = splits.get()
            documents = loaded.train if split == "train" else loaded.eval
            extra["skipped"] = loaded.skipped.to_dict()
            arrays[split] = build_token_file(documents, tokenizer, path, extra, progress=progress)
        manifests[split] = read_manifest(path) or {}

    skipped = SkipCounts.from_dict(manifests["train"].get("skipped", {}))
    manifest = {
        "source": source,
        "source_fingerprint": fingerprint,
        "tokenizer": tokenizer.name,
        "tokenizer_fingerprint": tokenizer.fingerprint(),
        "vocab_size": tokenizer.vocab_size,
        "directory": str(directory),
        "train": manifests["train"],
        "eval": manifests["eval"],
    }
    if progress:
        reused = "built" if splits.loaded else "cached"
        train, held = manifests["train"], manifests["eval"]
        print(
            f"data {source}: train {train.get('n_documents')} docs / {len(arrays['train']):,} tokens, "
            f"eval {held.get('n_documents')} docs / {len(arrays['eval']):,} tokens, "
            f"{tokenizer.name}, skipped: {skipped.summary()} ({reused}, {time.perf_counter() - started:.1f}s)"
        )
    return PreparedData(arrays["train"], arrays["eval"], tokenizer, manifest, skipped)
