"""Mixture of Tokens: continuous mixture of experts through cross-example aggregation, with dense and sparse
baselines, a trainer and a command line (`mot`)."""

from .config import ModelConfig, TrainConfig
from .counting import ModelCounts, count_model
from .evaluation import EvalResults, evaluate_checkpoint
from .inference import Predictor, load_model, load_tokenizer
from .inference_config import EvalConfig
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
from .training.loop import train

__version__ = "0.1.0"

__all__ = [
    "PRESETS",
    "CollapseMonitor",
    "EvalConfig",
    "EvalResults",
    "ExpertChoice",
    "FeedForward",
    "MixtureOfTokens",
    "ModelConfig",
    "ModelCounts",
    "ModelOutput",
    "MoTSizing",
    "Predictor",
    "Preset",
    "TokenChoice",
    "TrainConfig",
    "Transformer",
    "count_model",
    "evaluate_checkpoint",
    "get_preset",
    "group_by_position",
    "load_model",
    "load_tokenizer",
    "mot_mode",
    "mot_sizing",
    "train",
]
