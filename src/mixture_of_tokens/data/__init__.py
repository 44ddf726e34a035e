"""Data pipeline: text source -> documents -> tokenizer -> token file (memmap) -> batches."""

from .batches import BatchSampler, eval_batches, unigram_entropy
from .documents import Document, SkipCounts, SplitDocuments, default_cache_dir
from .packaged import packaged_documents
from .prepare import PreparedData, prepare_data
from .sources import load_documents, load_splits
from .token_file import build_token_file, load_token_file, token_file_is_current
from .tokenizer import BPETokenizer, Tokenizer, train_bpe

__all__ = [
    "BPETokenizer",
    "BatchSampler",
    "Document",
    "PreparedData",
    "SkipCounts",
    "SplitDocuments",
    "Tokenizer",
    "build_token_file",
    "default_cache_dir",
    "eval_batches",
    "load_documents",
    "load_splits",
    "load_token_file",
    "packaged_documents",
    "prepare_data",
    "token_file_is_current",
    "train_bpe",
    "unigram_entropy",
]
