"""The BPE trainer's work is bounded: it sees pre-tokens of at most MAX_PRETOKEN_BYTES bytes, so text without
whitespace (1 MB of one letter, once many minutes) trains like any other, while ordinary text, whose words are all
shorter, trains exactly the tokenizer it trained before (the saved tokenizer and its fingerprint are unchanged)."""

from __future__ import annotations

import json
from pathlib import Path

from corpus import OBJECTS, SUBJECTS, VERBS
from tokenizers import pre_tokenizers, trainers

from mixture_of_tokens.data import BPETokenizer, train_bpe
from mixture_of_tokens.data.tokenizer import EOS_TOKEN, MAX_PRETOKEN_BYTES, byte_level_bpe, training_pre_tokenizer

ONE_LETTER = "a" * 1_000_000
ORDINARY = [
    " ".join(f"{s.capitalize()} {v} {o}." for s in SUBJECTS for v in VERBS for o in OBJECTS),
    "Naïve café — Cæsar's 日本語 text, with  double  spaces,\ttabs\nand 123,456 numbers!!\n\n\n end  ",
    "See https://example.org/a/long/path?query=1&x=2 and " + "y" * (MAX_PRETOKEN_BYTES - 1) + " (a long word).",
    "def f(x):\n" + " " * 40 + "return x  # indented code\n",
]


def _longest_pre_token(text: str) -> int:
    """Bytes of the longest pre-token the trainer sees in `text` (byte-level: one character a byte)."""
    return max(len(piece) for piece, _ in training_pre_tokenizer().pre_tokenize_str(text))


def test_the_trainer_sees_pre_tokens_of_at_most_the_cap() -> None:
    assert MAX_PRETOKEN_BYTES == 256
    for text in (ONE_LETTER, " " * 10_000, "é" * 1000, "12345" * 1000):
        pieces = training_pre_tokenizer().pre_tokenize_str(text)
        assert max(len(piece) for piece, _ in pieces) <= MAX_PRETOKEN_BYTES
        assert "".join(piece for piece, _ in pieces) == "".join(p for p, _ in _plain(text))  # cut, nothing lost
    for text in ORDINARY:  # ordinary words are never cut
        assert training_pre_tokenizer().pre_tokenize_str(text) == _plain(text)


def _plain(text: str) -> list:
    return pre_tokenizers.ByteLevel(add_prefix_space=False).pre_tokenize_str(text)


def test_a_megabyte_of_one_letter_trains_a_tokenizer(tmp_path: Path) -> None:
    tokenizer = train_bpe([ONE_LETTER, *ORDINARY], 300, tmp_path / "tokenizer.json")
    vocab = json.loads((tmp_path / "tokenizer.json").read_text())["model"]["vocab"]
    assert max(len(token) for token in vocab if token != EOS_TOKEN) <= MAX_PRETOKEN_BYTES  # the bounded quantity
    ids = tokenizer.encode(ONE_LETTER)
    assert len(ids) >= len(ONE_LETTER) // MAX_PRETOKEN_BYTES and tokenizer.decode(ids) == ONE_LETTER


def test_ordinary_text_trains_the_same_tokenizer_as_the_uncut_trainer(tmp_path: Path) -> None:
    """The trainer before the cap: the same settings with the plain byte-level pre-tokenizer."""
    uncut = byte_level_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=1000,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    uncut.train_from_iterator(ORDINARY * 3, trainer=trainer)
    trained = train_bpe(ORDINARY * 3, 1000, tmp_path / "tokenizer.json")
    assert trained.fingerprint() == BPETokenizer(uncut).fingerprint()
    saved = json.loads((tmp_path / "tokenizer.json").read_text())
    assert saved["pre_tokenizer"]["type"] == "ByteLevel"  # the cut is the trainer's alone
