"""Mixture of Tokens (Antoniak et al., 2024): a continuous MoE that mixes tokens across examples. Tensor names carry
their axes (the legend is in `layers/__init__.py`); R indexes the (group, position) rows.

For each group of G tokens at the same position (consecutive examples), every expert e gets one mixed token
    merge:  m[r,e] = sum_g w[r,g,e] * x[r,g]         w = softmax over the group of (x @ W_c) / tau
    expert: y[r,e] = relu(m[r,e] @ W1[e]) @ W2[e]      (or SwiGLU: layers/experts.py)
    emit:   dx[r,g] = sum_e w[r,g,e] * y[r,e]
Every expert processes exactly one token per group, so load is balanced and nothing is dropped.

The method is `mixture_of_tokens` below, in one function; the class adds the grouping, the options (the authors'
ablations, a scheduled tau, within-sequence groups for masked LM: docs/layer.md) and the compute paths.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from . import mot_options
from .base import EvaluationMode, FeedForwardLayer
from .checks import check_choice, check_positive, check_positive_ints
from .experts import expert_matrices, expert_mlp, init_expert_weights_, kept_hidden_values, new_expert_weights
from .grouping import from_position_groups, from_sequence_groups, position_groups, sequence_groups
from .init import DEFAULT_INIT_SCALE, scaled_trunc_normal_
from .mot_options import check_layer_options, scheduled_temperature, trained_temperature
from .mot_recompute import recomputing_mix
from .mot_routing import emit_over_experts, group_softmax, group_weights
from .routing_stats import routing_statistics

if TYPE_CHECKING:
    from ..config import ModelConfig


def mixture_of_tokens(
    x_RGD: torch.Tensor, controller_DE: torch.Tensor, w1_EDH: torch.Tensor, w2_EHD: torch.Tensor, tau: float = 1.0
) -> torch.Tensor:
    """The method (Algorithm 1) on groups of G tokens [R, G, D] -> the update [R, G, D]: weights from one softmax
    over each group, then merge, expert and emit. The layer below adds the grouping and the ablations."""
    weights_RGE = group_softmax(x_RGD @ controller_DE, tau).to(x_RGD.dtype)  # over the G tokens of a group
    return merge_expert_emit(x_RGD, weights_RGE, weights_RGE, w1_EDH, w2_EHD)


def merge_expert_emit(
    x_RGD: torch.Tensor, merge_RGE: torch.Tensor, emit_RGE: torch.Tensor, w1_EDH: torch.Tensor, w2_EHD: torch.Tensor
) -> torch.Tensor:
    """Merge, expert, emit (the "plain" compute path): one mixed token per expert and group, each expert's MLP on
    its mixed tokens (one bmm), each output emitted back to the group's tokens."""
    mixed_RED = torch.bmm(merge_RGE.transpose(1, 2), x_RGD)  # merge: m[r,e] = sum_g w[r,g,e] x[r,g]
    out_ERD = expert_mlp(mixed_RED.transpose(0, 1), w1_EDH, w2_EHD)  # expert: [R, E, D] read as [E, R, D], no copy
    return torch.bmm(emit_RGE, out_ERD.transpose(0, 1))  # emit: dx[r,g] = sum_e w[r,g,e] y[r,e]


COMPUTE_PATHS = {"plain": merge_expert_emit, "recompute": recomputing_mix}
"""How merge, experts and emit are computed in training (`compute`); each equals the plain path, forward and
gradients. A fused kernel would be one more module and one more entry here."""


class MixtureOfTokens(FeedForwardLayer):
    """Drop-in feed-forward sublayer: `forward(x[B, S, D]) -> [B, S, D]` (every option: docs/layer.md).

    Args:
        d_model, n_experts, expert_size, group_size: D, E, H, G. G must divide the batch; it may be changed after
            training (`layer.group_size = 1`): no parameter depends on it.
        temperature: tau (> 0); the initial value when learnable or scheduled. A fixed tau is a Python float
            (`fixed_temperature`), used exactly in every dtype.
        learnable_temperature: "none", "scalar" or "per_expert" (a learned log tau).
        routing: "softmax" (the method), "uniform" (every weight 1/G, the paper's baseline) or "discrete" (each
            expert takes its group's top token and writes back to it alone: the tau -> 0 limit, for evaluation).
        discrete_rule: "project" (the first top token; emit over experts stays soft) or "authors" (every tied top
            token gets 1, and emit over experts is one-hot: their `argmax_one_hot`).
        emit: "group" (emit with the merge weights, the method) or "experts" (a softmax over experts).
        separate_emit_controller: a second controller W_e [D, E] for the emit weights (the authors' ablation).
        grouping: "consecutive" (the method) or "random": in training each forward permutes the batch rows
            (`torch.randperm`), groups them and undoes the permutation; a group stays at one position, so it stays
            causal-safe. The package's own variant, not the authors' (docs/method.md). Evaluation is consecutive.
        group_axis: "across_batch" (the method) or "within_sequence" (G consecutive positions of one sequence:
            couples no sequences but sees later positions, so for bidirectional attention only).
        temperature_freeze_steps: a learnable tau gets no gradient nor AdamW update for the first N steps.
        temperature_schedule, final_temperature, anneal_steps: "constant", or "cosine" / "geometric" from
            `temperature` at step 0 to `final_temperature` at step anneal_steps - 1 (0: the run's last step); set by
            `on_train_step`. A built layer holds the final tau.
        compute: how merge, experts and emit run with gradients (`COMPUTE_PATHS`): "plain", or "recompute" (no
            mixed tokens kept for backward, `layers/mot_recompute.py`: E/G x D fewer activation values per token).
        init_scale: truncated-normal init with std sqrt(init_scale / fan_in).
        activation: "relu" (the paper's experts) or "swiglu" (W1 [E, D, 2H]: gate and up; layers/experts.py).
    """

    kind = "mot"
    router_parameter = "controller"

    def __init__(
        self,
        d_model: int,
        *,
        n_experts: int,
        expert_size: int,
        group_size: int,
        temperature: float = 1.0,
        learnable_temperature: mot_options.LearnableTemperature = "none",
        routing: mot_options.Routing = "softmax",
        discrete_rule: mot_options.DiscreteRule = "project",
        emit: mot_options.Emit = "group",
        separate_emit_controller: bool = False,
        grouping: mot_options.Grouping = "consecutive",
        group_axis: mot_options.GroupAxis = "across_batch",
        temperature_freeze_steps: int = 0,
        temperature_schedule: mot_options.TemperatureSchedule = "constant",
        final_temperature: float = 0.0,
        anneal_steps: int = 0,
        compute: mot_options.Compute = "plain",
        init_scale: float = DEFAULT_INIT_SCALE,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_positive_ints(d_model=d_model, n_experts=n_experts, expert_size=expert_size, group_size=group_size)
        check_positive("temperature", temperature)
        check_positive("init_scale", init_scale)
        check_layer_options(
            learnable_temperature=learnable_temperature, routing=routing, discrete_rule=discrete_rule, emit=emit,
            grouping=grouping, group_axis=group_axis, compute=compute, freeze_steps=temperature_freeze_steps,
            schedule=temperature_schedule, final_temperature=final_temperature, anneal_steps=anneal_steps,
        )  # fmt: skip

        self.d_model = d_model
        self.n_experts = n_experts
        self.expert_size = expert_size
        self.group_size = group_size
        self.routing = routing
        self.discrete_rule = discrete_rule
        self.emit = emit
        self.learnable_temperature = learnable_temperature
        self.grouping = grouping
        self.group_axis = group_axis
        self.temperature_freeze_steps = temperature_freeze_steps
        self.temperature_schedule = temperature_schedule
        self.initial_temperature = float(temperature)
        self.final_temperature = float(final_temperature)
        self.anneal_steps = anneal_steps
        self.compute = compute

        self.controller = nn.Parameter(torch.empty(d_model, n_experts))  # W_c [D, E]
        if separate_emit_controller:
            self.emit_controller = nn.Parameter(torch.empty(d_model, n_experts))  # W_e [D, E]
        else:
            self.register_parameter("emit_controller", None)
        self.activation = activation
        # [E, D, H] (SwiGLU: [E, D, 2H]), [E, H, D]
        self.w1, self.w2 = new_expert_weights(n_experts, d_model, expert_size, activation)
        self.fixed_temperature = trained_temperature(temperature, temperature_schedule, final_temperature)
        if learnable_temperature == "none":
            self.register_parameter("log_temperature", None)
        else:
            shape = () if learnable_temperature == "scalar" else (n_experts,)
            self.log_temperature = nn.Parameter(torch.full(shape, math.log(temperature)))
        self.init_scale = init_scale
        self.reset_parameters()
        self._last_routing: tuple[torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def from_config(cls, config: ModelConfig) -> MixtureOfTokens:
        return cls(
            config.d_model,
            n_experts=config.n_experts,
            expert_size=config.expert_size,
            group_size=config.group_size,
            temperature=config.mot_temperature,
            learnable_temperature=config.mot_learnable_temperature,
            routing=config.mot_routing,
            discrete_rule=config.mot_discrete_rule,
            emit=config.mot_emit,
            separate_emit_controller=config.mot_separate_emit_controller,
            grouping=config.mot_grouping,
            group_axis=config.mot_group_axis,
            temperature_freeze_steps=config.mot_temperature_freeze_steps,
            temperature_schedule=config.mot_temperature_schedule,
            final_temperature=config.mot_temperature_final,
            anneal_steps=config.mot_temperature_anneal_steps,
            compute=config.mot_compute,
            init_scale=config.init_scale,
            activation=config.ffn_activation,
        )

    @classmethod
    def check_settings(cls, config: ModelConfig) -> None:
        mot_options.check_config(config)

    @classmethod
    def batch_multiple(cls, config: ModelConfig) -> int:
        """G for across-batch groups; 1 for within-sequence groups (they tile the sequence, not the batch)."""
        return config.group_size if config.mot_group_axis == "across_batch" else 1

    @classmethod
    def rows_couple_at_inference(cls, config: ModelConfig) -> bool:
        """Across-batch groups couple the sequences of a group; within-sequence groups never do."""
        return config.mot_group_axis == "across_batch"

    @classmethod
    def activation_values_per_token(cls, config: ModelConfig) -> float:
        """The grouped input, the merge weights (E; one more E-vector for emit weights of their own, a separate
        emit controller or a learnable temperature), and for each of its E/G mixed tokens: the mixed token, the
        expert hidden layer after ReLU (in place) and the expert output; with `mot_compute="recompute"` the mixed tokens
        are not kept. (A micro-batch of a single group keeps
        one more d: its grouped input is a view of the input, copied again for the controller.) SwiGLU experts keep
        4H between their matmuls (`kept_hidden_values`), 2H when recomputed (the projection alone)."""
        d_model = config.d_model
        hidden = kept_hidden_values(config.ffn_activation, config.expert_size)
        recompute = config.mot_compute == "recompute"
        if recompute and config.ffn_activation == "swiglu":
            hidden = 2 * config.expert_size
        extra_weights = (
            (config.mot_emit == "experts")
            + config.mot_separate_emit_controller
            + (config.mot_learnable_temperature != "none")
        )
        weights = config.n_experts * (1 + extra_weights)
        kept_per_mixed_token = (1 if recompute else 2) * d_model + hidden  # without m when recomputed
        return d_model + weights + config.n_experts / config.group_size * kept_per_mixed_token

    @classmethod
    def audit_examples(cls, *, d_model: int, group_size: int, n_experts: int) -> dict[str, tuple[nn.Module, bool]]:
        """The method (causal-safe), and within-sequence groups (meant for bidirectional attention only: under
        causal attention they leak later positions of the same sequence, and couple no sequences)."""
        layer = cls(d_model, n_experts=n_experts, expert_size=2 * d_model, group_size=group_size)
        within = cls(
            d_model, n_experts=n_experts, expert_size=2 * d_model, group_size=group_size, group_axis="within_sequence"
        )
        swiglu = cls(d_model, n_experts=n_experts, expert_size=2 * d_model, group_size=group_size, activation="swiglu")
        return {
            cls.kind: (layer, True),
            f"{cls.kind}[swiglu]": (swiglu, True),
            f"{cls.kind} within_sequence": (within, False),
        }

    @classmethod
    def evaluation_modes(cls, config: ModelConfig, batch_size: int) -> list[EvaluationMode]:
        """As trained, discrete (argmax) routing, and group sizes 1, G/4, 2G (those dividing the batch; for
        within-sequence groups, those dividing max_seq_len)."""
        group = config.group_size
        tiled = batch_size if config.mot_group_axis == "across_batch" else config.max_seq_len
        modes = [
            EvaluationMode(f"trained (G={group}, {config.mot_routing})"),
            EvaluationMode(f"discrete G={group}", None, "discrete"),
        ]
        for size in dict.fromkeys((1, group // 4, 2 * group)):
            if size >= 1 and size != group and tiled % size == 0:
                modes.append(EvaluationMode(f"G={size}", size))
        return modes

    @classmethod
    def scaling_shape(cls, config: ModelConfig) -> tuple[float, float]:
        """Granularity d_ff / H (the k of "/nE/k") and expansion rate G (the n)."""
        return config.d_ff / config.expert_size, float(config.group_size)

    def set_mode(self, *, group_size: int | None = None, routing: str | None = None) -> None:
        """Evaluate at another group size and/or routing (no parameter depends on either)."""
        if group_size is not None:
            check_positive_ints(group_size=group_size)
            self.group_size = group_size
        if routing is not None:
            check_choice("routing", routing, mot_options.ROUTINGS)
            self.routing = routing

    def reset_parameters(self) -> None:
        scaled_trunc_normal_(self.controller, fan_in=self.d_model, scale=self.init_scale)
        if self.emit_controller is not None:
            scaled_trunc_normal_(self.emit_controller, fan_in=self.d_model, scale=self.init_scale)
        init_expert_weights_(self.w1, self.w2, self.init_scale)

    def on_train_step(self, step: int, steps: int) -> None:
        """Before 0-based step `step` of a `steps`-step run: a learnable temperature requires no gradient before
        step `temperature_freeze_steps`; a scheduled tau takes its value at `step`."""
        if self.log_temperature is not None and self.temperature_freeze_steps > 0:
            self.log_temperature.requires_grad_(step >= self.temperature_freeze_steps)
        if self.temperature_schedule != "constant":
            self.fixed_temperature = scheduled_temperature(
                step, schedule=self.temperature_schedule, initial=self.initial_temperature,
                final=self.final_temperature, anneal_steps=self.anneal_steps, run_steps=steps,
            )  # fmt: skip

    def is_causal(self) -> bool:
        """Across-batch groups stay at one position; within-sequence groups mix later positions in."""
        return self.group_axis == "across_batch"

    def coupled_rows(self, batch: int) -> int:
        """A group's G consecutive examples; random grouping in training: the whole batch; within-sequence: none."""
        if self.group_axis == "within_sequence":
            return 1
        return batch if self.training and self.grouping != "consecutive" else self.group_size

    def may_leave_parameters_unused(self) -> bool:
        """Uniform and discrete routing give the controllers no gradient; a frozen temperature gets none."""
        return self.routing != "softmax" or (self.log_temperature is not None and self.temperature_freeze_steps > 0)

    @property
    def temperature(self) -> torch.Tensor:
        """tau as a tensor: [] or [E] (float64 when fixed, so the value is exact)."""
        if self.log_temperature is None:
            return torch.tensor(self.fixed_temperature, dtype=torch.float64)
        return self.log_temperature.exp()

    def _tau(self) -> float | torch.Tensor:
        """What the logits are divided by: the fixed tau as a Python float (exact in every dtype), or the learned
        exp(log tau) [] / [E]."""
        return self.fixed_temperature if self.log_temperature is None else self.log_temperature.exp()

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        """1. group G consecutive examples at each position (random grouping: of the permuted batch; within-sequence:
        G consecutive positions), R groups; 2. merge, experts and emit over the groups (`_mix`, as
        `mixture_of_tokens`); 3. undo the grouping."""
        if self.group_axis == "within_sequence":
            x_RGD = sequence_groups(x_BSD, self.group_size)  # a view: row r holds G consecutive positions
            return from_sequence_groups(self._mix(x_RGD), x_BSD.shape[0])
        rows_B = self._row_permutation(x_BSD.shape[0], x_BSD.device)
        if rows_B is not None:
            x_BSD = x_BSD.index_select(0, rows_B)  # row i of the permuted batch is row rows_B[i]
        x_RGD = position_groups(x_BSD, self.group_size)  # the layer's one input copy (consecutive grouping)
        dx_BSD = from_position_groups(self._mix(x_RGD), x_BSD.shape[1])
        return dx_BSD if rows_B is None else dx_BSD.index_select(0, torch.argsort(rows_B))

    def _mix(self, x_RGD: torch.Tensor) -> torch.Tensor:
        """Merge, experts and emit over groups of G tokens [R, G, D] -> [R, G, D], whatever the grouping."""
        logits_RGE = x_RGD @ self.controller.to(x_RGD.dtype)
        emit_logits_RGE = None if self.emit_controller is None else x_RGD @ self.emit_controller.to(x_RGD.dtype)
        merge_RGE, emit_RGE = self._routing_weights(logits_RGE, emit_logits_RGE)

        compute = COMPUTE_PATHS[self.compute if torch.is_grad_enabled() else "plain"]  # no backward: nothing to save
        dx_RGD = compute(x_RGD, merge_RGE, emit_RGE, self.w1, self.w2)
        self._last_routing = (logits_RGE.detach(), merge_RGE.detach())
        return dx_RGD

    def _row_permutation(self, batch: int, device: torch.device) -> torch.Tensor | None:
        """Random grouping in training: a fresh permutation of the batch rows [B] from torch's RNG on `device`;
        None (consecutive groups) otherwise."""
        if self.grouping == "consecutive" or not self.training:
            return None
        return torch.randperm(batch, device=device)

    def _routing_weights(
        self, logits_RGE: torch.Tensor, emit_logits_RGE: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Merge weights (normalised over the group axis) and emit weights: the merge weights themselves (the
        method), or from the emit controller's logits, or over experts (`mot_routing.py`)."""
        rule = {"routing": self.routing, "discrete_rule": self.discrete_rule, "tau": self._tau()}
        merge_RGE = group_weights(logits_RGE, **rule)
        source_RGE = logits_RGE if emit_logits_RGE is None else emit_logits_RGE
        if self.emit == "experts":
            return merge_RGE, emit_over_experts(source_RGE, **rule)
        return merge_RGE, merge_RGE if emit_logits_RGE is None else group_weights(source_RGE, **rule)

    @property
    def stats(self) -> dict[str, torch.Tensor]:
        """Routing diagnostics of the last forward (detached), the ones the authors log.

        The forward keeps detached logits and merge weights; the statistics are computed when read, so a
        training step that does not log pays nothing for them.
        """
        if self._last_routing is None:
            return {}
        varying = self.learnable_temperature != "none" or self.temperature_schedule != "constant"
        tau = self.temperature.detach() if varying else None  # logged as temperature_mean: learned or scheduled
        return routing_statistics(*self._last_routing, learned_temperature=tau)

    @property
    def n_controllers(self) -> int:
        """1, or 2 with a separate emit controller."""
        return 1 if self.emit_controller is None else 2

    def active_params_per_token(self) -> int:
        """Weights one token pays multiply-adds for: the experts' share 2*D*E*H/G (SwiGLU: 3*D*E*H/G) plus the
        controller(s) D*E."""
        matrices = expert_matrices(self.activation)
        experts = matrices * self.d_model * self.n_experts * self.expert_size // self.group_size
        return experts + self.n_controllers * self.d_model * self.n_experts

    def flops_per_token(self) -> int:
        """Forward FLOPs (2 x multiply-adds) per token at the current group size.

        Experts: E*H*D*2 per group position, i.e. per token 2*2*D*E*H/G (SwiGLU: 2*3*D*E*H/G); controller,
        merge and emit add 3*D*E (4*D*E with a separate emit controller).
        """
        experts = (
            2 * expert_matrices(self.activation) * self.d_model * self.n_experts * self.expert_size // self.group_size
        )
        return experts + 2 * (self.n_controllers + 2) * self.d_model * self.n_experts

    def extra_repr(self) -> str:
        names = ("d_model", "n_experts", "expert_size", "group_size", "routing", "discrete_rule", "emit",
                 "learnable_temperature", "grouping", "group_axis", "compute", "activation")  # fmt: skip
        text = ", ".join(f"{name}={getattr(self, name)}" for name in names)
        text += f", separate_emit_controller={self.emit_controller is not None}"
        if self.temperature_schedule != "constant":
            text += (f", temperature_schedule={self.temperature_schedule} ({self.initial_temperature} -> "
                     f"{self.final_temperature} over {self.anneal_steps or 'all'} steps)")  # fmt: skip
        return text
