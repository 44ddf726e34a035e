"""`mot export --checkpoint RUN --to hf --out DIR`: a checkpoint as a Hugging Face transformers directory."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from .config_args import add_config_fields, handler, option
from .help_text import examples

EXAMPLES = examples(
    "mot export --checkpoint runs/tiny-mot --to hf --out exports/tiny-mot",
    "mot export --checkpoint runs/tiny-token-choice --to hf --out exports/tiny-tc --force    # old one moved aside",
    note='then, in Python (transformers only):\n  AutoModelForCausalLM.from_pretrained("exports/tiny-mot", '
    "trust_remote_code=True)    # a native export (llama-tiny-dense, ...) needs no trust_remote_code",
)

TARGETS = ("hf",)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write a checkpoint in another library's format (hf: transformers, natively or as remote code)",
        description=(
            "Write a checkpoint as a directory that transformers loads. A Llama-style model (RoPE, RMSNorm, SwiGLU) "
            "of dense and Token Choice blocks is written natively, by transformers' save_pretrained, as "
            "LlamaForCausalLM, Qwen3ForCausalLM, Qwen2MoeForCausalLM or Qwen3MoeForCausalLM, and loads with "
            "AutoModelForCausalLM.from_pretrained(DIR). Any other (MoT, the paper's block) is written as remote code, "
            "loaded with trust_remote_code=True: config.json, modeling_mot.py (plain PyTorch, no mixture-of-tokens "
            "import), model.safetensors, tokenizer files and a model card with MoT's batch rule. Either way the "
            "copy's logits are checked against this package's before it is put in place."
        ),
        **EXAMPLES,
    )
    add_config_fields(parser, ExportConfig)
    parser.set_defaults(handler=handler(run, ExportConfig))


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """Which checkpoint `mot export` writes, in which format, where."""

    checkpoint: str = option("checkpoint or finished run directory")
    target: str = option("format: hf (Hugging Face transformers)", flag="--to", choices=TARGETS)
    out: str = option("directory to write (must not exist unless --force)")
    force: bool = option(
        "when --out exists, move it aside to a sibling OUT.old-<timestamp> (never the checkpoint itself)", False
    )


def run(config: ExportConfig) -> None:
    from ..extras import require

    require("transformers", "hf", purpose="mot export --to hf")  # before anything is read
    from ..export import export_hf
    from ..training.run_directory import new_output_directory

    with new_output_directory(Path(config.out), Path(config.checkpoint), force=config.force) as moved:
        result = export_hf(config.checkpoint, config.out, force=config.force)
    if moved is not None:
        print(f"moved what was in {config.out} aside to {moved}")
    if result.native:
        print(f"wrote {result.directory} as transformers' native {result.architecture} (no remote code)")
    else:
        print(
            f"wrote {result.directory} as remote code ({result.architecture} in modeling_mot.py, trust_remote_code): "
            f"no native transformers architecture, as {result.native_problem}"
        )
    print(f"files: {', '.join(result.files)}")
    rows, positions = result.checked_shape
    print(
        f"checked: transformers' logits equal this package's within {result.max_abs_diff:.2g} "
        f"on {rows} x {positions} random ids (float32)"
    )
    remote = "" if result.native else ", trust_remote_code=True"
    print(f"load it: AutoModelForCausalLM.from_pretrained({str(result.directory)!r}{remote})")
