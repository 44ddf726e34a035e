"""Malformed data is dropped and counted the same way in every source that reads files: a truncated archive,
a binary file and a non-UTF-8 file are left out whole under text:PATH and c4:PATH alike, never tokenised, and
the summary line's counts are what was left out."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from mixture_of_tokens.data import SkipCounts, load_splits, prepare_data

GOOD = [f"Record number {i} says something plain about the weather." for i in range(12)]
LATIN1 = "Caf\xe9 cr\xe8me appears only in a Latin-1 file."
BINARY_MARK = "BINARYMARK"


def _c4_line(text: str) -> str:
    return json.dumps({"text": text, "timestamp": "2019-04-25T12:00:00Z", "url": f"https://example.com/{hash(text)}"})


def _write_files(root: Path) -> Path:
    """Good C4-style records plus one truncated .gz, one Latin-1 file and one binary file, all JSON lines."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "good.jsonl").write_text("\n".join(_c4_line(t) for t in GOOD) + "\n", encoding="utf-8")
    whole = gzip.compress(("\n".join(_c4_line(f"Truncated record {i}.") for i in range(200)) + "\n").encode())
    (root / "truncated.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    (root / "latin1.jsonl").write_bytes(
        (_c4_line("placeholder").replace("placeholder", LATIN1) + "\n").encode("latin-1")
    )
    (root / "binary.jsonl").write_bytes(_c4_line(BINARY_MARK).encode() + b"\n\x00\x01\x02\xff\xfe" * 20)
    return root


FILE_PROBLEMS = SkipCounts(unreadable_files=1, invalid_utf8_files=1, binary_files=1)


def test_text_source_drops_truncated_binary_and_non_utf8_files(tmp_path: Path) -> None:
    splits = load_splits(f"text:{_write_files(tmp_path / 'files')}")
    assert splits.skipped == FILE_PROBLEMS
    assert sorted(d.text for d in splits.train + splits.eval) == sorted(GOOD)


def test_c4_source_drops_them_the_same_way(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = f"c4:{_write_files(tmp_path / 'files')}"
    data = prepare_data(source, cache_dir=tmp_path / "cache", tokenizer="gpt2", progress=True)  # no EOFError
    assert data.skipped == FILE_PROBLEMS
    decoded = data.tokenizer.decode(list(data.train_tokens) + list(data.eval_tokens))
    assert "Truncated record" not in decoded and BINARY_MARK not in decoded and "Latin-1" not in decoded
    assert all(text in decoded for text in GOOD)
    assert "skipped: invalid_utf8_files=1, binary_files=1, unreadable_files=1" in capsys.readouterr().out


def test_text_source_never_tokenises_a_file_it_reports_as_skipped(tmp_path: Path, capsys) -> None:
    root = tmp_path / "docs"
    root.mkdir()
    for index, text in enumerate(GOOD):
        (root / f"doc{index:02d}.txt").write_text(text, encoding="utf-8")
    (root / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + BINARY_MARK.encode() + b"\x00" * 64)
    (root / "old.txt").write_bytes(LATIN1.encode("latin-1"))
    data = prepare_data(f"text:{root}", vocab_size=300, cache_dir=tmp_path / "cache", progress=True)
    assert data.skipped == SkipCounts(invalid_utf8_files=1, binary_files=1)
    decoded = data.tokenizer.decode(list(data.train_tokens) + list(data.eval_tokens))
    assert BINARY_MARK not in decoded and "Latin-1" not in decoded and "\ufffd" not in decoded
    summary = capsys.readouterr().out
    assert "train 11 docs" in summary and "eval 1 docs" in summary  # the 12 good documents, every 10th held out
    assert "skipped: invalid_utf8_files=1, binary_files=1" in summary
