"""Feed-forward layers and whole-model training steps at the paper's Medium shapes, measured in one process.

    python benchmarks/gpu.py [--device cuda] [--repeats 20] [--no-compile] [--only layers|model] [--quick]

1. Layers, forward + backward, B=256, S=256, d=512, d_ff=2048: dense; MoT /32E, /32E/8, /32E/16 with
   mot_compute plain and recompute; Token Choice top-1 and Expert Choice (32 experts of width d_ff, G=32) with
   expert_dispatch=padded and =grouped. Each layer is built from its preset's ModelConfig (`build_ffn`) and timed
   against dense in interleaved rounds (benchmarks/timing.py); a setting this build cannot run, or that the
   layer ignores (it builds the same layer as the reference setting), prints n/a with the reason.
2. Whole model: one training step (forward, backward, clipping, AdamW: the trainer's `OptimizerStep`) per Medium
   preset on random token ids, batch 256 x 256, GPT-2 vocabulary; tokens/s, MFU (the trainer's peak table) and the
   ratio to transformer-medium.

On CUDA: bf16 autocast with fp32 parameters (the trainer's bf16-mixed) and a torch.compile column; on CPU: fp32.
Every ratio compares runs of the same process (eager with eager, compiled with compiled).
--quick shrinks every shape (B=32, S=16, d=64, d_ff=256, 2 blocks, vocabulary 512) for a smoke run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import itertools
import math
import platform
from collections.abc import Callable, Iterator
from typing import NamedTuple

import torch
from timing import fwd_bwd_seconds, interleaved_medians, timed_seconds
from torch import nn

from mixture_of_tokens import PRESETS, ModelConfig, ModelCounts, Transformer, count_model
from mixture_of_tokens.counting import human
from mixture_of_tokens.layers import batch_multiple, build_ffn, check_training_batch
from mixture_of_tokens.runtime.devices import resolve_device
from mixture_of_tokens.runtime.distributed import DistributedContext
from mixture_of_tokens.runtime.precision import Precision, resolve_precision
from mixture_of_tokens.training.guards import peak_flops_per_second
from mixture_of_tokens.training.step import OptimizerStep, build_optimizer


@dataclasses.dataclass(frozen=True)
class Shapes:
    batch: int
    seq_len: int
    d_model: int
    d_ff: int
    n_blocks: int
    vocab_size: int


MEDIUM = Shapes(batch=256, seq_len=256, d_model=512, d_ff=2048, n_blocks=8, vocab_size=50257)
QUICK = Shapes(batch=32, seq_len=16, d_model=64, d_ff=256, n_blocks=2, vocab_size=512)


class LayerSpec(NamedTuple):
    """Rows of the layer table besides dense: a preset's layer with each value of one ModelConfig field."""

    label: str
    preset: str
    field: str
    values: tuple[object, ...]
    """The first value is the reference path (the others are n/a where they build the same layer)."""


LAYERS = (
    LayerSpec("MoT /32E", "mot-medium-32e", "mot_compute", ("plain", "recompute")),
    LayerSpec("MoT /32E/8", "mot-medium-32e-8", "mot_compute", ("plain", "recompute")),
    LayerSpec("MoT /32E/16", "mot-medium-32e-16", "mot_compute", ("plain", "recompute")),
    LayerSpec("Token Choice top-1", "token-choice-medium", "expert_dispatch", ("padded", "grouped")),
    LayerSpec("Expert Choice, 1 token/expert", "expert-choice-medium", "expert_dispatch", ("padded", "grouped")),
)


class ModelResult(NamedTuple):
    counts: ModelCounts | None
    tokens_per_s: dict[str, float]
    """Median tokens/s per mode that ran."""
    note: str


MODES = ("eager", "compiled")
NA = "n/a"


def default_presets() -> list[str]:
    """transformer-medium, every MoT-Medium preset and the Medium sparse baselines, one per distinct model."""
    baselines = ("transformer-medium", "token-choice-medium", "expert-choice-medium")
    distinct: dict[str, str] = {}
    for name in (name for name in PRESETS if name in baselines or name.startswith("mot-medium-")):
        distinct.setdefault(repr(PRESETS[name].model), name)
    return list(distinct.values())


def at_shapes(config: ModelConfig, shapes: Shapes) -> ModelConfig:
    """The config at other shapes; expert widths scale with d_ff, so FLOP ratios to dense are kept."""
    if config.d_ff % shapes.d_ff and shapes.d_ff % config.d_ff:
        raise ValueError(f"d_ff={shapes.d_ff} must divide or be a multiple of the preset's d_ff={config.d_ff}.")
    return dataclasses.replace(
        config,
        d_model=shapes.d_model,
        d_ff=shapes.d_ff,
        expert_size=max(1, config.expert_size * shapes.d_ff // config.d_ff),
        n_blocks=shapes.n_blocks,
        vocab_size=shapes.vocab_size,
        max_seq_len=shapes.seq_len,
    )


def reason(exc: BaseException) -> str:
    """One short line for a table cell."""
    lines = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 110 else text[:107] + "..."


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(
    measures: dict[str, Callable[[], float]], *, repeats: int, warmup: int, device: torch.device
) -> tuple[dict[str, float], dict[str, str]]:
    """Median seconds of every measure that runs (interleaved rounds), and the reason of each that does not.
    Warm-up runs first, measure by measure (a compiled one compiles there)."""
    working, failures = {}, {}
    for name, run in measures.items():
        try:
            for _ in range(max(warmup, 1)):
                run()
            working[name] = run
        except Exception as exc:  # a setting this build cannot run: reported in the table, not fatal
            failures[name] = reason(exc)
        if name in failures:  # after the except block, which holds the failed frames' tensors
            free_memory(device)
    try:
        return interleaved_medians(working, repeats=repeats, warmup=0), failures
    except Exception as exc:
        failures |= dict.fromkeys(working, reason(exc))
    free_memory(device)
    return {}, failures


def peak_mib(
    layer: nn.Module, x_BSD: torch.Tensor, grad_BSD: torch.Tensor, autocast: Callable, device: torch.device
) -> float | None:
    """CUDA memory allocated at the peak of one forward + backward, above what was allocated before it."""
    if device.type != "cuda":
        return None
    layer.zero_grad(set_to_none=True)
    x_BSD.grad = None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fwd_bwd_seconds(layer, x_BSD, grad_BSD, autocast=autocast)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def settings_of(layer: nn.Module) -> list[tuple[str, str]]:
    """The layer's plain attributes (not tensors, not nn.Module bookkeeping) and its modules' types: two layers
    built from configs that differ in one field are alike here exactly when the layer ignores that field."""
    bookkeeping = set(vars(nn.Module()))
    plain = [(k, repr(v)) for k, v in vars(layer).items() if k not in bookkeeping and not torch.is_tensor(v)]
    return sorted(plain) + [(name, type(module).__name__) for name, module in layer.named_modules()]


def print_table(headers: list[str], rows: Iterator[list[str]]) -> None:
    """A Markdown table, each row printed as soon as it is measured."""
    print("| " + " | ".join(headers) + " |\n|" + "---|" * len(headers), flush=True)
    for row in rows:
        print("| " + " | ".join(row) + " |", flush=True)
    print()


class Bench:
    """What both tables share: device, precision, shapes, repeats and whether to compile."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.device = resolve_device(args.device)
        self.precision: Precision = resolve_precision("auto", self.device)  # bf16-mixed on CUDA, fp32 elsewhere
        self.shapes = QUICK if args.quick else MEDIUM
        self.repeats = args.repeats if args.repeats is not None else 2 if args.quick else 20
        self.warmup = args.warmup if args.warmup is not None else 1 if args.quick else 3
        self.modes = MODES[:1] if args.no_compile else MODES
        self.presets = args.presets.split(",") if args.presets else default_presets()
        self.grad_accum = args.grad_accum
        threads = args.threads if args.threads is not None else 1 if args.quick else 0
        if self.device.type == "cpu" and threads > 0:
            torch.set_num_threads(threads)

    def autocast(self):
        return self.precision.autocast(self.device)

    def compile(self, module: nn.Module) -> nn.Module:
        return torch.compile(module, dynamic=False)  # one shape per module: no dynamic-shape graphs

    def device_line(self) -> str:
        if self.device.type == "cuda":
            name = torch.cuda.get_device_name(self.device)
        else:
            name = f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} thread(s)"
        return f"{name}; torch {torch.__version__}; {datetime.date.today().isoformat()}; precision {self.precision}"

    # ----------------------------------------------------------------------------------------------- layers

    def layer_headers(self) -> list[str]:
        headers = ["layer", "setting"]
        for mode in self.modes:
            headers += [f"{mode} ms", f"{mode} / dense"]
        if self.device.type == "cuda":
            headers += [f"peak MiB {mode}" for mode in self.modes]
        return headers + ["FLOPs / dense", "note"]

    def layer_rows(self) -> Iterator[list[str]]:
        s = self.shapes
        torch.manual_seed(0)
        x_BSD = torch.randn(s.batch, s.seq_len, s.d_model, device=self.device, requires_grad=True)
        dense_layer = build_ffn("dense", at_shapes(PRESETS["transformer-medium"].model, s)).to(self.device)
        dense = {mode: self.compile(dense_layer) if mode == "compiled" else dense_layer for mode in self.modes}
        dense_grad = self.output_grad(dense_layer, x_BSD)
        yield self.layer_row("dense", "-", dense, dense_grad, x_BSD, None)
        for spec in LAYERS:
            reference: list[tuple[str, str]] | None = None
            for value in spec.values:
                setting = f"{spec.field}={value}"
                try:
                    config = dataclasses.replace(at_shapes(PRESETS[spec.preset].model, s), **{spec.field: value})
                    torch.manual_seed(0)
                    layer = build_ffn(config.ffn, config).to(self.device)
                    if reference is not None and settings_of(layer) == reference:
                        yield self.na_layer_row(spec.label, setting, f"this build's layer ignores {setting}")
                        continue
                    reference = reference or settings_of(layer)
                    grad_BSD = self.output_grad(layer, x_BSD)  # the first forward: a failing path fails here
                except Exception as exc:  # a setting this build cannot run: reported in the table, not fatal
                    note = reason(exc)
                else:
                    label = f"{spec.label} (E={config.n_experts}, h={config.expert_size}, G={config.group_size})"
                    modules = {mode: self.compile(layer) if mode == "compiled" else layer for mode in self.modes}
                    flops = layer.flops_per_token() / dense_layer.flops_per_token()
                    yield self.layer_row(label, setting, modules, grad_BSD, x_BSD, (dense, dense_grad), flops)
                    del layer, modules, grad_BSD
                    note = ""
                free_memory(self.device)
                if note:
                    yield self.na_layer_row(spec.label, setting, note)

    def output_grad(self, layer: nn.Module, x_BSD: torch.Tensor) -> torch.Tensor:
        """A random output gradient in the output's dtype (bf16 under autocast; some layers end in fp32)."""
        with torch.no_grad(), self.autocast():
            dtype = layer(x_BSD).dtype
        return torch.randn(x_BSD.shape, device=self.device, dtype=dtype)

    def layer_row(
        self,
        label: str,
        setting: str,
        modules: dict[str, nn.Module],
        grad_BSD: torch.Tensor,
        x_BSD: torch.Tensor,
        dense: tuple[dict[str, nn.Module], torch.Tensor] | None,
        flops_over_dense: float = 1.0,
    ) -> list[str]:
        """One row: the layer (eager / compiled) timed in the same rounds as `dense` (None: it is dense)."""
        contenders = {mode: (modules[mode], grad_BSD) for mode in self.modes}
        if dense is not None:
            contenders |= {f"dense {mode}": (dense[0][mode], dense[1]) for mode in self.modes}
        measures = {
            name: lambda module=module, grad=grad: fwd_bwd_seconds(module, x_BSD, grad, autocast=self.autocast)
            for name, (module, grad) in contenders.items()
        }
        medians, failures = measure(measures, repeats=self.repeats, warmup=self.warmup, device=self.device)
        row = [label, setting]
        for mode in self.modes:
            seconds = medians.get(mode)
            dense_seconds = medians.get(mode if dense is None else f"dense {mode}")
            row.append(NA if seconds is None else f"{seconds * 1e3:.2f}")
            row.append(NA if seconds is None or dense_seconds is None else f"{seconds / dense_seconds:.2f}")
        if self.device.type == "cuda":
            for mode in self.modes:
                peak = peak_mib(modules[mode], x_BSD, grad_BSD, self.autocast, self.device) if mode in medians else None
                row.append(NA if peak is None else f"{peak:.0f}")
        return row + [f"{flops_over_dense:.3f}", "; ".join(f"{name}: {why}" for name, why in failures.items())]

    def na_layer_row(self, label: str, setting: str, note: str) -> list[str]:
        cells = 2 * len(self.modes) + (len(self.modes) if self.device.type == "cuda" else 0) + 1
        return [label, setting, *[NA] * cells, note]

    # ------------------------------------------------------------------------------------------------ model

    def model_title(self) -> str:
        title = f"batch {self.model_batch()} x {self.shapes.seq_len}, vocabulary {self.shapes.vocab_size}"
        return title + (f", {self.grad_accum} micro-batches per step" if self.grad_accum > 1 else "")

    def model_batch(self) -> int:
        """The batch (--quick: raised to a multiple of every preset's group size, e.g. 128 for /128E)."""
        configs = [at_shapes(PRESETS[name].model, self.shapes) for name in self.presets]
        return math.lcm(self.shapes.batch, *(batch_multiple(config) for config in configs))

    def model_headers(self) -> list[str]:
        headers = ["preset", "FFN", "params", "train FLOP/token"]
        for mode in self.modes:
            headers += [f"{mode} tokens/s", f"{mode} MFU", f"{mode} / dense"]
        return headers + ["note"]

    def model_rows(self) -> Iterator[list[str]]:
        """transformer-medium first (the ratios' denominator), then the other presets in order."""
        batch, peak = self.model_batch(), peak_flops_per_second(self.device, self.precision)
        dense: dict[str, float] = {}
        for name in sorted(self.presets, key=lambda name: name != "transformer-medium"):
            config = at_shapes(PRESETS[name].model, self.shapes)
            result = self.model_result(name, config, batch)
            if name == "transformer-medium":
                dense = result.tokens_per_s
            counts = result.counts
            ffn = config.ffn if config.ffn == "dense" else f"{config.ffn} ({config.ffn_blocks})"
            sizes = (human(counts.total_params), human(counts.train_flops_per_token)) if counts else (NA, NA)
            row = [name, ffn, *sizes]
            for mode in self.modes:
                rate = result.tokens_per_s.get(mode)
                mfu = counts.train_flops_per_token * rate / peak if counts and rate and peak else None
                row.append(NA if rate is None else f"{rate:,.0f}")
                row.append(NA if mfu is None else f"{100 * mfu:.1f}%")
                row.append(NA if rate is None or mode not in dense else f"{rate / dense[mode]:.2f}")
            yield row + [result.note]

    def model_result(self, name: str, config: ModelConfig, batch: int) -> ModelResult:
        """Median training-step throughput of one preset, eager and compiled in interleaved rounds (one set of
        weights and one AdamW: the compiled model wraps the eager one)."""
        train = dataclasses.replace(PRESETS[name].train, batch_size=batch, grad_accum_steps=self.grad_accum)
        try:
            check_training_batch(config, batch // self.grad_accum)
            torch.manual_seed(0)
            raw_model = self.precision.prepare_model(Transformer(config)).to(self.device)
        except Exception as exc:
            free_memory(self.device)
            return ModelResult(None, {}, reason(exc))
        counts = count_model(raw_model, self.shapes.seq_len)
        optimizer = build_optimizer(raw_model, train)
        ids = torch.randint(config.vocab_size, (batch, self.shapes.seq_len + 1), device=self.device)
        data = (ids[:, :-1].contiguous(), ids[:, 1:].contiguous())
        step_number = itertools.count()
        measures = {}
        for mode in self.modes:
            if mode == "compiled":
                torch._dynamo.reset()  # a fresh compile per model, as in a training run
            model = raw_model if mode == "eager" else self.compile(raw_model)
            step = OptimizerStep(
                model, optimizer, train, context=DistributedContext(), device=self.device, precision=self.precision
            )
            measures[mode] = lambda step=step: timed_seconds(lambda: step(next(step_number), data), self.device)
        medians, failures = measure(measures, repeats=self.repeats, warmup=self.warmup, device=self.device)
        del measures, optimizer, raw_model
        free_memory(self.device)
        tokens = {mode: batch * self.shapes.seq_len / seconds for mode, seconds in medians.items()}
        return ModelResult(counts, tokens, "; ".join(f"{mode}: {why}" for mode, why in failures.items()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda if available, else cpu) | cuda | cpu")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 20; --quick: 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs first (default 3; --quick: 1)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile columns")
    parser.add_argument("--only", choices=("layers", "model"), help="print one table only")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke run in seconds on a CPU")
    parser.add_argument("--presets", default="", help="comma-separated presets of the model table (default: Medium)")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads (default: torch's; --quick: 1, steady on a busy CPU)"
    )
    parser.add_argument("--grad-accum", type=int, default=1, help="micro-batches per training step (memory)")
    args = parser.parse_args(argv)
    bench = Bench(args)
    if args.grad_accum < 1 or bench.model_batch() % args.grad_accum:
        parser.error(f"--grad-accum must be a positive divisor of the batch {bench.model_batch()}.")
    if hasattr(torch._dynamo.config, "recompile_limit"):  # every layer instance compiles its own graph
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    s = bench.shapes
    print(f"# GPU benchmark{' (--quick smoke run)' if args.quick else ''}\n")
    print(f"{bench.device_line()}; medians of {bench.repeats} timed round(s) after {bench.warmup} warm-up run(s)\n")
    if args.only in (None, "layers"):
        print(f"## Layers, forward + backward: B={s.batch}, S={s.seq_len}, d={s.d_model}, d_ff={s.d_ff}\n")
        print_table(bench.layer_headers(), bench.layer_rows())
    if args.only in (None, "model"):
        print(f"## Whole model, one training step (AdamW included): {s.n_blocks} blocks, d={s.d_model}\n")
        print(bench.model_title() + "\n")
        print_table(bench.model_headers(), bench.model_rows())


if __name__ == "__main__":
    main()
