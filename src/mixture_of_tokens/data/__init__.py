"""Data pipeline: text source -> documents -> tokenizer -> token file (memmap) -> batches."""

from .batches import BatchSampler, eval_batches, unigram_entropy
from .brown import brown_splits, strip_brown_tags
from .documents import Document, SkipCounts, SplitDocuments, default_cache_dir
from .gpt2 import GPT2Tokenizer, load_gpt2
from .packaged import packaged_documents
from .prepare import TOKENIZERS, PreparedData, prepare_data
from .source_kinds import DataSource
from .sources import SOURCES, is_streaming, load_documents, load_splits, register_source, source_forms
from .token_file import build_token_file, load_token_file, read_manifest, token_file_is_current
from .tokenizer import BPETokenizer, Tokenizer, train_bpe

__all__ = [
    "BPETokenizer",
    "BatchSampler",
    "DataSource",
    "Document",
    "GPT2Tokenizer",
    "SOURCES",
    "TOKENIZERS",
    "PreparedData",
    "SkipCounts",
    "SplitDocuments",
    "Tokenizer",
    "brown_splits",
    "build_token_file",
    "default_cache_dir",
    "eval_batches",
    "is_streaming",
    "load_documents",
    "load_gpt2",
    "load_splits",
    "load_token_file",
    "packaged_documents",
    "prepare_data",
    "read_manifest",
    "register_source",
    "source_forms",
    "strip_brown_tags",
    "token_file_is_current",
    "train_bpe",
    "unigram_entropy",
]
