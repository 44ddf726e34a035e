"""A checkpoint's tokenizer as the files transformers' `AutoTokenizer` reads (tokenizer.json + tokenizer_config.json).

The trained byte-level BPE already is a `tokenizers` tokenizer and is written as it is. GPT-2 is held as tiktoken
ranks; it is rebuilt as the same byte-level BPE for `tokenizers`: the vocabulary is the ranks written in GPT-2's
byte-to-unicode alphabet, and each token's merge is found by running BPE on its bytes with the lower ranks only
(the two parts left are the pair that merges into it). A test checks both encode text as the package does.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import AddedToken, decoders, models, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer

from ..data import BPETokenizer, GPT2Tokenizer, Tokenizer
from ..data.gpt2 import GPT2_RANKS_SHA256, packaged_ranks_path
from ..data.tokenizer import EOS_TOKEN
from ..files import write_text_atomic

__all__ = ["gpt2_tokenizer", "write_tokenizer_files"]


def write_tokenizer_files(tokenizer: Tokenizer, directory: Path, *, max_length: int) -> list[str]:
    """tokenizer.json and tokenizer_config.json (a PreTrainedTokenizerFast with eos = bos = pad = <|endoftext|>, the
    pad_token_id config.json names; padding is masked by the exported model, so the pad id never reaches a score)."""
    if isinstance(tokenizer, BPETokenizer):
        tokenizer.save(directory / "tokenizer.json")
    elif isinstance(tokenizer, GPT2Tokenizer):
        write_text_atomic(directory / "tokenizer.json", gpt2_tokenizer().to_str())
    else:
        raise ValueError(f"tokenizer {tokenizer.name!r} cannot be exported; supported: the trained BPE and gpt2.")
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOS_TOKEN,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
    }
    write_text_atomic(directory / "tokenizer_config.json", json.dumps(settings, indent=2) + "\n")
    return ["tokenizer.json", "tokenizer_config.json"]


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (the alphabet of its vocab.json)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:  # the other bytes get characters from 256 on, in byte order
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def _merge_parts(ranks: dict[bytes, int], token: bytes) -> tuple[bytes, bytes]:
    """The two tokens BPE merges into `token`: its bytes merged by lowest rank, below `token`'s own rank."""
    limit = ranks[token]
    parts = [bytes([byte]) for byte in token]
    while len(parts) > 2:
        rank, index = min((ranks.get(parts[i] + parts[i + 1], limit), i) for i in range(len(parts) - 1))
        if rank >= limit:
            raise ValueError(f"GPT-2 ranks are inconsistent: token {token!r} cannot be built from lower ranks.")
        parts[index : index + 2] = [parts[index] + parts[index + 1]]
    return parts[0], parts[1]


def gpt2_tokenizer() -> HFTokenizer:
    """GPT-2 (the package's shipped ranks) as a `tokenizers` byte-level BPE; <|endoftext|> is id 50256."""
    from tiktoken.load import load_tiktoken_bpe

    ranks = load_tiktoken_bpe(str(packaged_ranks_path()), expected_hash=GPT2_RANKS_SHA256)
    alphabet = _bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(alphabet[byte] for byte in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = [
        tuple(map(text, _merge_parts(ranks, token)))
        for token, _ in sorted(ranks.items(), key=lambda item: item[1])
        if len(token) > 1
    ]
    tokenizer = HFTokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens([AddedToken(EOS_TOKEN, special=True)])
    return tokenizer
