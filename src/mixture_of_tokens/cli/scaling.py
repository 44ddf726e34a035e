"""`mot scaling plan|predict|fit`: the fine-grained scaling law of Krajewski et al. 2024 (docs/method.md §6)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from ..spelling import setting
from .config_args import add_config_fields, field_setting, handler, option
from .help_text import examples


class _DeprecatedAlias(argparse.Action):
    """Stores like the flag it stands for and says which flag to use instead (on stderr)."""

    def __init__(self, *args, replacement: str, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.replacement = replacement

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"mot scaling: warning: {option_string} is deprecated; use {self.replacement}", file=sys.stderr)
        setattr(namespace, self.dest, values)


FIT_KINDS = ("fine-grained", "dense")
"""The laws `mot scaling fit` fits (run kinds are the law kinds)."""

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
    add_config_fields(plan, ScalingPlanConfig)
    plan.set_defaults(handler=handler(run_plan, ScalingPlanConfig))

    predict = commands.add_parser(
        "predict",
        help="predicted loss of one model from the law",
        **examples(
            "mot scaling predict --N 4.65e9 --D 4.07e9 --granularity 8",
            "mot scaling predict --N 1e9 --D 2e10 --dense",
        ),
    )
    add_config_fields(predict, ScalingPredictConfig)
    # legacy alias of --granularity (G now means group size): same dest, hidden from --help, warns when used
    predict.add_argument(
        "--G", dest="granularity", type=float, default=argparse.SUPPRESS, help=argparse.SUPPRESS,  # legacy alias
        action=_DeprecatedAlias, replacement="--granularity",
    )  # fmt: skip
    predict.set_defaults(handler=handler(run_predict, ScalingPredictConfig))

    fit = commands.add_parser(
        "fit",
        help="fit the law to runs (a CSV/JSON table or a folder of run directories)",
        **examples(
            "mot scaling fit --runs runs/ --out runs/law.json    # every finished run directory under runs/",
            "mot scaling fit --runs runs.csv --kind dense --bootstrap 0 --json    # a table: N, D, granularity, loss",
            "mot scaling plan --flops 1e20 --law runs/law.json    # plan with the fitted coefficients",
        ),
    )
    add_config_fields(fit, ScalingFitConfig)
    fit.set_defaults(handler=handler(run_fit, ScalingFitConfig))


@dataclass(frozen=True, kw_only=True)
class ScalingPlanConfig:
    """`mot scaling plan`: the FLOP budget(s), the granularities and law to plan with, and how to print the plan."""

    flops: str = option("training FLOPs: one budget (1e21) or a range LOW:HIGH[:COUNT] (1e18:1e25)")
    granularities: str = option("comma-separated granularities to choose from", "1,2,4,8,16,32,64,128,256")
    expansion: float = option("expansion rate = MoT group size (law fit: 64)", 64.0)
    law: str = option("coefficients JSON from `mot scaling fit --out` (default: paper's)", "")
    preset: str = option(
        "preset the printed `mot train` command starts from: its vocabulary, context, data and training "
        f"settings, the planned shape (default {PLAN_PRESET})",
        PLAN_PRESET,
    )
    plot: str = option("plot path for a range of budgets", "runs/scaling_plan.png")
    json: bool = option("print JSON instead of text", False)

    def __post_init__(self) -> None:
        from ..presets import get_preset
        from ..scaling import parse_budgets

        parse_budgets(self.flops)
        _granularities(self.granularities)
        get_preset(self.preset)  # an unknown name is an error before anything is planned or printed

    @property
    def granularity_choices(self) -> tuple[int, ...]:
        """The granularities to choose from, as integers."""
        return _granularities(self.granularities)


@dataclass(frozen=True, kw_only=True)
class ScalingPredictConfig:
    """`mot scaling predict`: one model (N, D, granularity) and the law that predicts its loss."""

    params: float = option("non-embedding parameters", flag="--N", metavar="PARAMS")
    tokens: float = option("training tokens", flag="--D", metavar="TOKENS")
    granularity: float = option("granularity k = d_ff / expert width", 1.0)
    dense: bool = option("use the dense law (ignores --granularity)", False)
    law: str = option("coefficients JSON from `mot scaling fit --out`", "")
    json: bool = option("print JSON instead of text", False)

    def __post_init__(self) -> None:
        for name in ("params", "tokens", "granularity"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{field_setting(type(self), name)} must be a positive number, got {value}.")


@dataclass(frozen=True, kw_only=True)
class ScalingFitConfig:
    """`mot scaling fit`: the runs to fit, which law, the bootstrap and held-out split, and where to write."""

    runs: str = option("a .csv/.json table (N, D, granularity, loss[, name, kind]) or a folder")
    kind: str = option("which law (dense: dense runs only)", "fine-grained", choices=FIT_KINDS)
    bootstrap: int = option("bootstrap resamples for 95% intervals (0: none)", 200)
    holdout: float = option("fraction of runs held out to measure RMSE", 0.2)
    seed: int = option("seed for the bootstrap and the held-out split", 0)
    plot: str = option("predicted-vs-observed plot path", "runs/scaling_fit.png")
    out: str = option("write the coefficients as JSON here (for plan/predict --law)", "")
    json: bool = option("print JSON instead of text", False)

    def __post_init__(self) -> None:
        if self.kind not in FIT_KINDS:
            raise ValueError(f"{setting('kind', self.kind)} is not a law; allowed values: {', '.join(FIT_KINDS)}.")
        if self.bootstrap < 0 or not 0 <= self.holdout < 1:
            raise ValueError(f"{setting('bootstrap')} must be >= 0 and {setting('holdout')} in [0, 1).")


def _laws(path: str):
    from ..scaling import PAPER_DENSE_LAW, PAPER_LAW, load_laws

    return load_laws(Path(path)) if path else (PAPER_LAW, PAPER_DENSE_LAW)


def _granularities(text: str) -> tuple[int, ...]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise ValueError(
            f"{setting('granularities')} {text!r} must be comma-separated positive integers (e.g. 1,2,4,8)."
        )
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


def run_plan(config: ScalingPlanConfig) -> None:
    from ..scaling import parse_budgets, plan
    from ..scaling.plots import plot_plans

    budgets = parse_budgets(config.flops)
    granularities = config.granularity_choices
    law, dense_law = _laws(config.law)
    plans = [
        plan(f, law=law, dense_law=dense_law, granularities=granularities, expansion=config.expansion) for f in budgets
    ]
    if config.json:
        data = [{**p.as_dict(), "train_command": train_command(p, config.preset)[0]} for p in plans]
        print(json.dumps(data[0] if len(plans) == 1 else data, indent=2))
        return
    if len(plans) == 1:
        print(_describe(plans[0], config.preset))
        return
    print(_table(plans))
    print(
        "loss columns are the continuous optima (k=1: at granularity 1); n_blocks, d_model, N, D are the rounded shape"
    )
    print(f"plot: {plot_plans(plans, Path(config.plot))}")


def run_predict(config: ScalingPredictConfig) -> None:
    law, dense_law = _laws(config.law)
    chosen = dense_law if config.dense else law
    loss = float(chosen.loss(config.params, config.tokens, config.granularity))
    kind = "dense" if config.dense else "fine-grained"
    if config.json:
        print(
            json.dumps(
                {"N": config.params, "D": config.tokens, "granularity": config.granularity, "law": kind, "loss": loss}
            )
        )
    else:
        where = "" if config.dense else f", granularity {config.granularity:g}"
        print(f"{kind} law: N = {config.params:.3g}, D = {config.tokens:.3g}{where}: predicted loss {loss:.4f}")


def run_fit(config: ScalingFitConfig) -> None:
    from ..scaling import fit_law, load_runs
    from ..scaling.fit import check_runs
    from ..scaling.plots import plot_fit

    runs = load_runs(config.runs)
    other = "fine-grained" if config.kind == "dense" else "dense"  # run kinds are the law kinds
    chosen = [r for r in runs if r.kind == config.kind]
    if len(chosen) < len(runs) and not chosen:
        raise ValueError(
            f"{setting('runs', config.runs)} holds no {config.kind} runs for a {config.kind} fit "
            f"(all {len(runs)} are {other}; "
            "a table marks dense runs with a kind column)."
        )
    check_runs(chosen, config.kind)
    result = fit_law(
        chosen,
        kind=config.kind,
        n_bootstrap=config.bootstrap,
        holdout_fraction=config.holdout,
        seed=config.seed,
        progress=not config.json,
    )
    key = "fine_grained" if config.kind == "fine-grained" else "dense"
    if config.out:
        out = Path(config.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        # keep the other law already in the file, so one file can hold a fine-grained and a dense fit
        saved = json.loads(out.read_text()) if out.is_file() else {}
        saved = saved if isinstance(saved, dict) else {}
        out.write_text(json.dumps({**saved, key: result.as_dict()}, indent=2))
    plot = plot_fit(result, chosen, Path(config.plot)) if config.plot else None
    if config.json:
        print(json.dumps({key: result.as_dict()}, indent=2))
        return
    skipped = len(runs) - len(chosen)
    print(
        f"{config.kind} law fitted to {len(chosen)} runs" + (f" ({skipped} {other} runs left out)" if skipped else "")
    )
    print(f"{'coef':>6} {'value':>10} {'95% interval':>24}")
    for name, value in result.law.as_dict().items():
        low, high = result.intervals.get(name, (float("nan"), float("nan")))
        print(f"{name:>6} {value:>10.4g} [{low:>10.4g}, {high:>10.4g}]")
    print(f"train RMSE {result.train_rmse:.4f} nats", end="")
    if result.heldout_rmse is not None:
        print(f"; held-out RMSE {result.heldout_rmse:.4f} nats on {result.n_heldout} runs (separate fit)")
    else:
        print("; too few runs to hold any out")
    if config.out:
        print(f"coefficients: {config.out}")
    if plot:
        print(f"plot: {plot}")
