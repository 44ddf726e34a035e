"""Feed-forward sublayers: each maps x[B, S, D] to a tensor of the same shape."""

from .dense import FeedForward
from .expert_choice import ExpertChoice
from .experts import expert_mlp
from .grouping import check_group_size, from_position_groups, group_by_position, position_groups, ungroup
from .mot import MixtureOfTokens
from .routing_stats import CollapseMonitor
from .sizing import MoTSizing, mot_sizing
from .token_choice import TokenChoice

__all__ = [
    "CollapseMonitor",
    "ExpertChoice",
    "FeedForward",
    "MixtureOfTokens",
    "MoTSizing",
    "TokenChoice",
    "check_group_size",
    "expert_mlp",
    "from_position_groups",
    "group_by_position",
    "mot_sizing",
    "position_groups",
    "ungroup",
]
