"""`mot presets`: the named presets with their sizes, grouped by the figure of the paper they reproduce."""

from __future__ import annotations

import argparse

from .help_text import examples


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "presets",
        help="list the presets with their sizes, grouped by figure",
        **examples("mot presets", "mot train --preset tiny-mot --dry-run    # one preset's sizes, FLOPs and memory"),
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from ..counting import count_model
    from ..model import Transformer
    from ..presets import presets_by_figure

    for figure, presets in presets_by_figure().items():
        print(f"== {figure}")
        for preset in presets:
            with torch.device("meta"):
                counts = count_model(Transformer(preset.model))
            train = preset.train
            print(f"{preset.name:<36} {preset.description}")
            print(
                f"{'':<36} {counts.summary()}\n{'':<36} lr {train.lr:g}, {train.steps:,} steps of "
                f"{train.batch_size} x {preset.model.max_seq_len}, data {train.data}, tokenizer {train.tokenizer}"
            )
        print()
