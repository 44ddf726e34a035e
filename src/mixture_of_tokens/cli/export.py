"""`mot export --checkpoint RUN --to hf --out DIR`: a checkpoint as a Hugging Face transformers directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from .help_text import examples

EXAMPLES = examples(
    "mot export --checkpoint runs/tiny-mot --to hf --out exports/tiny-mot",
    "mot export --checkpoint runs/tiny-token-choice --to hf --out exports/tiny-tc --force    # old one moved aside",
    note='then, in Python (transformers only):\n  AutoModelForCausalLM.from_pretrained("exports/tiny-mot", '
    "trust_remote_code=True)",
)

TARGETS = ("hf",)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a checkpoint in another library's format (hf: transformers, trust_remote_code)",
        description=(
            "Write a checkpoint as a directory that transformers loads with AutoModelForCausalLM.from_pretrained(DIR, "
            "trust_remote_code=True): config.json, modeling_mot.py (plain PyTorch, no mixture-of-tokens import), "
            "model.safetensors, tokenizer files and a model card with MoT's batch rule. The copy's logits are checked "
            "against this package's before it is put in place. Dense, MoT and Token Choice blocks."
        ),
        **EXAMPLES,
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint or finished run directory")
    parser.add_argument("--to", required=True, choices=TARGETS, help="format: hf (Hugging Face transformers)")
    parser.add_argument("--out", required=True, help="directory to write (must not exist unless --force)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="when --out exists, move it aside to a sibling OUT.old-<timestamp> (never the checkpoint itself)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from ..extras import require

    require("transformers", "hf", purpose="mot export --to hf")  # before anything is read
    from ..export import export_hf
    from ..training.run_directory import new_output_directory

    with new_output_directory(Path(args.out), Path(args.checkpoint), force=args.force) as moved:
        result = export_hf(args.checkpoint, args.out, force=args.force)
    if moved is not None:
        print(f"moved what was in {args.out} aside to {moved}")
    print(f"wrote {result.directory}: {', '.join(result.files)}")
    rows, positions = result.checked_shape
    print(
        f"checked: transformers' logits equal this package's within {result.max_abs_diff:.2g} "
        f"on {rows} x {positions} random ids (float32)"
    )
    print(f"load it: AutoModelForCausalLM.from_pretrained({str(result.directory)!r}, trust_remote_code=True)")
