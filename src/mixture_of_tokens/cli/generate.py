"""`mot generate --checkpoint DIR --prompt TEXT [--prompts-file F]`: KV-cached lock-step decoding."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("generate", help="generate text from a checkpoint (batched, KV-cached)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint or finished run directory")
    parser.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    parser.add_argument("--prompts-file", default=None, help="a text file with one prompt per line")
    parser.add_argument("--max-new-tokens", type=int, default=48, help="tokens to generate per prompt")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy; > 0: sample")
    parser.add_argument("--top-k", type=int, default=0, help="sample from the k most likely tokens (0: all)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (1: off)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling and of MoT filler rows")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from ..evaluation import is_batch_dependent, load_checkpoint, load_texts
    from ..generate import check_sampling, generate_text

    prompts = list(args.prompt)
    if args.prompts_file:
        path = Path(args.prompts_file)
        if not path.is_file():
            raise FileNotFoundError(f"--prompts-file {path} does not exist.")
        prompts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError("no prompt given; pass --prompt TEXT (repeatable) or --prompts-file FILE.")
    check_sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    if args.threads < 0:
        raise ValueError(f"--threads must be >= 0 (0: torch default), got {args.threads}.")
    loaded = load_checkpoint(args.checkpoint, args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    max_len = loaded.model_config.max_seq_len
    longest = max(len(ids) for ids in loaded.tokenizer.encode_batch(prompts))
    if longest >= max_len:
        raise ValueError(
            f"a prompt is {longest} tokens long; the context is {max_len} tokens (prompts must be shorter)."
        )
    if longest + args.max_new_tokens > max_len:
        print(
            f"note: generation stops at the {max_len}-token context ({max_len - longest} new tokens for the longest)."
        )
    filler = None
    group = loaded.model_config.group_size
    if is_batch_dependent(loaded.model_config) and len(prompts) % group:
        _, filler = load_texts(loaded, progress=False)
        print(f"MoT: {len(prompts)} prompt(s) decoded in lock-step with held-out filler rows up to groups of {group}")
    outputs = generate_text(
        loaded.model,
        loaded.tokenizer,
        prompts,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        filler_tokens=filler,
    )
    for prompt, output in zip(prompts, outputs):
        print(f"--- {prompt!r}\n{prompt}{output}")
