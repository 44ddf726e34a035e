"""`mot audit [CHECKPOINT_DIR | --preset NAME]`: future-token leakage and cross-sequence coupling, per layer type
or for a whole model."""

from __future__ import annotations

import argparse
import json

from .help_text import examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "audit",
        help="perturb one token and report which outputs move (future-token leakage, cross-sequence coupling)",
        description=(
            "Without arguments: audit every feed-forward layer type (dense, MoT across the batch and within "
            "sequences, Expert Choice, Token Choice in its group, dropless and batch scopes) on an input where Token "
            "Choice capacity binds. With a checkpoint "
            "directory or --preset: audit that whole model on random token ids."
        ),
        **examples("mot audit", "mot audit --preset tiny-mot --seq-len 32", "mot audit runs/tiny-mot --json"),
    )
    parser.add_argument("checkpoint", nargs="?", help="checkpoint or finished run directory (default: layer types)")
    parser.add_argument("--preset", help="audit a freshly initialised model of this preset instead")
    parser.add_argument("--batch-size", type=int, help="sequences (default: 8 for layers; 2 groups for models)")
    parser.add_argument("--seq-len", type=int, default=16, help="sequence length")
    parser.add_argument("--sequence", type=int, default=0, help="which sequence gets the perturbed token")
    parser.add_argument("--position", type=int, help="position t of the perturbed token (default: the last)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the layers and inputs")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from ..audit import audit_layer_types, audit_model, default_batch, format_table

    if args.checkpoint and args.preset:
        raise ValueError("give either a checkpoint directory or --preset, not both.")
    if args.seq_len < 1 or (args.batch_size is not None and args.batch_size < 1):
        raise ValueError("--seq-len and --batch-size must be positive integers.")
    if args.checkpoint or args.preset:
        model, name = _load(args)
        batch = args.batch_size or default_batch(model.config)
        results = [
            audit_model(
                model,
                name=name,
                batch=batch,
                seq_len=args.seq_len,
                sequence=args.sequence,
                position=args.position,
                seed=args.seed,
            )
        ]
    else:
        results = audit_layer_types(
            batch=args.batch_size or 8,
            seq_len=args.seq_len,
            sequence=args.sequence,
            position=args.position,
            seed=args.seed,
        )
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print(format_table(results))


def _load(args: argparse.Namespace):
    import torch

    from ..model import Transformer

    if args.preset:
        from ..presets import get_preset

        preset = get_preset(args.preset)
        torch.manual_seed(args.seed)
        return Transformer(preset.model).eval(), f"preset {preset.name}"
    from ..checkpoint import load_model

    model, _, _ = load_model(args.checkpoint)
    return model, str(args.checkpoint)
