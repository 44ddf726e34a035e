"""Timing helpers shared by the benchmark scripts: a synchronised wall-clock timer, a layer's forward + backward,
and interleaved rounds with medians (so drift in machine speed hits every contender alike)."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (CUDA launches are asynchronous; CPU work is not)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_seconds(run: Callable[[], object], device: torch.device) -> float:
    """Wall-clock seconds of `run()`, from an idle device to an idle device."""
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


def fwd_bwd_seconds(
    layer: torch.nn.Module,
    x_BSD: torch.Tensor,
    grad_BSD: torch.Tensor,
    *,
    autocast: Callable[[], contextlib.AbstractContextManager[object]] = contextlib.nullcontext,
) -> float:
    """One forward (inside `autocast()`) + backward; gradients start empty as in training
    (`zero_grad(set_to_none=True)`), outside the timed region. `grad_BSD` should have the output's dtype."""
    layer.zero_grad(set_to_none=True)
    x_BSD.grad = None

    def run() -> None:
        with autocast():
            y_BSD = layer(x_BSD)
        y_BSD.backward(grad_BSD)

    return timed_seconds(run, x_BSD.device)


def interleaved_medians(measures: dict[str, Callable[[], float]], *, repeats: int, warmup: int) -> dict[str, float]:
    """Each measure returns the seconds of one run. `warmup` untimed rounds, then `repeats` rounds calling every
    measure once in turn; the median seconds of each."""
    for _ in range(warmup):
        for measure in measures.values():
            measure()
    seconds: dict[str, list[float]] = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            seconds[name].append(measure())
    return {name: statistics.median(values) for name, values in seconds.items()}
