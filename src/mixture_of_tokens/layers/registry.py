"""The registry of feed-forward kinds: name -> layer class. Adding a kind is one layer file and one line here."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

from .base import FeedForwardLayer
from .dense import FeedForward
from .expert_choice import ExpertChoice
from .grouping import check_group_size
from .mot import MixtureOfTokens
from .token_choice import TokenChoice

if TYPE_CHECKING:
    from ..config import ModelConfig

FFN_REGISTRY: dict[str, type[FeedForwardLayer]] = {}


def register_kind(layer_class: type[FeedForwardLayer]) -> type[FeedForwardLayer]:
    """Add a kind (usable as a decorator); its `kind` attribute is the name ModelConfig.ffn takes."""
    FFN_REGISTRY[layer_class.kind] = layer_class
    return layer_class


for _layer_class in (FeedForward, MixtureOfTokens, TokenChoice, ExpertChoice):
    register_kind(_layer_class)


def ffn_kinds() -> tuple[str, ...]:
    """Every registered kind name, in registration order."""
    return tuple(FFN_REGISTRY)


def layer_class(kind: str) -> type[FeedForwardLayer]:
    """The class of a kind; an unknown name is one clear error."""
    if kind not in FFN_REGISTRY:
        raise ValueError(f"feed-forward kind {kind!r} is not supported; allowed values: {', '.join(FFN_REGISTRY)}.")
    return FFN_REGISTRY[kind]


def build_ffn(kind: str, config: ModelConfig) -> FeedForwardLayer:
    """The feed-forward sublayer of one block."""
    return layer_class(kind).from_config(config)


def check_settings(config: ModelConfig) -> None:
    """Every registered kind checks its own settings of `config` (all of them: a config carries every kind's
    fields, and a run may switch kind); one sentence naming the field."""
    for cls in FFN_REGISTRY.values():
        cls.check_settings(config)


def sized_config(base: ModelConfig, kind: str, *, size: str = "", blocks: str = "all", **fields: object) -> ModelConfig:
    """`base` with `kind` in `blocks` at `size` ("/nE" or "/nE/k": `FeedForwardLayer.sized_fields`), then `fields`
    on top: the one sizing of presets, suite arms and the planner."""
    return dataclasses.replace(base, **{**layer_class(kind).sized_fields(base, size=size, blocks=blocks), **fields})


def block_classes(config: ModelConfig) -> list[type[FeedForwardLayer]]:
    """The layer class of every block of a model config, in order."""
    return [layer_class(kind) for kind in config.block_ffn_kinds()]


def batch_multiple(config: ModelConfig) -> int:
    """The smallest number every block's batch multiple divides (1 when no block groups the batch)."""
    return math.lcm(*(cls.batch_multiple(config) for cls in block_classes(config)))


def check_training_batch(config: ModelConfig, micro_batch: int) -> None:
    """Fail with one sentence when some block cannot train on micro-batches of `micro_batch` sequences: the
    batch multiple of every kind, then each kind's own check (e.g. Token Choice capacity slots)."""
    multiple = batch_multiple(config)
    if multiple > 1:
        check_group_size(micro_batch, multiple)
    for cls in dict.fromkeys(block_classes(config)):
        cls.check_training_batch(config, micro_batch)


def rows_couple_at_inference(config: ModelConfig) -> bool:
    """True when some block makes one row's output depend on other rows at evaluation and decoding."""
    return any(cls.rows_couple_at_inference(config) for cls in block_classes(config))
