"""Tokenizers behind one small protocol, and a byte-level BPE trained offline on the train split.

The paper uses GPT-2's 50k-token BPE; on CPU a small vocabulary trained on the corpus itself keeps the
output head from dominating tiny models, and needs no download.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol, runtime_checkable

from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

from ..files import write_text_atomic

__all__ = ["Tokenizer", "BPETokenizer", "train_bpe", "EOS_TOKEN"]

EOS_TOKEN = "<|endoftext|>"
_MIN_VOCAB = 257  # 256 byte symbols + eos

MAX_PRETOKEN_BYTES = 256
"""The longest pre-token (a word, a number, a run of punctuation or of whitespace) the BPE trainer sees, in bytes; a
longer one is cut into pieces of this length for training only. HF's trainer merges within a word in time quadratic
in its length, so text without whitespace (1 MB of one letter is one pre-token) trained for many minutes; the words
of ordinary text are far shorter, so the tokenizer trained on it is the same as without the cut."""


@runtime_checkable
class Tokenizer(Protocol):
    """What the data pipeline and trainer need from any tokenizer."""

    vocab_size: int
    eos_id: int
    name: str

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: list[int]) -> str: ...

    def fingerprint(self) -> str: ...


class BPETokenizer:
    """Byte-level BPE from HF `tokenizers` (lossless on any text; batch encoding uses every core)."""

    def __init__(self, tokenizer: HFTokenizer, name: str | None = None) -> None:
        eos_id = tokenizer.token_to_id(EOS_TOKEN)
        if eos_id is None:
            raise ValueError(f"The tokenizer has no {EOS_TOKEN!r} token; train it with train_bpe.")
        self._tokenizer = tokenizer
        self.eos_id: int = eos_id
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self.name: str = name or f"bpe-{self.vocab_size}"
        self._fingerprint = hashlib.sha256(tokenizer.to_str().encode()).hexdigest()

    @classmethod
    def load(cls, path: Path) -> BPETokenizer:
        """Load a tokenizer.json written by `save` / `train_bpe`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"Tokenizer file {path} does not exist; train one with train_bpe.")
        return cls(HFTokenizer.from_file(str(path)))

    def save(self, path: Path) -> None:
        """Write tokenizer.json atomically (temp name + rename) so a crash never leaves half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, self._tokenizer.to_str())

    def encode(self, text: str) -> list[int]:
        """Ids of one text (no special tokens added)."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of many texts, encoded in parallel by the Rust library."""
        return [e.ids for e in self._tokenizer.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        """Text of ids; eos is kept visible so document boundaries show."""
        return self._tokenizer.decode(list(ids), skip_special_tokens=False)

    def fingerprint(self) -> str:
        """sha256 of the serialised tokenizer: identical vocab + merges + settings give the same value."""
        return self._fingerprint


def byte_level_bpe() -> HFTokenizer:
    """An untrained byte-level BPE: what `train_bpe` trains and saves (its settings are part of the fingerprint)."""
    tokenizer = HFTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def training_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """The byte-level pre-tokenizer with every pre-token cut into pieces of at most MAX_PRETOKEN_BYTES bytes: what
    the BPE trainer splits its text with (the saved tokenizer keeps the plain byte-level one)."""
    pieces = pre_tokenizers.Split(Regex(f".{{1,{MAX_PRETOKEN_BYTES}}}"), behavior="isolated")
    return pre_tokenizers.Sequence([pre_tokenizers.ByteLevel(add_prefix_space=False), pieces])


def train_bpe(texts: Iterable[str], vocab_size: int, path: Path) -> BPETokenizer:
    """Train a byte-level BPE with `<|endoftext|>` as eos and save it as `path` (tokenizer.json). The trainer sees
    pre-tokens of at most MAX_PRETOKEN_BYTES bytes, so its time stays linear in the text."""
    if not isinstance(vocab_size, int) or vocab_size < _MIN_VOCAB or vocab_size > 2**31 - 1:
        raise ValueError(f"vocab_size must be an integer >= {_MIN_VOCAB} (256 bytes + eos), got {vocab_size!r}.")
    tokenizer = byte_level_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.pre_tokenizer = training_pre_tokenizer()
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.pre_tokenizer = byte_level_bpe().pre_tokenizer
    result = BPETokenizer(tokenizer)
    result.save(path)
    return result
