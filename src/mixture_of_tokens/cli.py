"""The `mot` command line: train, demo, compare, presets."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import ModelConfig, TrainConfig, field_help
from .counting import count_model
from .presets import PRESETS, get_preset

_CASTS = {"int": int, "float": float, "str": str}


def _add_config_fields(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    """One --flag per dataclass field; defaults stay None so the preset's values apply unless overridden."""
    group = parser.add_argument_group(title)
    helps = field_help(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        if f.type == "bool":
            group.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=f"{helps[f.name]} (default {default})",
            )
        else:
            group.add_argument(
                flag,
                dest=f.name,
                type=_CASTS[f.type],
                default=None,
                metavar=f.type.upper(),
                help=f"{helps[f.name]} (default {default!r})",
            )


def _overrides(args: argparse.Namespace, cls: type) -> dict:
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name) is not None}


def _configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    preset = get_preset(args.preset)
    model = dataclasses.replace(preset.model, **_overrides(args, ModelConfig))
    train = dataclasses.replace(preset.train, **_overrides(args, TrainConfig))
    return model, train


def _cmd_train(args: argparse.Namespace) -> None:
    from .train import check_run_settings, train

    model_config, train_config = _configs(args)
    check_run_settings(model_config, train_config)
    if args.dry_run:
        import torch

        from .model import Transformer

        with torch.device("meta"):
            model = Transformer(model_config)
        counts = count_model(model)
        print(f"{args.preset}: {counts.summary()}")
        print(f"blocks: {', '.join(model_config.block_ffn_kinds())}")
        print(f"tokens per step: {train_config.batch_size * model_config.max_seq_len:,}")
        return
    result = train(model_config, train_config, run_name=args.name or args.preset)
    print(f"[{args.name or args.preset}] final eval loss {result.final_eval_loss:.4f} -> {result.out_dir}")


def _cmd_demo(args: argparse.Namespace) -> None:
    from .data import prepare_data
    from .report import comparison_table, load_run, plot_runs
    from .train import train

    out_root = Path(args.out)
    runs = []
    data = None
    for name in ("tiny-dense", "tiny-mot"):
        preset = get_preset(name)
        train_config = dataclasses.replace(preset.train, out_dir=str(out_root / name))
        if args.steps:
            train_config = dataclasses.replace(
                train_config, steps=args.steps, eval_every=max(args.steps // 4, 1), warmup_steps=args.steps // 10
            )
        data = data or prepare_data(train_config.data, vocab_size=preset.model.vocab_size)
        train(preset.model, train_config, run_name=name, data=data)
        runs.append(load_run(out_root / name))
    print()
    print(comparison_table(runs))
    print(f"plot: {plot_runs(runs, out_root / 'demo.png')}")


def _cmd_compare(args: argparse.Namespace) -> None:
    from .report import comparison_table, load_run, plot_runs

    runs = [load_run(Path(d)) for d in args.runs]
    print(comparison_table(runs))
    print(f"plot: {plot_runs(runs, Path(args.plot))}")


def _cmd_presets(args: argparse.Namespace) -> None:
    import torch

    from .model import Transformer

    for name, preset in PRESETS.items():
        with torch.device("meta"):
            counts = count_model(Transformer(preset.model))
        print(f"{name:<20} {preset.description}\n{'':<20} {counts.summary()}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mot", description="Mixture of Tokens: train, compare and inspect models.")
    commands = parser.add_subparsers(dest="command", required=True)

    train_parser = commands.add_parser("train", help="train a model from a preset plus overrides")
    train_parser.add_argument("--preset", required=True, help=f"one of: {', '.join(PRESETS)}")
    train_parser.add_argument("--name", default="", help="run name (default: the preset name)")
    train_parser.add_argument("--dry-run", action="store_true", help="print sizes and FLOPs, do not train")
    _add_config_fields(train_parser, ModelConfig, "model (overrides the preset)")
    _add_config_fields(train_parser, TrainConfig, "training (overrides the preset)")
    train_parser.set_defaults(handler=_cmd_train)

    demo = commands.add_parser("demo", help="train tiny-dense and tiny-mot on the packaged corpus and compare")
    demo.add_argument("--out", default="runs/demo", help="directory for the two runs and the plot")
    demo.add_argument("--steps", type=int, default=0, help="steps per run (default: the presets' own)")
    demo.set_defaults(handler=_cmd_demo)

    compare = commands.add_parser("compare", help="table and plot of finished runs")
    compare.add_argument("runs", nargs="+", help="run directories")
    compare.add_argument("--plot", default="runs/compare.png", help="where to write the plot")
    compare.set_defaults(handler=_cmd_compare)

    presets = commands.add_parser("presets", help="list the presets with their sizes")
    presets.set_defaults(handler=_cmd_presets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.handler(args)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"mot {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
