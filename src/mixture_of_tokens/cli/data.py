"""`mot data prepare` (tokenise a source into cached token files) and `mot data info` (show what is cached)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .help_text import examples


def known_source(value: str) -> str:
    """An argparse type: the source string when the registry knows its form, else one sentence naming them."""
    from ..data.sources import resolve_source

    try:
        resolve_source(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def sources_note() -> str:
    """The "sources:" block of `mot data prepare --help`, one line per registered source."""
    from ..data.sources import SOURCES

    width = max(len(form) for form in SOURCES)
    return "sources:\n" + "\n".join(f"  {form:<{width}}  {kind.help}" for form, kind in SOURCES.items())


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..data.sources import source_forms

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
    prepare.add_argument(
        "--source",
        default="packaged",
        type=known_source,
        help=f"{source_forms(' | ', quote=False)} (each described under sources: below)",
    )
    prepare.add_argument("--tokenizer", default="bpe", help="bpe (trained on the source) | gpt2 (50,257 tokens)")
    prepare.add_argument("--vocab-size", type=int, default=8192, help="BPE vocabulary size (ignored for gpt2)")
    prepare.add_argument(
        "--max-tokens", type=int, default=None, help="streaming sources: train tokens to take (eval gets 1/20)"
    )
    prepare.add_argument(
        "--max-documents", type=int, default=None, help="streaming sources: train documents to take (eval gets 1/20)"
    )
    prepare.add_argument("--seed", type=int, default=0, help="streaming sources: seed of the shuffle buffer")
    prepare.add_argument("--shuffle-buffer", type=int, default=10_000, help="streaming sources: shuffle buffer size")
    prepare.add_argument("--text-column", default="text", help="hf: sources: the dataset column that holds the text")
    prepare.add_argument("--cache-dir", default=None, help="cache root (default: $MOT_CACHE_DIR or ~/.cache/...)")
    prepare.set_defaults(handler=run_prepare)

    info = commands.add_parser(
        "info",
        help="print the manifests of prepared token files",
        **examples("mot data info", "mot data info --source packaged --cache-dir /tmp/mot-cache"),
    )
    info.add_argument("--source", default=None, help="only this source (default: everything in the cache)")
    info.add_argument("--cache-dir", default=None, help="cache root (default: $MOT_CACHE_DIR or ~/.cache/...)")
    info.set_defaults(handler=run_info)


def _cache_dir(value: str | None) -> Path:
    from ..data import default_cache_dir

    return Path(value).expanduser() if value else default_cache_dir()


def run_prepare(args: argparse.Namespace) -> None:
    from ..data import prepare_data
    from . import UserError

    try:
        data = prepare_data(
            args.source,
            vocab_size=args.vocab_size,
            cache_dir=_cache_dir(args.cache_dir),
            tokenizer=args.tokenizer,
            max_tokens=args.max_tokens,
            max_documents=args.max_documents,
            seed=args.seed,
            shuffle_buffer=args.shuffle_buffer,
            text_column=args.text_column,
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


def run_info(args: argparse.Namespace) -> None:
    from ..data.sources import source_slug

    cache = _cache_dir(args.cache_dir)
    pattern = f"{source_slug(args.source)}/*/train.json" if args.source else "*/*/train.json"
    directories = sorted(path.parent for path in cache.glob(pattern))
    if not directories:
        what = f"for source {args.source!r}" if args.source else "at all"
        hint = args.source or "SOURCE"
        raise ValueError(f"Nothing is prepared {what} under {cache}; run `mot data prepare --source {hint}` first.")
    print(f"cache: {cache}")
    print("\n\n".join(describe(directory) for directory in directories))
