"""GPT-2's byte-level BPE (the paper's tokenizer: 50,257 tokens) through tiktoken, offline.

The ranks file ships inside this package (assets/gpt2.tiktoken, MIT, taken unchanged from the PyPI sdist
openai-whisper==20250625) and is checked against the sha256 that tiktoken itself pins for r50k_base. Only
when that file is missing or altered does `load_gpt2` fall back to `tiktoken.get_encoding("gpt2")`, which
downloads the same ranks; when neither works it raises one error saying what to do.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

from ..files import sha256_file

__all__ = ["GPT2_RANKS_SHA256", "GPT2Tokenizer", "load_gpt2", "packaged_ranks_path"]

GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_VOCAB_SIZE = 50257
GPT2_EOS_ID = 50256
_EOS_TOKEN = "<|endoftext|>"


def _import_tiktoken() -> Any:
    try:
        import tiktoken
    except ImportError as error:  # a dependency, so only a broken install gets here
        raise RuntimeError("tokenizer 'gpt2' needs the tiktoken package: pip install tiktoken") from error
    return tiktoken


def _gpt2_pattern() -> str:
    """The pre-tokenisation regex tiktoken uses for r50k_base (GPT-2), so encodings match tiktoken's own."""
    try:
        from tiktoken_ext.openai_public import r50k_pat_str
    except ImportError:  # older tiktoken: the same regex, as GPT-2 published it
        return r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
    return r50k_pat_str


def packaged_ranks_path() -> Path:
    """Where the shipped gpt2.tiktoken lies (it may be absent from a broken install)."""
    return Path(str(resources.files("mixture_of_tokens.data") / "assets" / "gpt2.tiktoken"))


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class GPT2Tokenizer:
    """GPT-2 BPE behind the data pipeline's Tokenizer protocol; batches are encoded on `num_threads` threads."""

    name = "gpt2"

    def __init__(self, encoding: Any, *, num_threads: int | None = None) -> None:
        if encoding.n_vocab != GPT2_VOCAB_SIZE or encoding.eot_token != GPT2_EOS_ID:
            raise ValueError(
                f"expected GPT-2's encoding ({GPT2_VOCAB_SIZE} tokens, eos {GPT2_EOS_ID}), got "
                f"{encoding.n_vocab} tokens and eos {encoding.eot_token}."
            )
        self._encoding = encoding
        self.vocab_size: int = GPT2_VOCAB_SIZE
        self.eos_id: int = GPT2_EOS_ID
        self.num_threads = num_threads or _default_threads()

    def encode(self, text: str) -> list[int]:
        """Ids of one text; '<|endoftext|>' inside the text is ordinary text, never the eos id."""
        return self._encoding.encode_ordinary(text)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Ids of many texts, spread over `num_threads` threads (tiktoken releases the GIL)."""
        return self._encoding.encode_ordinary_batch(texts, num_threads=self.num_threads)

    def decode(self, ids: list[int]) -> str:
        """Text of ids (invalid UTF-8 from a cut multi-byte character becomes U+FFFD); eos shows as text."""
        return self._encoding.decode(list(ids))

    def fingerprint(self) -> str:
        """The same for the shipped file and the online fallback: tiktoken pins the same ranks hash."""
        return f"gpt2-r50k-{GPT2_RANKS_SHA256}"


def load_gpt2(ranks_path: Path | None = None, *, allow_download: bool = True) -> GPT2Tokenizer:
    """GPT-2 from a local ranks file (the shipped one by default), else tiktoken's own download."""
    tiktoken = _import_tiktoken()
    path = Path(ranks_path) if ranks_path is not None else packaged_ranks_path()
    problem = ""
    if not path.is_file():
        problem = f"{path} does not exist"
    elif (actual := sha256_file(path)) != GPT2_RANKS_SHA256:
        problem = f"{path} has sha256 {actual}, expected {GPT2_RANKS_SHA256}"
    if not problem:
        from tiktoken.load import load_tiktoken_bpe

        encoding = tiktoken.Encoding(
            name="gpt2",
            pat_str=_gpt2_pattern(),
            mergeable_ranks=load_tiktoken_bpe(str(path), expected_hash=GPT2_RANKS_SHA256),
            special_tokens={_EOS_TOKEN: GPT2_EOS_ID},
            explicit_n_vocab=GPT2_VOCAB_SIZE,
        )
        return GPT2Tokenizer(encoding)
    if allow_download:
        try:
            return GPT2Tokenizer(tiktoken.get_encoding("gpt2"))
        except Exception as error:  # network, proxy or cache failures all mean the same thing here
            problem += f", and tiktoken.get_encoding('gpt2') failed ({type(error).__name__}: {error})"
    raise RuntimeError(
        f"Cannot load the GPT-2 tokenizer: {problem}. Reinstall mixture-of-tokens (it ships gpt2.tiktoken) "
        "or pass the path of a gpt2.tiktoken file with that sha256."
    )
