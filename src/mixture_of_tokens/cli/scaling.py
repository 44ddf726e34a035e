"""`mot scaling plan|predict|fit`: the fine-grained scaling law of Krajewski et al. 2024 (docs/method.md §6)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

from .help_text import examples


class _DeprecatedAlias(argparse.Action):
    """Stores like the flag it stands for and says which flag to use instead (on stderr)."""

    def __init__(self, *args, replacement: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"mot scaling: warning: {option_string} is deprecated; use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


PLAN_PRESET = "mot-medium-32e"
"""The preset `mot scaling plan` builds its `mot train` command on (C4, GPT-2 tokens, 256 x 256 a step)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scaling",
        help="fine-grained scaling law: plan a compute budget, predict a loss, fit runs",
        **examples(
            "mot scaling plan --flops 1e20",
            "mot scaling predict --N 1e8 --D 2e9 --granularity 8",
            "mot scaling fit --runs runs/ --out runs/law.json",
        ),
    )
    commands = parser.add_subparsers(dest="scaling_command", required=True)

    plan = commands.add_parser(
        "plan",
        help="compute-optimal granularity, shape and tokens for a FLOP budget",
        **examples(
            "mot scaling plan --flops 1e20    # prints a `mot train` command for the planned model",
            "mot scaling plan --flops 1e18:1e25 --plot runs/scaling_plan.png",
            "mot scaling plan --flops 1e18 --preset tiny-mot --granularities 1,8,32",
        ),
    )
    plan.add_argument(
        "--flops", required=True, help="training FLOPs: one budget (1e21) or a range LOW:HIGH[:COUNT] (1e18:1e25)"
    )
    plan.add_argument(
        "--granularities", default="1,2,4,8,16,32,64,128,256", help="comma-separated granularities to choose from"
    )
    plan.add_argument("--expansion", type=float, default=64.0, help="expansion rate = MoT group size (law fit: 64)")
    plan.add_argument("--law", default="", help="coefficients JSON from `mot scaling fit --out` (default: paper's)")
    plan.add_argument(
        "--preset",
        default=PLAN_PRESET,
        help="preset the printed `mot train` command starts from: its vocabulary, context, data and training "
        f"settings, the planned shape (default {PLAN_PRESET})",
    )
    plan.add_argument("--plot", default="runs/scaling_plan.png", help="plot path for a range of budgets")
    plan.add_argument("--json", action="store_true", help="print JSON instead of text")
    plan.set_defaults(handler=run_plan)

    predict = commands.add_parser(
        "predict",
        help="predicted loss of one model from the law",
        **examples(
            "mot scaling predict --N 4.65e9 --D 4.07e9 --granularity 8",
            "mot scaling predict --N 1e9 --D 2e10 --dense",
        ),
    )
    predict.add_argument("--N", dest="params", type=float, required=True, help="non-embedding parameters")
    predict.add_argument("--D", dest="tokens", type=float, required=True, help="training tokens")
    predict.add_argument("--granularity", type=float, default=1.0, help="granularity k = d_ff / expert width")
    # legacy alias of --granularity (G now means group size): same dest, hidden from --help, warns when used
    predict.add_argument(
        "--G", dest="granularity", type=float, default=argparse.SUPPRESS, help=argparse.SUPPRESS,  # legacy alias
        action=_DeprecatedAlias, replacement="--granularity",
    )  # fmt: skip
    predict.add_argument("--dense", action="store_true", help="use the dense law (ignores --granularity)")
    predict.add_argument("--law", default="", help="coefficients JSON from `mot scaling fit --out`")
    predict.add_argument("--json", action="store_true", help="print JSON instead of text")
    predict.set_defaults(handler=run_predict)

    fit = commands.add_parser(
        "fit",
        help="fit the law to runs (a CSV/JSON table or a folder of run directories)",
        **examples(
            "mot scaling fit --runs runs/ --out runs/law.json    # every finished run directory under runs/",
            "mot scaling fit --runs runs.csv --kind dense --bootstrap 0 --json    # a table: N, D, granularity, loss",
            "mot scaling plan --flops 1e20 --law runs/law.json    # plan with the fitted coefficients",
        ),
    )
    fit.add_argument(
        "--runs", required=True, help="a .csv/.json table (N, D, granularity, loss[, name, kind]) or a folder"
    )
    fit.add_argument(
        "--kind", choices=("fine-grained", "dense"), default="fine-grained", help="which law (dense: dense runs only)"
    )
    fit.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for 95%% intervals (0: none)")
    fit.add_argument("--holdout", type=float, default=0.2, help="fraction of runs held out to measure RMSE")
    fit.add_argument("--seed", type=int, default=0, help="seed for the bootstrap and the held-out split")
    fit.add_argument("--plot", default="runs/scaling_fit.png", help="predicted-vs-observed plot path")
    fit.add_argument("--out", default="", help="write the coefficients as JSON here (for plan/predict --law)")
    fit.add_argument("--json", action="store_true", help="print JSON instead of text")
    fit.set_defaults(handler=run_fit)


def _laws(path: str):
    from ..scaling import PAPER_DENSE_LAW, PAPER_LAW, load_laws

    return load_laws(Path(path)) if path else (PAPER_LAW, PAPER_DENSE_LAW)


def _granularities(text: str) -> tuple[int, ...]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise ValueError(f"--granularities {text!r} must be comma-separated positive integers (e.g. 1,2,4,8).")
    return tuple(values)


def planned_model(plan, preset_name: str):
    """The planned MoT shape on a preset's model: its vocabulary, context and other settings, the plan's sizes,
    MoT in every block as the law assumes (`MoTPreset.model_config`)."""
    from ..config import ModelConfig
    from ..presets import get_preset

    base = get_preset(preset_name).model
    shape = {f.name for f in dataclasses.fields(plan.mot)} | {"ffn", "ffn_blocks"}
    kept = {f.name: getattr(base, f.name) for f in dataclasses.fields(ModelConfig) if f.name not in shape}
    return plan.mot.model_config(**kept)


def train_command(plan, preset_name: str) -> tuple[str, str]:
    """A pasteable `mot train` command that builds the planned model on `preset_name` and trains it on the planned
    tokens, and a note on how --steps was computed."""
    from ..counting import human
    from ..layers import batch_multiple
    from ..presets import get_preset
    from .config_args import config_flags

    preset = get_preset(preset_name)
    model = planned_model(plan, preset_name)
    flags = config_flags(model, base=preset.model)
    batch, accum = preset.train.batch_size, preset.train.grad_accum_steps
    whose = f"{preset_name}'s batch x context"
    multiple = batch_multiple(model)  # rows the layer couples in a micro-batch: round the batch up to it
    if (batch // accum) % multiple:
        batch = math.ceil(batch // accum / multiple) * multiple * accum
        flags += f" --batch-size {batch}"
        whose = f"batch x context; {preset_name}'s batch rounded up to a multiple of group size {multiple}"
    tokens_per_step = batch * model.max_seq_len
    steps = max(1, math.ceil(plan.best.tokens / tokens_per_step))
    name = f"planned-{plan.flops:.3g}".replace("+", "")  # a valid run name: planned-1e20, planned-3.16e19
    command = f"mot train --preset {preset_name} {flags} --steps {steps} --name {name}"
    note = (
        f"--steps {steps} = D {human(plan.best.tokens)} tokens / ({batch} x {model.max_seq_len} tokens a step, "
        f"{whose}); learning rate, data and other training settings are {preset_name}'s"
    )
    return command, note


def _describe(plan, preset_name: str = PLAN_PRESET) -> str:
    from ..counting import human

    best, dense, mot = plan.best, plan.dense, plan.mot
    command, note = train_command(plan, preset_name)
    active = 12 * best.d_model**2 * best.n_blocks
    lines = [
        f"budget {plan.flops:.3g} training FLOPs, expansion rate {plan.expansion:g}",
        f"optimal granularity {best.granularity} (expert width d_ff / {best.granularity})",
        f"model: n_blocks {best.n_blocks} (continuous optimum {best.n_blocks_continuous:.2f}), d_model {best.d_model}, "
        f"N = {human(best.params)} non-embedding params ({human(active)} active), D = {human(best.tokens)} tokens",
        f"predicted loss {best.loss:.4f} (continuous optimum {best.loss_continuous:.4f})",
        f"MoT preset {mot.name}: group size {mot.group_size}, {mot.n_experts} experts of width {mot.expert_size}, "
        f"d_ff {mot.d_ff}",
        f"train it: {command}",
        f"  ({note})",
        f"dense at the same budget: n_blocks {dense.n_blocks}, d_model {dense.d_model}, N = {human(dense.params)}, "
        f"D = {human(dense.tokens)}, predicted loss {dense.loss:.4f}",
        f"dense needs {plan.dense_flop_multiple:.1f}x the FLOPs ({plan.dense_flops_to_match:.3g}) to match "
        f"loss {best.loss_continuous:.4f}",
        "",
        f"{'granularity':>11} {'n_blocks':>8} {'d_model':>7} {'N':>9} {'D':>9} {'loss':>7}",
    ]
    for p in plan.per_granularity:
        mark = "  <- optimal" if p is best else ""
        lines.append(
            f"{p.granularity:>11} {p.n_blocks:>8} {p.d_model:>7} {human(p.params):>9} {human(p.tokens):>9} "
            f"{p.loss_continuous:>7.4f}{mark}"
        )
    return "\n".join(lines)


def _table(plans) -> str:
    from ..counting import human

    header = (
        f"{'FLOPs':>8} {'granularity':>11} {'n_blocks':>8} {'d_model':>7} {'N':>9} {'D':>9} {'loss':>7} "
        f"{'k=1':>7} {'dense':>7} {'dense x':>8}  MoT"
    )
    lines = [header, "-" * len(header)]
    for p in plans:
        b = p.best
        k1 = next((q.loss_continuous for q in p.per_granularity if q.granularity == 1), float("nan"))
        lines.append(
            f"{p.flops:>8.2g} {b.granularity:>11} {b.n_blocks:>8} {b.d_model:>7} {human(b.params):>9} "
            f"{human(b.tokens):>9} {b.loss_continuous:>7.4f} {k1:>7.4f} {p.dense.loss_continuous:>7.4f} "
            f"{p.dense_flop_multiple:>8.1f}  {p.mot.name}"
        )
    return "\n".join(lines)


def run_plan(args: argparse.Namespace) -> None:
    from ..presets import get_preset
    from ..scaling import parse_budgets, plan
    from ..scaling.plots import plot_plans

    budgets = parse_budgets(args.flops)
    granularities = _granularities(args.granularities)
    law, dense_law = _laws(args.law)
    plans = [
        plan(f, law=law, dense_law=dense_law, granularities=granularities, expansion=args.expansion) for f in budgets
    ]
    get_preset(args.preset)  # an unknown name is an error before anything is printed
    if args.json:
        data = [{**p.as_dict(), "train_command": train_command(p, args.preset)[0]} for p in plans]
        print(json.dumps(data[0] if len(plans) == 1 else data, indent=2))
        return
    if len(plans) == 1:
        print(_describe(plans[0], args.preset))
        return
    print(_table(plans))
    print(
        "loss columns are the continuous optima (k=1: at granularity 1); n_blocks, d_model, N, D are the rounded shape"
    )
    print(f"plot: {plot_plans(plans, Path(args.plot))}")


def run_predict(args: argparse.Namespace) -> None:
    for name in ("params", "tokens", "granularity"):
        value = getattr(args, name)
        if not value > 0:
            flag = {"params": "--N", "tokens": "--D", "granularity": "--granularity"}[name]
            raise ValueError(f"{flag} must be a positive number, got {value}.")
    law, dense_law = _laws(args.law)
    chosen = dense_law if args.dense else law
    loss = float(chosen.loss(args.params, args.tokens, args.granularity))
    kind = "dense" if args.dense else "fine-grained"
    if args.json:
        print(
            json.dumps({"N": args.params, "D": args.tokens, "granularity": args.granularity, "law": kind, "loss": loss})
        )
    else:
        where = "" if args.dense else f", granularity {args.granularity:g}"
        print(f"{kind} law: N = {args.params:.3g}, D = {args.tokens:.3g}{where}: predicted loss {loss:.4f}")


def run_fit(args: argparse.Namespace) -> None:
    from ..scaling import fit_law, load_runs
    from ..scaling.fit import check_runs
    from ..scaling.plots import plot_fit

    if args.bootstrap < 0 or not 0 <= args.holdout < 1:
        raise ValueError("--bootstrap must be >= 0 and --holdout in [0, 1).")
    runs = load_runs(args.runs)
    other = "fine-grained" if args.kind == "dense" else "dense"  # run kinds are the law kinds
    chosen = [r for r in runs if r.kind == args.kind]
    if len(chosen) < len(runs) and not chosen:
        raise ValueError(
            f"--runs {args.runs} holds no {args.kind} runs for a {args.kind} fit (all {len(runs)} are {other}; "
            "a table marks dense runs with a kind column)."
        )
    check_runs(chosen, args.kind)
    result = fit_law(
        chosen,
        kind=args.kind,
        n_bootstrap=args.bootstrap,
        holdout_fraction=args.holdout,
        seed=args.seed,
        progress=not args.json,
    )
    key = "fine_grained" if args.kind == "fine-grained" else "dense"
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        # keep the other law already in the file, so one file can hold a fine-grained and a dense fit
        saved = json.loads(out.read_text()) if out.is_file() else {}
        saved = saved if isinstance(saved, dict) else {}
        out.write_text(json.dumps({**saved, key: result.as_dict()}, indent=2))
    plot = plot_fit(result, chosen, Path(args.plot)) if args.plot else None
    if args.json:
        print(json.dumps({key: result.as_dict()}, indent=2))
        return
    skipped = len(runs) - len(chosen)
    print(f"{args.kind} law fitted to {len(chosen)} runs" + (f" ({skipped} {other} runs left out)" if skipped else ""))
    print(f"{'coef':>6} {'value':>10} {'95% interval':>24}")
    for name, value in result.law.as_dict().items():
        low, high = result.intervals.get(name, (float("nan"), float("nan")))
        print(f"{name:>6} {value:>10.4g} [{low:>10.4g}, {high:>10.4g}]")
    print(f"train RMSE {result.train_rmse:.4f} nats", end="")
    if result.heldout_rmse is not None:
        print(f"; held-out RMSE {result.heldout_rmse:.4f} nats on {result.n_heldout} runs (separate fit)")
    else:
        print("; too few runs to hold any out")
    if args.out:
        print(f"coefficients: {args.out}")
    if plot:
        print(f"plot: {plot}")
