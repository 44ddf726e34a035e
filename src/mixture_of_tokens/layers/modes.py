"""Evaluation-time switches that layers implement for themselves: another group size or routing (`mot_mode`), and
inference routing (`set_inference_routing`: e.g. Token Choice runs dropless so it needs no batch) and back
(`capacity_routing`); and what the present modes couple (`coupled_rows`: how finely evaluation may split a batch)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from torch import nn

from .base import FeedForwardLayer
from .checks import check_positive_ints


@contextlib.contextmanager
def mot_mode(model: nn.Module, *, group_size: int | None = None, routing: str | None = None) -> Iterator[None]:
    """Temporarily evaluate every layer that has modes (MoT) at another group size and/or routing (e.g.
    "discrete"); every layer is restored afterwards."""
    if group_size is not None:
        check_positive_ints(group_size=group_size)
    layers = [m for m in model.modules() if hasattr(m, "set_mode")]
    saved = [(layer.group_size, layer.routing) for layer in layers]
    try:
        for layer in layers:
            layer.set_mode(group_size=group_size, routing=routing)
        yield
    finally:
        for layer, (old_group_size, old_routing) in zip(layers, saved):
            layer.set_mode(group_size=old_group_size, routing=old_routing)


def _inference_layers(model: nn.Module) -> list[FeedForwardLayer]:
    return [m for m in model.modules() if isinstance(m, FeedForwardLayer) and hasattr(m, "set_inference")]


def set_inference_routing(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Put every feed-forward layer in (or out of) its inference routing; returns the model."""
    for layer in _inference_layers(model):
        layer.set_inference(enabled)
    return model


@contextlib.contextmanager
def capacity_routing(model: nn.Module) -> Iterator[None]:
    """Training routing (Token Choice with the capacity it trained with) for the duration of a `with` block, then
    each layer as it was before: `mot eval --tc-capacity` measures a loaded (dropless) model with its drops."""
    layers = _inference_layers(model)
    before = [layer.set_inference(False) for layer in layers]
    try:
        yield
    finally:
        for layer, was_enabled in zip(layers, before):
            layer.set_inference(was_enabled)


@contextlib.contextmanager
def inference_routing(model: nn.Module) -> Iterator[None]:
    """Inference routing for the duration of a `with` block, then each layer as it was before (a model loaded for
    inference stays in inference routing; one in training gets its capacities back)."""
    layers = _inference_layers(model)
    before = [layer.set_inference(True) for layer in layers]
    try:
        yield
    finally:
        for layer, was_enabled in zip(layers, before):
            layer.set_inference(was_enabled)


def coupled_rows(model: nn.Module, batch: int) -> int:
    """The blocks of consecutive rows of a `batch`-row batch that some layer of `model` couples in its present mode
    (the least common multiple of every layer's `coupled_rows`; 1 when every row is on its own)."""
    layers = [m for m in model.modules() if isinstance(m, FeedForwardLayer)]
    return math.lcm(1, *(layer.coupled_rows(batch) for layer in layers))
