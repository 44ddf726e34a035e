"""From a source string to ready token arrays, reusing every cached step whose inputs did not change.

Cache layout: `<cache_dir>/<source-slug>/<bpe-VOCAB | gpt2>/{tokenizer.json, tokenizer.source.json,
train.bin, train.json, eval.bin, eval.json}`. A BPE is trained on the train split only (for a streaming
source: on its first BPE_SAMPLE_CHARS characters of train documents); GPT-2 needs no training. Every file is
written under a temp name and renamed into place, so a full disk is one sentence (`WriteFailed`) that leaves no
half-written file and nothing cached before changed.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..files import WriteFailed, is_disk_full, write_failed, write_text_atomic
from .documents import SkipCounts, SplitDocuments, counted_texts, data_progress, default_cache_dir
from .gpt2 import GPT2_VOCAB_SIZE, load_gpt2
from .source_kinds import source_prefix
from .sources import SOURCES, load_splits, resolve_source, source_fingerprint, source_slug, stream_source
from .streaming import open_stream, route_documents
from .token_file import (
    TokenFileWriter,
    build_token_file,
    encode_documents,
    expected_manifest,
    load_token_file,
    read_manifest,
    token_file_is_current,
)
from .tokenizer import BPETokenizer, Tokenizer, train_bpe

__all__ = [
    "PreparedData",
    "check_data_settings",
    "prepare_data",
    "TOKENIZERS",
    "DEFAULT_STREAM_MAX_TOKENS",
    "tokenizer_directory",
]

TOKENIZERS = ("bpe", "gpt2")
DEFAULT_STREAM_MAX_TOKENS = 20_000_000  # train tokens taken from a streaming source unless told otherwise
EVAL_FRACTION = 20  # a streaming source's eval budget is 1/20 of its train budget
BPE_SAMPLE_CHARS = 20_000_000
_STREAM_CHUNK_CHARS = 1 << 20


@dataclass
class PreparedData:
    """Everything the trainer needs from the data side."""

    train_tokens: np.ndarray
    eval_tokens: np.ndarray
    tokenizer: Tokenizer
    manifest: dict[str, Any]
    skipped: SkipCounts


def tokenizer_directory(tokenizer: str, vocab_size: int) -> str:
    """Name of the cache sub-directory of one tokenizer: 'bpe-8192' or 'gpt2'."""
    return "gpt2" if tokenizer == "gpt2" else f"bpe-{vocab_size}"


def _load_or_train_bpe(
    directory: Path,
    fingerprint: str,
    vocab_size: int,
    texts: Iterable[str],
    *,
    total_chars: Callable[[], int],
    progress: bool,
) -> BPETokenizer:
    """Reuse the BPE trained on the same source and vocab; `texts` is only consumed when training, under a progress
    bar of the characters read (of `total_chars()`, asked only then: the trainer reads all text before it merges)."""
    tokenizer_path = directory / "tokenizer.json"
    stamp_path = directory / "tokenizer.source.json"
    stamp = {"source_fingerprint": fingerprint, "vocab_size": vocab_size}
    try:
        if json.loads(stamp_path.read_text(encoding="utf-8")) == stamp:
            return BPETokenizer.load(tokenizer_path)
    except (OSError, ValueError):
        pass
    total = total_chars()
    bar = data_progress(total, f"training BPE-{vocab_size}", unit="char", enabled=progress, unit_scale=True)
    try:
        tokenizer = train_bpe(counted_texts(texts, bar, total), vocab_size, tokenizer_path)
    finally:
        bar.close()
    write_text_atomic(stamp_path, json.dumps(stamp) + "\n")
    return tokenizer


@contextlib.contextmanager
def _cache_writes(directory: Path) -> Iterator[None]:
    """A full disk met while preparing data as one sentence: the writers have removed their temp files."""
    try:
        yield
    except Exception as error:
        if isinstance(error, WriteFailed) or not is_disk_full(error):
            raise
        kept = (
            "no half-written file is left and nothing cached before was changed: free some space, or point "
            "MOT_CACHE_DIR at a larger disk, and run the command again."
        )
        raise write_failed("the tokenizer and token files", directory, error, kept) from None


class _LazySplits:
    """Reads an in-memory source at most once, and only when something has to be (re)built."""

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

    def train_texts(self) -> Iterable[str]:
        return (d.text for d in self.get().train)


def check_data_settings(
    source: str,
    tokenizer: str,
    max_tokens: int | None = None,
    max_documents: int | None = None,
    shuffle_buffer: int = 10_000,
    text_column: str = "text",
) -> None:
    """Every bad setting fails here, before anything is read, downloaded or written."""
    if tokenizer not in TOKENIZERS:
        raise ValueError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {tokenizer!r}.")
    kind = resolve_source(source)[0]  # rejects unknown sources
    for name, value in (("max_tokens", max_tokens), ("max_documents", max_documents)):
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive integer or unset, got {value!r}.")
        if not kind.streaming:
            streaming = ", ".join(form for form, other in SOURCES.items() if other.streaming)
            raise ValueError(f"{name} applies to streaming sources ({streaming}) only, not {source!r}.")
    if not isinstance(shuffle_buffer, int) or shuffle_buffer < 1:
        raise ValueError(f"shuffle_buffer must be a positive integer, got {shuffle_buffer!r}.")
    check_text_column_setting(text_column)
    if text_column != "text" and not kind.text_column:
        readers = ", ".join(source_prefix(form) + ":" for form, other in SOURCES.items() if other.text_column)
        raise ValueError(
            f"text_column applies to {readers} sources only (the others read their text themselves), not {source!r}."
        )


def check_text_column_setting(text_column: object) -> None:
    """The text column of an hf: source is a non-empty name (TrainConfig checks it on its own)."""
    if not isinstance(text_column, str) or not text_column.strip():
        raise ValueError(f"text_column must be a non-empty column name, got {text_column!r}.")


def _stream_texts(source: str, seed: int, shuffle_buffer: int, text_column: str) -> Iterable[str]:
    """Train texts of a streaming source, up to BPE_SAMPLE_CHARS characters, for training a BPE."""
    train, held = open_stream(
        stream_source(source), seed=seed, shuffle_buffer=shuffle_buffer, skipped=SkipCounts(), text_column=text_column
    )
    chars = [0]  # a cell the `full` callback reads
    for split, document in route_documents(train, held, lambda _split: chars[0] >= BPE_SAMPLE_CHARS):
        if split == "train":
            chars[0] += len(document.text)
            yield document.text


def _write_routed(
    pending: list[tuple[str, str]],
    tokenizer: Tokenizer,
    writers: dict[str, TokenFileWriter],
    full: Callable[[str], bool],
    bar: Any,
    caps: dict[str, float],
) -> None:
    """Encode a chunk of (split, text) in one batch; write each whole document while its split has room. The bar
    counts each split's tokens up to its cap (its token budget): the last whole document may run past it."""
    encoded, ends = encode_documents(tokenizer, [text for _, text in pending])
    owners = iter(split for split, _ in pending)
    start = 0
    for index, end in enumerate(ends):
        if not end:
            continue
        split = next(owners)  # pieces start..index are one whole document
        if not full(split):
            before = min(writers[split].n_tokens, caps[split])
            writers[split].write_pieces(encoded[start : index + 1], ends[start : index + 1])
            bar.update(min(writers[split].n_tokens, caps[split]) - before)
        start = index + 1


def _build_streamed(
    source: str,
    tokenizer: Tokenizer,
    directory: Path,
    budgets: dict[str, dict[str, int | None]],
    extra: dict[str, Any],
    *,
    seed: int,
    shuffle_buffer: int,
    progress: bool,
    text_column: str,
) -> None:
    """One pass over the stream, writing train.bin and eval.bin until their budgets are met."""
    skipped = SkipCounts()
    train, held = open_stream(
        stream_source(source), seed=seed, shuffle_buffer=shuffle_buffer, skipped=skipped, text_column=text_column
    )
    writers = {split: TokenFileWriter(directory / f"{split}.bin", tokenizer) for split in ("train", "eval")}

    def full(split: str) -> bool:
        writer, budget = writers[split], budgets[split]
        return writer.n_tokens >= (budget["max_tokens"] or 0) or (
            budget["max_documents"] is not None and writer.n_documents >= budget["max_documents"]
        )

    total = sum(b["max_tokens"] or 0 for b in budgets.values())
    caps = {split: budget["max_tokens"] or math.inf for split, budget in budgets.items()}
    bar = data_progress(total, f"tokenising {source}", unit="tok", enabled=progress, unit_scale=True)
    try:
        pending: list[tuple[str, str]] = []
        pending_chars = 0
        routed = route_documents(train, held, full)
        while True:
            item = next(routed, None)
            if item is not None:
                pending.append((item[0], item[1].text))
                pending_chars += len(item[1].text)
                if pending_chars < _STREAM_CHUNK_CHARS:
                    continue
            _write_routed(pending, tokenizer, writers, full, bar, caps)
            pending, pending_chars = [], 0
            if item is None or (full("train") and full("eval")):
                break
        exhausted = not (full("train") and full("eval"))
        for split, writer in writers.items():
            if writer.n_tokens == 0:
                raise ValueError(f"{source} gave no usable {split} documents (skipped: {skipped.summary()}).")
        for split, writer in writers.items():
            info = {"split": split, "stream_exhausted": exhausted, "skipped": skipped.to_dict()}
            writer.finish({**extra, **budgets[split], **info})
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    finally:
        bar.close()


def describe_data_plan(source: str, tokenizer: str, vocab_size: int, cache_dir: Path | None = None) -> str:
    """One line for a dry run: the source, the tokenizer and its size, and what the cache already holds for them
    (nothing is read or written but two small manifests)."""
    size = GPT2_VOCAB_SIZE if tokenizer == "gpt2" else vocab_size
    kind = "GPT-2's byte-level BPE" if tokenizer == "gpt2" else "a byte-level BPE trained on the source"
    directory = (cache_dir or default_cache_dir()) / source_slug(source) / tokenizer_directory(tokenizer, vocab_size)
    manifests = {split: read_manifest(directory / f"{split}.bin") for split in ("train", "eval")}
    if all(manifests.values()):
        train, held = manifests["train"], manifests["eval"]
        cached = f"cached: {train['n_tokens']:,} train and {held['n_tokens']:,} eval tokens in {directory}"
    else:
        cached = f"not prepared yet (it will be, under {directory})"
    return f"data: {source}, tokenizer {tokenizer} ({kind}, {size:,} tokens); {cached}"


def prepare_data(
    source: str = "packaged",
    vocab_size: int = 8192,
    cache_dir: Path | None = None,
    progress: bool = True,
    *,
    tokenizer: str = "bpe",
    max_tokens: int | None = None,
    max_documents: int | None = None,
    seed: int = 0,
    shuffle_buffer: int = 10_000,
    text_column: str = "text",
) -> PreparedData:
    """Load documents, train or reuse the tokenizer, build or reuse train.bin / eval.bin; print one summary line.

    `tokenizer`: "bpe" (trained on the source, `vocab_size` tokens) or "gpt2" (50,257 tokens; `vocab_size`
    is ignored). Streaming sources only: `max_tokens` / `max_documents` bound the train split (eval gets
    1/20 of each); unset means "reuse whatever is prepared for this source, else DEFAULT_STREAM_MAX_TOKENS";
    `seed` and `shuffle_buffer` set the shuffle of the train stream; `text_column` (hf: sources only) is the column
    holding the text.
    """
    check_data_settings(source, tokenizer, max_tokens, max_documents, shuffle_buffer, text_column)
    started = time.perf_counter()
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fingerprint = source_fingerprint(source)
    directory = cache_dir / source_slug(source) / tokenizer_directory(tokenizer, vocab_size)
    with _cache_writes(directory):
        directory.mkdir(parents=True, exist_ok=True)
    streaming = resolve_source(source)[0].streaming
    splits = _LazySplits(source, cache_dir)

    if tokenizer == "gpt2":
        loaded_tokenizer: Tokenizer = load_gpt2()
    else:
        texts = _stream_texts(source, seed, shuffle_buffer, text_column) if streaming else splits.train_texts()

        def total_chars() -> int:  # a stream's BPE sample is capped; a file source's train text is known
            return BPE_SAMPLE_CHARS if streaming else sum(len(document.text) for document in splits.get().train)

        trained_on = fingerprint if text_column == "text" else f"{fingerprint}|text_column={text_column}"
        with _cache_writes(directory):
            loaded_tokenizer = _load_or_train_bpe(
                directory, trained_on, vocab_size, texts, total_chars=total_chars, progress=progress
            )

    extra: dict[str, Any] = {"source": source, "source_fingerprint": fingerprint}
    if text_column != "text":  # recorded only when set, so token files prepared before the setting stay current
        extra["text_column"] = text_column
    budgets: dict[str, dict[str, int | None]] = {}
    if streaming:
        extra.update(seed=seed, shuffle_buffer=shuffle_buffer)
        train_tokens = max_tokens or DEFAULT_STREAM_MAX_TOKENS
        budgets["train"] = {"max_tokens": train_tokens, "max_documents": max_documents}
        budgets["eval"] = {
            "max_tokens": max(1, train_tokens // EVAL_FRACTION),
            "max_documents": None if max_documents is None else max(1, max_documents // EVAL_FRACTION),
        }

    def current(split: str) -> bool:
        wanted = {**extra, "split": split}
        if max_tokens is not None or max_documents is not None:
            wanted.update(budgets[split])  # an explicit budget must match; unset reuses any
        return token_file_is_current(directory / f"{split}.bin", expected_manifest(loaded_tokenizer, wanted))

    built = False
    if streaming:
        if not (current("train") and current("eval")):
            stream_args = {
                "seed": seed,
                "shuffle_buffer": shuffle_buffer,
                "progress": progress,
                "text_column": text_column,
            }
            with _cache_writes(directory):
                _build_streamed(source, loaded_tokenizer, directory, budgets, extra, **stream_args)
            built = True
    else:
        for split in ("train", "eval"):
            if not current(split):
                loaded = splits.get()
                documents = loaded.train if split == "train" else loaded.eval
                split_extra = {**extra, "split": split, "skipped": loaded.skipped.to_dict()}
                with _cache_writes(directory):
                    build_token_file(
                        documents, loaded_tokenizer, directory / f"{split}.bin", split_extra, progress=progress
                    )
                built = True
    arrays = {split: load_token_file(directory / f"{split}.bin") for split in ("train", "eval")}
    manifests = {split: read_manifest(directory / f"{split}.bin") or {} for split in ("train", "eval")}

    skipped = SkipCounts.from_dict(manifests["train"].get("skipped", {}))
    manifest = {
        "source": source,
        "source_fingerprint": fingerprint,
        "tokenizer": loaded_tokenizer.name,
        "tokenizer_fingerprint": loaded_tokenizer.fingerprint(),
        "vocab_size": loaded_tokenizer.vocab_size,
        "directory": str(directory),
        "train": manifests["train"],
        "eval": manifests["eval"],
    }
    if progress:
        train, held = manifests["train"], manifests["eval"]
        print(
            f"data {source}: train {train.get('n_documents')} docs / {len(arrays['train']):,} tokens, "
            f"eval {held.get('n_documents')} docs / {len(arrays['eval']):,} tokens, "
            f"{loaded_tokenizer.name}, skipped: {skipped.summary()} "
            f"({'built' if built else 'cached'}, {time.perf_counter() - started:.1f}s)"
        )
    return PreparedData(arrays["train"], arrays["eval"], loaded_tokenizer, manifest, skipped)
