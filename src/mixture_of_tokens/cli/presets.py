"""`mot presets`: the named presets with their sizes."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("presets", help="list the presets with their sizes")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    import torch

    from ..counting import count_model
    from ..model import Transformer
    from ..presets import PRESETS

    for name, preset in PRESETS.items():
        with torch.device("meta"):
            counts = count_model(Transformer(preset.model))
        print(f"{name:<20} {preset.description}\n{'':<20} {counts.summary()}")
