"""The options of the Mixture of Tokens layer (the method and the authors' ablations) and the checks of settings
that depend on each other; shared by the layer and ModelConfig, one sentence per bad setting."""

from __future__ import annotations

from typing import Literal

from .checks import check_choice
from .grouping import check_sequence_length

Routing = Literal["softmax", "uniform", "discrete"]
Emit = Literal["group", "experts"]
LearnableTemperature = Literal["none", "scalar", "per_expert"]
Grouping = Literal["consecutive", "random"]
GroupAxis = Literal["across_batch", "within_sequence"]

ROUTINGS: tuple[str, ...] = ("softmax", "uniform", "discrete")
EMITS: tuple[str, ...] = ("group", "experts")
LEARNABLE_TEMPERATURES: tuple[str, ...] = ("none", "scalar", "per_expert")
GROUPINGS: tuple[str, ...] = ("consecutive", "random")
GROUP_AXES: tuple[str, ...] = ("across_batch", "within_sequence")


def check_temperature_freeze(steps: int, learnable_temperature: str) -> None:
    """A non-negative step count, and a learnable temperature to freeze when it is positive."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"temperature_freeze_steps must be a non-negative integer, got {steps!r}.")
    if steps > 0 and learnable_temperature == "none":
        raise ValueError(
            f"temperature_freeze_steps={steps} needs a learnable temperature (learnable_temperature scalar or "
            "per_expert); with learnable_temperature='none' the allowed value is 0."
        )


def check_group_axis(
    group_axis: str,
    *,
    grouping: str = "consecutive",
    causal_attention: bool = False,
    seq_len: int | None = None,
    group_size: int = 1,
) -> None:
    """Within-sequence groups: bidirectional attention only, no random row grouping, and G dividing the sequence
    length (when given). One sentence per bad setting, before any compute."""
    check_choice("group_axis", group_axis, GROUP_AXES)
    if group_axis != "within_sequence":
        return
    if causal_attention:
        raise ValueError(
            "within-sequence MoT groups mix each token with later positions of its own sequence, so under causal "
            "attention every prediction would see future tokens; use them with the masked objective "
            "(objective='masked'), or group across the batch (mot_group_axis='across_batch')."
        )
    if grouping != "consecutive":
        raise ValueError(
            f"mot_grouping={grouping!r} shuffles which examples share an across-batch group; with within-sequence "
            "groups the allowed value is consecutive."
        )
    if seq_len is not None:
        check_sequence_length(seq_len, group_size)
