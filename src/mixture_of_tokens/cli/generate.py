"""`mot generate --checkpoint DIR --prompt TEXT [--prompts-file F]`: KV-cached lock-step decoding."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from ..inference_config import GenerateConfig
from ..spelling import setting
from .config_args import add_config_fields, handler, option, overrides_of
from .help_text import examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate text from a checkpoint (batched, KV-cached)",
        **examples(
            'mot generate --checkpoint runs/tiny-mot --prompt "The cat"',
            'mot generate --checkpoint runs/tiny-mot --prompt "Once" --prompt "The ship" --temperature 0.8 --top-k 40',
            "mot generate --checkpoint runs/tiny-mot --prompts-file prompts.txt --max-new-tokens 64",
        ),
    )
    add_config_fields(parser, GenerateRunOptions)
    parser.set_defaults(handler=handler(run, GenerateRunOptions))


def _no_prompt() -> ValueError:
    return ValueError(f"no prompt given; pass {setting('prompt')} TEXT (repeatable) or {setting('prompts_file')} FILE.")


@dataclass(frozen=True, kw_only=True)
class GenerateRunOptions:
    """`mot generate`: the checkpoint, its prompts, and the decoding settings given (GenerateConfig fields)."""

    checkpoint: str = option("checkpoint or finished run directory")
    prompt: tuple[str, ...] = option("a prompt (repeatable)", (), repeatable=True)
    prompts_file: str | None = option("a text file with one prompt per line", None)
    decoding: dict = overrides_of(GenerateConfig, "decoding")

    def __post_init__(self) -> None:
        if not self.prompt and not self.prompts_file:
            raise _no_prompt()
        GenerateConfig(**self.decoding)  # a bad decoding setting is refused before the checkpoint is read


def run(options: GenerateRunOptions) -> None:
    import torch

    from ..evaluation import is_batch_dependent, load_checkpoint, load_texts
    from ..generate import generate_text
    from ..layers import batch_multiple

    prompts = list(options.prompt)
    if options.prompts_file:
        path = Path(options.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"{setting('prompts_file', path)} does not exist.")
        prompts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise _no_prompt()
    config = GenerateConfig(**options.decoding)
    loaded = load_checkpoint(options.checkpoint, config.device)
    loaded.model_config.check_causal("`mot generate`")
    if config.threads:
        torch.set_num_threads(config.threads)
    max_len = loaded.model_config.max_seq_len
    longest = max(len(ids) for ids in loaded.tokenizer.encode_batch(prompts))
    if longest >= max_len:
        raise ValueError(
            f"a prompt is {longest} tokens long; the context is {max_len} tokens (prompts must be shorter)."
        )
    if longest + config.max_new_tokens > max_len:
        print(
            f"note: generation stops at the {max_len}-token context ({max_len - longest} new tokens for the longest)."
        )
    filler = None
    group = batch_multiple(loaded.model_config)
    if is_batch_dependent(loaded.model_config) and len(prompts) % group:
        _, filler = load_texts(loaded, progress=False)
        print(f"MoT: {len(prompts)} prompt(s) decoded in lock-step with held-out filler rows up to groups of {group}")
    outputs = generate_text(
        loaded.model,
        loaded.tokenizer,
        prompts,
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_k=config.top_k,
        top_p=config.top_p,
        seed=config.seed,
        filler_tokens=filler,
    )
    for prompt, output in zip(prompts, outputs):
        print(f"--- {prompt!r}\n{prompt}{output}")
