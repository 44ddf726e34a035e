"""Feed-forward sublayers: each maps x[B, S, D] to a tensor of the same shape."""

from .dense import FeedForward
from .grouping import check_group_size, group_by_position, ungroup
from .mot import MixtureOfTokens
from .sizing import MoTSizing, mot_sizing

__all__ = [
    "FeedForward",
    "MixtureOfTokens",
    "MoTSizing",
    "check_group_size",
    "group_by_position",
    "mot_sizing",
    "ungroup",
]
