"""`mot data prepare` (tokenise a source into cached token files) and `mot data info` (show what is cached)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.sources import resolve_source, source_forms
from ..spelling import setting
from .config_args import add_config_fields, handler, option
from .help_text import examples

CACHE_DIR_HELP = "cache root (default: $MOT_CACHE_DIR or ~/.cache/...)"


def sources_note() -> str:
    """The "sources:" block of `mot data prepare --help`, one line per registered source."""
    from ..data.sources import SOURCES

    width = max(len(form) for form in SOURCES)
    return "sources:\n" + "\n".join(f"  {form:<{width}}  {kind.help}" for form, kind in SOURCES.items())


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="prepare token files and show what is cached",
        **examples("mot data prepare --source packaged+brown", "mot data info"),
    )
    commands = parser.add_subparsers(dest="data_command", required=True)

    prepare = commands.add_parser(
        "prepare",
        help="tokenise a source into cached train/eval token files",
        **examples(
            "mot data prepare    # the packaged corpus, an 8192-token BPE trained on it",
            "mot data prepare --source text:my_corpus/ --vocab-size 4096",
            "mot data prepare --source c4 --tokenizer gpt2 --max-tokens 20000000",
            note=sources_note(),
        ),
    )
    add_config_fields(prepare, DataPrepareConfig)
    prepare.set_defaults(handler=handler(run_prepare, DataPrepareConfig))

    info = commands.add_parser(
        "info",
        help="print the manifests of prepared token files",
        **examples("mot data info", "mot data info --source packaged --cache-dir /tmp/mot-cache"),
    )
    add_config_fields(info, DataInfoConfig)
    info.set_defaults(handler=handler(run_info, DataInfoConfig))


@dataclass(frozen=True, kw_only=True)
class DataPrepareConfig:
    """`mot data prepare`: which source to tokenise, with which tokenizer, how much of a stream, and where to."""

    source: str = option(f"{source_forms(' | ', quote=False)} (each described under sources: below)", "packaged")
    tokenizer: str = option("bpe (trained on the source) | gpt2 (50,257 tokens)", "bpe")
    vocab_size: int = option("BPE vocabulary size (ignored for gpt2)", 8192)
    max_tokens: int | None = option("streaming sources: train tokens to take (eval gets 1/20)", None)
    max_documents: int | None = option("streaming sources: train documents to take (eval gets 1/20)", None)
    seed: int = option("streaming sources: seed of the shuffle buffer", 0)
    shuffle_buffer: int = option("streaming sources: shuffle buffer size", 10_000)
    text_column: str = option("hf: sources: the dataset column that holds the text", "text")
    cache_dir: str | None = option(CACHE_DIR_HELP, None)

    def __post_init__(self) -> None:
        try:
            resolve_source(self.source)  # an unknown source is one sentence naming the registered forms
        except ValueError as error:
            raise ValueError(f"{setting('source')}: {error}") from None


@dataclass(frozen=True, kw_only=True)
class DataInfoConfig:
    """`mot data info`: the cache to read, and one source of it or everything."""

    source: str | None = option("only this source (default: everything in the cache)", None)
    cache_dir: str | None = option(CACHE_DIR_HELP, None)


def _cache_dir(value: str | None) -> Path:
    from ..data import default_cache_dir

    return Path(value).expanduser() if value else default_cache_dir()


def run_prepare(config: DataPrepareConfig) -> None:
    from ..data import prepare_data
    from . import UserError

    try:
        data = prepare_data(
            config.source,
            vocab_size=config.vocab_size,
            cache_dir=_cache_dir(config.cache_dir),
            tokenizer=config.tokenizer,
            max_tokens=config.max_tokens,
            max_documents=config.max_documents,
            seed=config.seed,
            shuffle_buffer=config.shuffle_buffer,
            text_column=config.text_column,
        )
    except RuntimeError as error:  # npm, hub or tokenizer unavailable: say what to do, no traceback
        raise UserError(str(error)) from None
    print(describe(Path(data.manifest["directory"])))


def _split_line(split: str, manifest: dict[str, Any], directory: Path) -> str:
    entropy = manifest.get("unigram_entropy")
    if entropy is None and manifest.get("n_tokens"):  # manifests written before entropy was stored
        from ..data import load_token_file, unigram_entropy

        entropy = unigram_entropy(load_token_file(directory / f"{split}.bin"), int(manifest["vocab_size"]))
    entropy_text = f"{entropy:.3f} nats" if entropy is not None else "n/a"
    line = f"  {split:<5} {manifest.get('n_documents', 0):>9,} documents {manifest.get('n_tokens', 0):>14,} tokens"
    line += f"  unigram entropy {entropy_text}  file {directory / f'{split}.bin'}"
    if manifest.get("max_tokens") is not None or manifest.get("max_documents") is not None:
        ran_out = " (stream ran out first)" if manifest.get("stream_exhausted") else ""
        line += f"\n        budget: max_tokens={manifest.get('max_tokens')} "
        line += f"max_documents={manifest.get('max_documents')}{ran_out}"
    return line


def describe(directory: Path) -> str:
    """Human summary of one prepared directory (a source with one tokenizer)."""
    from ..data import SkipCounts, read_manifest

    manifests = {split: read_manifest(directory / f"{split}.bin") or {} for split in ("train", "eval")}
    train = manifests["train"]
    skipped = SkipCounts.from_dict(train.get("skipped", {}))
    lines = [
        f"{train.get('source', '?')}  [{directory}]",
        f"  tokenizer {train.get('tokenizer', '?')} (vocab {train.get('vocab_size', '?')}, eos "
        f"{train.get('eos_id', '?')}, {train.get('dtype', '?')}, fingerprint "
        f"{str(train.get('tokenizer_fingerprint', '?'))[:16]}...)",
        f"  skipped: {skipped.summary()}",
    ]
    lines += [_split_line(split, manifests[split], directory) for split in ("train", "eval") if manifests[split]]
    return "\n".join(lines)


def run_info(config: DataInfoConfig) -> None:
    from ..data.sources import source_slug

    cache = _cache_dir(config.cache_dir)
    pattern = f"{source_slug(config.source)}/*/train.json" if config.source else "*/*/train.json"
    directories = sorted(path.parent for path in cache.glob(pattern))
    if not directories:
        what = f"for source {config.source!r}" if config.source else "at all"
        hint = config.source or "SOURCE"
        raise ValueError(f"Nothing is prepared {what} under {cache}; run `mot data prepare --source {hint}` first.")
    print(f"cache: {cache}")
    print("\n\n".join(describe(directory) for directory in directories))
