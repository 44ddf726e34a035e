"""`mot generate --checkpoint DIR --prompt TEXT [--prompts-file F]`: KV-cached lock-step decoding."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..inference_config import GenerateConfig
from .config_args import add_config_fields, overrides
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
    parser.add_argument("--checkpoint", required=True, help="checkpoint or finished run directory")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    parser.add_argument("--prompts-file", default=None, help="a text file with one prompt per line")
    add_config_fields(parser, GenerateConfig, "decoding")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from ..evaluation import is_batch_dependent, load_checkpoint, load_texts
    from ..generate import generate_text
    from ..layers import batch_multiple

    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts-file {path} does not exist.")
        prompts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError("no prompt given; pass --prompt TEXT (repeatable) or --prompts-file FILE.")
    config = GenerateConfig(**overrides(args, GenerateConfig))
    loaded = load_checkpoint(args.checkpoint, config.device)
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
