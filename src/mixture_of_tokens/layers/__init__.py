"""Feed-forward sublayers: each maps x[B, S, D] to a tensor of the same shape and answers for its own kind
(`base.FeedForwardLayer`); `registry` maps kind names to classes.

Axis legend of every tensor name in this package (`x_BSD`, `logits_RGE`, `w1_EDH`):
    B batch          S sequence position    D model width (d_model)    V vocabulary
    G group size: tokens per same-position group of consecutive examples (MoT, Expert Choice, group-scope TC),
      or per block of consecutive positions of one sequence (MoT's within-sequence groups, masked LM)
    R rows: one per (group, position) for grouped layers (within-sequence MoT: one per (sequence, position block)),
      one per routing group for Token Choice
    T tokens of one Token Choice routing group    E experts    H expert width (expert_size)
    K choices: top-k per token (Token Choice) or tokens per expert per group (Expert Choice)
    A token-expert assignments    C capacity slots per expert and routing group
Granularity (the scaling law's expert-width ratio d_ff / H) never shares a letter with group size: it is spelt out.
"""

from .base import EvaluationMode, FeedForwardLayer
from .dense import FeedForward
from .expert_choice import ExpertChoice
from .experts import expert_mlp
from .grouping import check_group_size, from_position_groups, group_by_position, position_groups
from .modes import capacity_routing, inference_routing, mot_mode, set_inference_routing
from .mot import MixtureOfTokens
from .registry import (
    FFN_REGISTRY,
    batch_multiple,
    block_classes,
    build_ffn,
    check_settings,
    check_training_batch,
    ffn_kinds,
    layer_class,
    register_kind,
    rows_couple_at_inference,
    sized_config,
)
from .routing_stats import CollapseMonitor
from .sizing import MoTSizing, mot_sizing
from .token_choice import TokenChoice

__all__ = [
    "FFN_REGISTRY",
    "CollapseMonitor",
    "EvaluationMode",
    "ExpertChoice",
    "FeedForward",
    "FeedForwardLayer",
    "MixtureOfTokens",
    "MoTSizing",
    "TokenChoice",
    "batch_multiple",
    "block_classes",
    "build_ffn",
    "capacity_routing",
    "check_group_size",
    "check_settings",
    "check_training_batch",
    "expert_mlp",
    "ffn_kinds",
    "from_position_groups",
    "group_by_position",
    "inference_routing",
    "layer_class",
    "mot_mode",
    "mot_sizing",
    "position_groups",
    "register_kind",
    "rows_couple_at_inference",
    "set_inference_routing",
    "sized_config",
]
