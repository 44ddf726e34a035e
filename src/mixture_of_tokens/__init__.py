"""Mixture of Tokens: continuous mixture of experts through cross-example aggregation, with dense and sparse
baselines, a trainer and a command line (`mot`)."""

from .config import ModelConfig, TrainConfig
from .counting import ModelCounts, count_model
from .layers import (
    CollapseMonitor,
    ExpertChoice,
    FeedForward,
    MixtureOfTokens,
    MoTSizing,
    TokenChoice,
    group_by_position,
    mot_sizing,
)
from .model import ModelOutput, Transformer, mot_mode
from .presets import PRESETS, Preset, get_preset

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "CollapseMonitor",
    "ExpertChoice",
    "FeedForward",
    "MixtureOfTokens",
    "ModelConfig",
    "ModelCounts",
    "ModelOutput",
    "MoTSizing",
    "Preset",
    "TokenChoice",
    "TrainConfig",
    "Transformer",
    "count_model",
    "get_preset",
    "group_by_position",
    "mot_mode",
    "mot_sizing",
]
