"""The options of the Mixture of Tokens layer (the method and the authors' ablations) and the checks of settings
that depend on each other; shared by the layer and ModelConfig, one sentence per bad setting."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal

from .checks import check_choice, check_positive
from .grouping import check_sequence_length

if TYPE_CHECKING:
    from ..config import ModelConfig

Routing = Literal["softmax", "uniform", "discrete"]
Emit = Literal["group", "experts"]
LearnableTemperature = Literal["none", "scalar", "per_expert"]
Grouping = Literal["consecutive", "random"]
GroupAxis = Literal["across_batch", "within_sequence"]
TemperatureSchedule = Literal["constant", "cosine", "geometric"]
Compute = Literal["plain", "recompute"]
DiscreteRule = Literal["project", "authors"]

ROUTINGS: tuple[str, ...] = ("softmax", "uniform", "discrete")
EMITS: tuple[str, ...] = ("group", "experts")
LEARNABLE_TEMPERATURES: tuple[str, ...] = ("none", "scalar", "per_expert")
GROUPINGS: tuple[str, ...] = ("consecutive", "random")
GROUP_AXES: tuple[str, ...] = ("across_batch", "within_sequence")
TEMPERATURE_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "geometric")
COMPUTES: tuple[str, ...] = ("plain", "recompute")
DISCRETE_RULES: tuple[str, ...] = ("project", "authors")

_SCHEDULE_NAMES = {
    "config": ("mot_temperature_schedule", "mot_temperature_final", "mot_temperature_anneal_steps", "mot_routing",
               "mot_learnable_temperature"),
    "layer": ("temperature_schedule", "final_temperature", "anneal_steps", "routing", "learnable_temperature"),
}  # fmt: skip
"""How ModelConfig and the layer name the settings of a temperature schedule, for the refusals."""


def check_temperature_freeze(steps: int, learnable_temperature: str, *, prefix: str = "") -> None:
    """A non-negative step count, and a learnable temperature to freeze when it is positive; `prefix` is the
    settings' prefix in the message (`mot_` for ModelConfig's, none for the layer's)."""
    freeze, learnable = f"{prefix}temperature_freeze_steps", f"{prefix}learnable_temperature"
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"{freeze} must be a non-negative integer, got {steps!r}.")
    if steps > 0 and learnable_temperature == "none":
        raise ValueError(
            f"{freeze}={steps} needs a learnable temperature ({learnable} scalar or per_expert); with "
            f"{learnable}='none' the allowed value is 0."
        )


def scheduled_temperature(
    step: int, *, schedule: str, initial: float, final: float, anneal_steps: int, run_steps: int
) -> float:
    """tau at 0-based optimizer step `step`: from `initial` at step 0 to `final` at step T - 1 and after, where T is
    `anneal_steps`, or the run's `run_steps` when that is 0. With p = min(step / max(T - 1, 1), 1):
    cosine tau = final + (initial - final) (1 + cos(pi p)) / 2; geometric tau = initial (final / initial)^p.
    A pure function of the step, so a resumed run repeats it exactly; both ends are returned exactly."""
    if schedule == "constant":
        return initial
    length = anneal_steps or run_steps
    progress = min(step / max(length - 1, 1), 1.0)
    if progress <= 0.0:
        return initial
    if progress >= 1.0:
        return final
    if schedule == "cosine":
        return final + (initial - final) * (1.0 + math.cos(math.pi * progress)) / 2.0
    return initial * (final / initial) ** progress


def trained_temperature(temperature: float, schedule: str, final: float) -> float:
    """The fixed tau a model ends training with, and evaluates and exports at: the schedule's final value."""
    return float(temperature if schedule == "constant" else final)


def check_temperature_schedule(
    schedule: str,
    *,
    final: float,
    anneal_steps: int,
    routing: str,
    learnable_temperature: str,
    names: Literal["config", "layer"] = "config",
) -> None:
    """A known schedule with a positive final tau, over a non-negative number of steps, annealing a fixed softmax
    temperature; `names` picks ModelConfig's field names or the layer's argument names for the sentence."""
    schedule_name, final_name, steps_name, routing_name, learnable_name = _SCHEDULE_NAMES[names]
    check_choice(schedule_name, schedule, TEMPERATURE_SCHEDULES)
    if not isinstance(anneal_steps, int) or isinstance(anneal_steps, bool) or anneal_steps < 0:
        raise ValueError(f"{steps_name} must be a non-negative integer (0: the whole run), got {anneal_steps!r}.")
    if schedule == "constant":
        if final != 0:
            raise ValueError(
                f"{final_name}={final!r} needs a schedule ({schedule_name} cosine or geometric); with "
                f"{schedule_name}='constant' the allowed value is 0."
            )
        return
    if routing != "softmax":
        raise ValueError(
            f"{schedule_name}={schedule!r} anneals the softmax temperature, which {routing_name}={routing!r} does not "
            "use; with that routing the allowed value is constant."
        )
    if learnable_temperature != "none":
        raise ValueError(
            f"{schedule_name}={schedule!r} sets tau at every step, so it cannot anneal a learnable temperature "
            f"({learnable_name}={learnable_temperature!r}); use {learnable_name} none or {schedule_name} constant."
        )
    if isinstance(final, bool) or not isinstance(final, (int, float)) or not (math.isfinite(final) and final > 0):
        raise ValueError(
            f"{final_name} must be a positive finite temperature with {schedule_name}={schedule!r}, got {final!r}."
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


def check_layer_options(
    *, learnable_temperature: str, routing: str, discrete_rule: str, emit: str, grouping: str, group_axis: str,
    compute: str, freeze_steps: int, schedule: str, final_temperature: float, anneal_steps: int,
) -> None:  # fmt: skip
    """Every option of the MoT layer, alone and together, in the layer's own names (one sentence each)."""
    for name, value, allowed in (
        ("learnable_temperature", learnable_temperature, LEARNABLE_TEMPERATURES), ("routing", routing, ROUTINGS),
        ("discrete_rule", discrete_rule, DISCRETE_RULES), ("emit", emit, EMITS), ("grouping", grouping, GROUPINGS),
        ("group_axis", group_axis, GROUP_AXES), ("compute", compute, COMPUTES),
    ):  # fmt: skip
        check_choice(name, value, allowed)
    check_group_axis(group_axis, grouping=grouping)
    check_temperature_freeze(freeze_steps, learnable_temperature)
    check_temperature_schedule(
        schedule, final=final_temperature, anneal_steps=anneal_steps, routing=routing,
        learnable_temperature=learnable_temperature, names="layer",
    )  # fmt: skip


def check_config(config: ModelConfig) -> None:
    """Every MoT setting of a ModelConfig, alone and together, in its field names (`MixtureOfTokens.check_settings`)."""
    for name, allowed in (
        ("mot_routing", ROUTINGS), ("mot_discrete_rule", DISCRETE_RULES), ("mot_emit", EMITS),
        ("mot_learnable_temperature", LEARNABLE_TEMPERATURES), ("mot_grouping", GROUPINGS),
        ("mot_group_axis", GROUP_AXES), ("mot_compute", COMPUTES),
    ):  # fmt: skip
        check_choice(name, getattr(config, name), allowed)
    check_temperature_freeze(config.mot_temperature_freeze_steps, config.mot_learnable_temperature, prefix="mot_")
    check_temperature_schedule(
        config.mot_temperature_schedule, final=config.mot_temperature_final, routing=config.mot_routing,
        anneal_steps=config.mot_temperature_anneal_steps, learnable_temperature=config.mot_learnable_temperature,
    )  # fmt: skip
    check_group_axis(
        config.mot_group_axis, grouping=config.mot_grouping, causal_attention=config.objective == "causal",
        seq_len=config.max_seq_len, group_size=config.group_size,
    )  # fmt: skip
    check_positive("mot_temperature", config.mot_temperature)
