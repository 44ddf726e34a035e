"""Feed-forward sublayers: each maps x[B, S, D] to a tensor of the same shape and answers for its own kind
(`base.FeedForwardLayer`); `registry` maps kind names to classes.

Axis legend of every tensor name in this package (`x_BSD`, `logits_RGE`, `w1_EDH`), one meaning per letter; a
flattened axis takes the letter of what it lists (`x_ND` is x_BSD flattened). tests/test_shape_legend.py reads the
letters from this list and fails on a name under src/ or benchmarks/ that uses another:
    B batch          S sequence position    D model width (d_model)    V vocabulary
    N flattened tokens: B*S of them, or a subset (the scored positions, one chunk of the loss)
    L key/value positions of attention (the KV cache's, which may outnumber the S query positions)
    M attention heads (query heads, or key/value heads)    W attention head width (D / heads)
    F width of a fused projection: an expert's first projection (H, or 2H for SwiGLU's gate then up; the weight
      itself keeps the name `w1_EDH`) or attention's q, k and v side by side (D + 2 * kv heads * W)
    G group size: tokens per same-position group of consecutive examples (MoT, Expert Choice, group-scope TC),
      or per block of consecutive positions of one sequence (MoT's within-sequence groups, masked LM)
    P groups of G consecutive examples (B/G of them)
    R rows: one per (group, position) for grouped layers (within-sequence MoT: one per (sequence, position block)),
      one per routing group for Token Choice
    T tokens of one Token Choice routing group    E experts    H expert width (expert_size)
    K choices: top-k per token (Token Choice) or tokens per expert per group (Expert Choice)
    A token-expert assignments: a layer's, a subset of them (the kept ones) or one row's (Expert Choice: E*K)
    C capacity slots: an expert's rows in the padded [E, C, D] batch of the expert MLP (Token Choice: C per
      routing group, R*C in all; Expert Choice: its R*K picks; MoT: its R mixed tokens)
    U buckets: one per (expert, routing group) of Token Choice's capacity ranking (E*R of them)
    1 an axis of size 1 kept for broadcasting (`keep_RG1`)
Granularity (the scaling law's expert-width ratio d_ff / H) never shares a letter with group size: it is spelt out;
the scaling fit's formula variables (scaling/fit.py: N parameters, D tokens, L loss) are not tensor axes.
"""

from .base import EvaluationMode, FeedForwardLayer
from .dense import FeedForward
from .expert_choice import ExpertChoice
from .experts import expert_mlp
from .grouping import check_group_size, from_position_groups, group_by_position, position_groups
from .modes import capacity_routing, coupled_rows, inference_routing, mot_mode, set_inference_routing
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
    "coupled_rows",
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
