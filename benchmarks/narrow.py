"""MoT /8E, MoT /8E/4, Token Choice and Expert Choice against dense at the narrow "capacity" shape, side by side.

    python benchmarks/narrow.py [--repeats 30] [--warmup 3] [--threads 1] [--quick] [--breakdown]

Shape: the narrow presets' (2 blocks, d_model 64, 2 heads, d_ff 256, vocabulary 1024, context 64), batch 64 x 64
tokens, fp32 on the CPU, one thread by default. Every block's feed-forward layer is the contender:
    dense          d_ff 256 (narrow-dense)
    MoT /8E        G=8, E=8, h=256 (E*h = G*d_ff: the dense layer's FLOPs), tau = 1 (narrow-mot-8e)
    MoT /8E/4      G=8, E=32, h=64, tau = 0.1 (narrow-mot: the suite's best MoT; the same FLOPs)
    Token Choice   top-1 over E=8 experts of width 256, capacity factor 1.25 (narrow-token-choice)
    Expert Choice  E=8 experts of width 256, one token per expert per group of G=8 (narrow-expert-choice)
Token and Expert Choice run `expert_dispatch="auto"`, which is the padded dispatch on a CPU.

Two tables, each timed in interleaved rounds of all five contenders in one process (benchmarks/timing.py), as
medians and ratios to dense:
1. the feed-forward layer alone, forward + backward on x [64, 64, 64] (`build_ffn` from each ModelConfig);
2. the whole training step: forward, loss (auxiliary losses included), backward, clipping and AdamW through the
   trainer's `OptimizerStep` and `build_optimizer` (TrainConfig defaults), on random token ids; and tokens/s.
The issue's target, MoT /8E at most 1.10x dense, is checked against each measured ratio.
--breakdown adds MoT /8E's forward + backward step by step (grouping copies, controller and softmax, merge,
experts, emit), each timed alone on the layer's real intermediates, against the whole layer and dense.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import platform
import sys
from collections.abc import Callable

import torch
from timing import fwd_bwd_seconds, interleaved_medians, timed_seconds
from torch import nn

from mixture_of_tokens import Transformer
from mixture_of_tokens.config import TrainConfig
from mixture_of_tokens.layers import build_ffn
from mixture_of_tokens.layers.experts import expert_mlp
from mixture_of_tokens.layers.grouping import from_position_groups, position_groups
from mixture_of_tokens.presets import get_preset
from mixture_of_tokens.runtime.distributed import DistributedContext
from mixture_of_tokens.runtime.precision import resolve_precision
from mixture_of_tokens.training.step import OptimizerStep, build_optimizer

BATCH, SEQ_LEN = 64, 64
TARGET = 1.10
"""MoT /8E over dense, at most (the issue's target)."""

CONTENDERS = {
    "dense": get_preset("narrow-dense").model,
    "MoT /8E": get_preset("narrow-mot-8e").model,
    "MoT /8E/4": get_preset("narrow-mot").model,
    "Token Choice top-1": get_preset("narrow-token-choice").model,
    "Expert Choice": get_preset("narrow-expert-choice").model,
}
"""The narrow presets' models (the capacity suite's): every block's feed-forward layer is the contender."""
NARROW = CONTENDERS["dense"]


def with_progress(measures: dict[str, Callable[[], float]], label: str, rounds: int) -> dict[str, Callable[[], float]]:
    """The same measures; the first one also writes `label: round i/rounds` to stderr (one line, rewritten)."""
    done = itertools.count(1)
    first = next(iter(measures))

    def counted(measure: Callable[[], float]) -> Callable[[], float]:
        def run() -> float:
            print(f"\r{label}: round {next(done)}/{rounds}", end="", file=sys.stderr, flush=True)
            return measure()

        return run

    return {name: counted(measure) if name == first else measure for name, measure in measures.items()}


def medians(measures: dict[str, Callable[[], float]], label: str, repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds of every measure, in interleaved rounds, with a progress line on stderr."""
    result = interleaved_medians(with_progress(measures, label, warmup + repeats), repeats=repeats, warmup=warmup)
    print(file=sys.stderr)
    return result


def verdict(ratio: float) -> str:
    """Judged on the ratio as printed (three decimals), so a table never reads "1.100 | not met"."""
    return "met" if round(ratio, 3) <= TARGET else "not met"


def layer_table(repeats: int, warmup: int) -> float:
    """Table 1; returns MoT /8E's ratio to dense."""
    torch.manual_seed(0)
    x_BSD = torch.randn(BATCH, SEQ_LEN, NARROW.d_model, requires_grad=True)
    grad_BSD = torch.randn_like(x_BSD)
    layers = {name: build_ffn(config.ffn, config) for name, config in CONTENDERS.items()}
    seconds = medians(
        {name: lambda layer=layer: fwd_bwd_seconds(layer, x_BSD, grad_BSD) for name, layer in layers.items()},
        "layers",
        repeats,
        warmup,
    )
    dense_flops = layers["dense"].flops_per_token()
    print(f"## Feed-forward layer, forward + backward, x [{BATCH}, {SEQ_LEN}, {NARROW.d_model}]\n")
    print("| layer | ms | / dense | FLOPs / dense |\n|---|---|---|---|")
    for name, layer in layers.items():
        ratio = seconds[name] / seconds["dense"]
        print(f"| {name} | {seconds[name] * 1e3:.2f} | {ratio:.3f} | {layer.flops_per_token() / dense_flops:.3f} |")
    mot_ratio = seconds["MoT /8E"] / seconds["dense"]
    print(f"\nMoT /8E / dense, forward + backward: {mot_ratio:.3f} (target <= {TARGET:.2f}: {verdict(mot_ratio)})\n")
    return mot_ratio


def step_table(repeats: int, warmup: int) -> float:
    """Table 2; returns MoT /8E's ratio to dense (time per step)."""
    device, precision = torch.device("cpu"), resolve_precision("fp32", torch.device("cpu"))
    train = TrainConfig(batch_size=BATCH)
    torch.manual_seed(0)
    ids = torch.randint(NARROW.vocab_size, (BATCH, SEQ_LEN + 1))
    batch = (ids[:, :-1].contiguous(), ids[:, 1:].contiguous())
    measures = {}
    for name, config in CONTENDERS.items():
        torch.manual_seed(0)
        model = Transformer(config)
        step = OptimizerStep(
            model,
            build_optimizer(model, train),
            train,
            context=DistributedContext(),
            device=device,
            precision=precision,
        )
        numbers = itertools.count()
        measures[name] = lambda step=step, numbers=numbers: timed_seconds(lambda: step(next(numbers), batch), device)
    seconds = medians(measures, "training steps", repeats, warmup)
    print(
        f"## Whole training step (forward, loss, backward, clipping, AdamW): {NARROW.n_blocks} blocks, "
        f"batch {BATCH} x {SEQ_LEN}\n"
    )
    print("| model | ms / step | / dense | tokens/s |\n|---|---|---|---|")
    for name in CONTENDERS:
        ratio = seconds[name] / seconds["dense"]
        print(f"| {name} | {seconds[name] * 1e3:.1f} | {ratio:.3f} | {BATCH * SEQ_LEN / seconds[name]:,.0f} |")
    mot_ratio = seconds["MoT /8E"] / seconds["dense"]
    print(f"\nMoT /8E / dense, training step: {mot_ratio:.3f} (target <= {TARGET:.2f}: {verdict(mot_ratio)})\n")
    return mot_ratio


class Piece(nn.Module):
    """One step of the MoT layer as a module of its input, so that `fwd_bwd_seconds` times it alone; `held` are
    the step's other differentiable operands (the layer's weights, or an intermediate of the real forward)."""

    def __init__(self, step: Callable[..., torch.Tensor], *held: torch.Tensor) -> None:
        super().__init__()
        self.step = step
        self.held = nn.ParameterList([nn.Parameter(t.detach()) if not isinstance(t, nn.Parameter) else t for t in held])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.step(x, *self.held)


def breakdown(repeats: int, warmup: int) -> None:
    """MoT /8E's forward + backward step by step (each timed alone on the real intermediates), against its whole
    layer and dense, in interleaved rounds."""
    mot_config = CONTENDERS["MoT /8E"]
    group = mot_config.group_size
    torch.manual_seed(0)
    mot, dense = build_ffn("mot", mot_config), build_ffn("dense", CONTENDERS["dense"])
    x_BSD = torch.randn(BATCH, SEQ_LEN, NARROW.d_model, requires_grad=True)
    with torch.no_grad():  # the real intermediates: [R, G, D] groups, [R, G, E] weights, [R, E, D], [E, R, D]
        x_RGD = position_groups(x_BSD, group)
        weights_RGE = torch.softmax(x_RGD @ mot.controller, dim=1)
        mixed_RED = torch.bmm(weights_RGE.transpose(1, 2), x_RGD)
        out_ERD = expert_mlp(mixed_RED.transpose(0, 1), mot.w1, mot.w2)
    steps = {  # name: (module, its input)
        "dense layer": (dense, x_BSD),
        "MoT layer": (mot, x_BSD),
        "grouping copies (in and out)": (
            Piece(lambda x: from_position_groups(position_groups(x, group), SEQ_LEN)),
            x_BSD,
        ),
        "controller + softmax": (Piece(lambda x, c: torch.softmax(x @ c, dim=1), mot.controller), x_RGD),
        "merge (bmm, K = G)": (Piece(lambda w, x: torch.bmm(w.transpose(1, 2), x), x_RGD), weights_RGE),
        "experts (2 bmm + ReLU)": (
            Piece(lambda m, w1, w2: expert_mlp(m.transpose(0, 1), w1, w2), mot.w1, mot.w2),
            mixed_RED,
        ),
        "emit (bmm, K = E)": (Piece(lambda w, out: torch.bmm(w, out.transpose(0, 1)), out_ERD), weights_RGE),
    }
    measures = {}
    for name, (module, x) in steps.items():
        x = x.detach().requires_grad_()
        with torch.no_grad():
            grad = torch.randn_like(module(x))
        measures[name] = lambda module=module, x=x, grad=grad: fwd_bwd_seconds(module, x, grad)
    seconds = medians(measures, "breakdown", repeats, warmup)
    print("## Where MoT /8E's forward + backward goes (each step timed alone)\n")
    print("| step | ms | / dense layer |\n|---|---|---|")
    for name in steps:
        print(f"| {name} | {seconds[name] * 1e3:.2f} | {seconds[name] / seconds['dense layer']:.3f} |")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 30; --quick: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed rounds first (default 3; --quick: 1)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run in seconds")
    parser.add_argument("--breakdown", action="store_true", help="also time MoT /8E's steps one by one")
    args = parser.parse_args()
    repeats = args.repeats if args.repeats is not None else 2 if args.quick else 30
    warmup = args.warmup if args.warmup is not None else 1 if args.quick else 3
    torch.set_num_threads(args.threads)
    print("# Narrow capacity shape: MoT /8E, Token Choice, Expert Choice against dense\n")
    print(
        f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} thread(s); torch "
        f"{torch.__version__}; {datetime.date.today().isoformat()}; fp32; medians of {repeats} interleaved "
        f"round(s) after {warmup} warm-up round(s)\n"
    )
    layer_ratio = layer_table(repeats, warmup)
    step_ratio = step_table(repeats, warmup)
    print(f"## Target: MoT /8E at most {TARGET:.2f}x dense\n")
    print("| measured | ratio | verdict |\n|---|---|---|")
    print(f"| forward + backward, layer | {layer_ratio:.3f} | {verdict(layer_ratio)} |")
    print(f"| training step | {step_ratio:.3f} | {verdict(step_ratio)} |\n")
    if args.breakdown:
        breakdown(repeats, warmup)


if __name__ == "__main__":
    main()
