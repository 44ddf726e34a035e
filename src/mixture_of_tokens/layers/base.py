"""What every feed-forward kind answers for itself, so that nothing outside `layers/` needs to know the kinds.

A feed-forward layer maps x[B, S, D] to a tensor of the same shape. Besides `forward`, each kind states
    from_config(config)                   how it is built from a ModelConfig
    check_settings(config)                one sentence naming the field when its ModelConfig settings are invalid
    sized_fields(config, size, blocks)    the ModelConfig fields that put it, at a size ("/nE", "/nE/k"), in
                                          some blocks (presets, suite arms and the planner share this answer)
    batch_multiple(config)                the number the (micro-)batch must be a multiple of (1: any batch); rows
                                          that couple at inference couple only within consecutive blocks of this
                                          many rows (generation's filler rows and evaluation's isolated batches)
    check_training_batch(config, rows)    one sentence when micro-batches of `rows` sequences cannot train it
    rows_couple_at_inference(config)      whether a row's output depends on other rows at evaluation and decoding
    activation_values_per_token(config)   values it keeps for backward per token (the training-memory estimate)
    audit_examples(...)                   small float64 instances for the leakage audit, with whether each is
                                          meant to be free of future-token leakage
    evaluation_modes(config, batch_size)  other ways to evaluate the same weights (e.g. MoT at other group sizes)
    trained_capacity_factor(config)       the capacity it trained with where inference routes dropless, if any
    native_role                           what the kind is in transformers' decoder models (native export), if any
    router_parameter                      the [D, E] parameter whose logits route tokens to experts, if any (the
                                          audit biases it)
    scaling_shape(config)                 (granularity, expansion rate) for the fine-grained scaling law, if any
and per instance `is_causal()`, `coupled_rows(batch)` (in the layer's present mode: the blocks of consecutive rows
whose outputs depend on one another, so evaluation may split a batch into parts that are multiples of it),
`active_params_per_token()` and `flops_per_token()`, plus two training hooks:
`on_train_step(step, steps)` (called before every optimizer step of a `steps`-step run, e.g. to end a parameter
freeze or set a scheduled temperature) and
`may_leave_parameters_unused()` (a data-parallel wrapper must then look for parameters without gradient).
Auxiliary losses (`aux_losses`) and detached statistics (`stats`) recorded during forward are collected by the
model, so the training loop never knows which routing is used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, NamedTuple

from torch import nn

from .sizing import mot_sizing

if TYPE_CHECKING:
    from ..config import ModelConfig


class EvaluationMode(NamedTuple):
    """A named way to evaluate trained weights: a group size and a routing (None: as trained)."""

    name: str
    group_size: int | None = None
    routing: str | None = None

    def settings(self) -> dict[str, object]:
        """The mode's settings by name: the keyword arguments of `mot_mode`, and the fields of its results."""
        return {"group_size": self.group_size, "routing": self.routing}


class FeedForwardLayer(nn.Module):
    """Base class of the feed-forward kinds; the defaults describe a layer where every token is on its own."""

    kind: ClassVar[str]
    """The kind's name in ModelConfig.ffn and in the registry."""

    native_role: ClassVar[str | None] = None
    """What this kind is in transformers' own decoder models, for `mot export --to hf` (export/native.py):
    "gated_mlp" (Llama's MLP; a Qwen-MoE's mlp_only_layers), "top_k_moe" (a Qwen-MoE sparse block: softmax router,
    top-k experts, dropless), or None (no counterpart: the rows of a batch couple, or the block differs)."""

    router_parameter: ClassVar[str | None] = None
    """The name of the [D, E] parameter whose logits route tokens to experts (the leakage audit biases it), or
    None when the layer routes nothing."""

    @classmethod
    def from_config(cls, config: ModelConfig) -> FeedForwardLayer:
        raise NotImplementedError

    @classmethod
    def check_settings(cls, config: ModelConfig) -> None:
        """Fail with one sentence naming the ModelConfig field when this kind's settings are invalid. ModelConfig
        asks every registered kind (`registry.check_settings`): a config carries every kind's fields, and a run may
        switch kind."""

    @classmethod
    def sized_fields(cls, config: ModelConfig, *, size: str = "", blocks: str = "all") -> dict[str, object]:
        """The ModelConfig fields that put this kind in `blocks` of a model like `config`, at the size the paper's
        naming `size` gives on config.d_ff ("/nE": group size n, n experts of width d_ff; "/nE/k": n*k experts of
        width d_ff/k; "": no experts to size)."""
        fields: dict[str, object] = {"ffn": cls.kind, "ffn_blocks": blocks}
        if size:
            sizing = mot_sizing(size, config.d_ff)
            fields.update(group_size=sizing.group_size, n_experts=sizing.n_experts, expert_size=sizing.expert_size)
        return fields

    @classmethod
    def batch_multiple(cls, config: ModelConfig) -> int:
        return 1

    @classmethod
    def check_training_batch(cls, config: ModelConfig, micro_batch: int) -> None:
        """Fail with one sentence when micro-batches of `micro_batch` sequences cannot train this kind (beyond
        `batch_multiple`, which the registry checks for every kind)."""

    @classmethod
    def rows_couple_at_inference(cls, config: ModelConfig) -> bool:
        return False

    @classmethod
    def trained_capacity_factor(cls, config: ModelConfig) -> float | None:
        """The capacity factor this kind trained with while its inference routing drops nothing (0: it trained
        dropless too), which `capacity_routing` restores; None when the kind has no capacity."""
        return None

    @classmethod
    def activation_values_per_token(cls, config: ModelConfig) -> float:
        raise NotImplementedError

    @classmethod
    def audit_examples(
        cls, *, d_model: int, group_size: int, n_experts: int
    ) -> dict[str, tuple[FeedForwardLayer, bool]]:
        return {}

    @classmethod
    def evaluation_modes(cls, config: ModelConfig, batch_size: int) -> list[EvaluationMode]:
        return []

    @classmethod
    def scaling_shape(cls, config: ModelConfig) -> tuple[float, float] | None:
        return None

    def is_causal(self) -> bool:
        """True when no output at position s can depend on a token at a later position."""
        return True

    def coupled_rows(self, batch: int) -> int:
        """In a batch of `batch` sequences, in the layer's present mode (group size, routing, train or eval): how
        many consecutive rows depend on one another (1: every row on its own; `batch`: the whole batch). A batch split
        into parts that are multiples of this gives every row the same output."""
        return 1

    def active_params_per_token(self) -> int:
        raise NotImplementedError

    def flops_per_token(self) -> int:
        return 2 * self.active_params_per_token()

    def on_train_step(self, step: int, steps: int) -> None:
        """Called by the training loop before 0-based optimizer step `step` of a run of `steps` optimizer steps;
        nothing by default."""

    def may_leave_parameters_unused(self) -> bool:
        """True when a training step may leave one of the layer's parameters without a gradient."""
        return False
