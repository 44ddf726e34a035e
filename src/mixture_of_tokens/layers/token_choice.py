"""Token Choice sparse MoE (Switch Transformer, top-k; docs/method.md §2).

Tensor names carry their axes (the legend is in `layers/__init__.py`); here R indexes routing groups, T the tokens
of one routing group, K the choices (top_k), A = R*T*K token-expert assignments (or the kept ones), C capacity.

Each token picks its top-k experts by router probability p = softmax_e(x @ W_g) (float32; ties: lower expert
index). Every expert takes at most C = min(floor(capacity_factor * T * k / E), T) assignments per routing group;
the rest are dropped (zero update: the token passes on the residual). Output = sum over kept choices of
p[t, e] * expert_e(x_t) (the top-k probabilities are not renormalised, unless `norm_topk_prob`: then the combine
weights are p[t, e] / sum of the token's top-k p, as Mixtral and Qwen-MoE's norm_topk_prob; capacity ranking still
uses p).

Priority when an expert overflows (`drop_rule`): "probability" ranks its assignments by router probability p[t, e],
highest first; equal probabilities are ranked by token order in the routing group (for scope "batch": example, then
position; for scope "group": the example's index within its group). This is "batch prioritized routing" (Riquelme et
al. 2021): with several choices per token, a confident second choice may win over a hesitant first choice.
"authors" is the authors' code: first come, first served in that token order, and an expert keeps C - 1
assignments (their cumulative count starts at 1 and must stay below C).

Routing scopes:
    "batch": the whole batch is one routing group (T = B*S), the common implementation. When capacity binds, a
        token at position s can be dropped because of tokens at later positions: a future-token leak.
    "group": routing groups are `group_size` consecutive examples at one position (T = G, as MoT groups), so a
        token's fate depends only on same-position tokens of its group: causal-safe.
With capacity_factor None or 0 the layer is dropless and the scope does not matter (no coupling at all).

Dispatch is index-based: assignments are sorted by (expert, group, priority). `expert_dispatch` "padded" copies
the kept ones into an [E, R*C, D] slot buffer and runs the batched expert MLP; "grouped" gathers just the kept
ones, already in expert order, into [A, D] and runs two grouped GEMMs; "auto" picks grouped where
`torch._grouped_mm` runs on CUDA (layers/experts.py). Either way the results are added back with `index_add`;
there is no dense tokens x experts x capacity tensor and no loop over experts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from .base import FeedForwardLayer
from .capacity import check_top_k, expert_capacity
from .checks import at_least_fp32, check_choice, check_non_negative, check_positive, check_positive_ints
from .experts import (
    EXPERT_DISPATCHES,
    expert_matrices,
    expert_mlp,
    grouped_expert_update,
    init_expert_weights_,
    kept_hidden_values,
    new_expert_weights,
    use_grouped_dispatch,
)
from .grouping import check_group_size, from_position_groups, position_groups
from .init import DEFAULT_INIT_SCALE, scaled_trunc_normal_
from .routing_stats import SparseRouting, expert_load, sparse_routing_statistics

Scope = Literal["batch", "group"]
SCOPES: tuple[str, ...] = ("batch", "group")
DropRule = Literal["probability", "authors"]
DROP_RULES: tuple[str, ...] = ("probability", "authors")

if TYPE_CHECKING:
    from ..config import ModelConfig


def rank_within_expert(
    expert_A: torch.Tensor, priority_A: torch.Tensor, group_A: torch.Tensor, n_experts: int, n_groups: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rank of each assignment among its (group, expert)'s assignments, by priority (descending), ties by index.

    Two stable sorts: first by priority, then by (expert, group). Returns (rank_A, order_A, count_ER): the
    assignments in (expert, group, rank) order and the count per (expert, group) [E, R].
    """
    order_A = torch.argsort(priority_A, descending=True, stable=True)
    bucket_A = expert_A * n_groups + group_A
    order_A = order_A[torch.argsort(bucket_A[order_A], stable=True)]
    count_U = torch.bincount(bucket_A, minlength=n_experts * n_groups)  # U: the (expert, group) buckets
    start_U = torch.cumsum(count_U, 0) - count_U
    sorted_bucket_A = bucket_A[order_A]
    rank_A = torch.empty_like(order_A)
    rank_A[order_A] = torch.arange(order_A.numel(), device=order_A.device) - start_U[sorted_bucket_A]
    return rank_A, order_A, count_U.view(n_experts, n_groups)


class TokenChoice(FeedForwardLayer):
    """Drop-in feed-forward sublayer: `forward(x[B, S, D]) -> [B, S, D]`; sets `aux_losses` and `stats`.

    Args:
        d_model: model width D.
        n_experts: number of experts E.
        expert_size: hidden width H of each expert.
        top_k: experts per token k (1 = Switch).
        capacity_factor: cf in C = min(floor(cf * T * k / E), T); None or 0: dropless (no token is dropped).
        scope: "batch" (one routing group: the common implementation, leaks future tokens through capacity) or
            "group" (same-position groups of `group_size` consecutive examples: causal-safe).
        group_size: G for scope "group" (must divide the batch).
        load_balance_weight: alpha of the Switch load-balancing loss (0: not computed).
        z_loss_weight: w_z of the router z-loss (0: not computed).
        init_scale: truncated-normal init with std sqrt(init_scale / fan_in).
        expert_dispatch: "auto" | "grouped" | "padded", how the experts run (module docstring; settable).
        activation: "relu" (the paper's experts) or "swiglu" (W1 [E, D, 2H]: gate and up; layers/experts.py).
        norm_topk_prob: combine with the top-k probabilities renormalised to sum to 1 per token.
        drop_rule: which assignments an expert over capacity keeps: "probability" (the C most probable) or
            "authors" (the first C - 1 in token order, as the authors' code; module docstring).
    """

    kind = "token_choice"
    native_role = "top_k_moe"  # dropless at inference, as transformers' Qwen-MoE blocks (export/native.py)
    router_parameter = "router"

    def __init__(
        self,
        d_model: int,
        *,
        n_experts: int,
        expert_size: int,
        top_k: int = 1,
        capacity_factor: float | None = 1.25,
        scope: Scope = "batch",
        group_size: int | None = None,
        load_balance_weight: float = 0.01,
        z_loss_weight: float = 0.0,
        init_scale: float = DEFAULT_INIT_SCALE,
        expert_dispatch: str = "auto",
        activation: str = "relu",
        norm_topk_prob: bool = False,
        drop_rule: DropRule = "probability",
    ) -> None:
        super().__init__()
        check_positive_ints(d_model=d_model, n_experts=n_experts, expert_size=expert_size)
        check_choice("expert_dispatch", expert_dispatch, EXPERT_DISPATCHES)
        check_top_k(top_k, n_experts)
        check_choice("scope", scope, SCOPES)
        check_choice("drop_rule", drop_rule, DROP_RULES)
        if scope == "group" and (not isinstance(group_size, int) or group_size < 1):
            raise ValueError(f"scope='group' needs group_size, a positive integer; got {group_size!r}.")
        if capacity_factor is not None and capacity_factor < 0:
            raise ValueError(f"capacity_factor must be >= 0 (0 or None: dropless), got {capacity_factor}.")
        check_non_negative(load_balance_weight=load_balance_weight, z_loss_weight=z_loss_weight)
        check_positive("init_scale", init_scale)
        self.d_model, self.n_experts, self.expert_size, self.top_k = d_model, n_experts, expert_size, top_k
        self.capacity_factor = capacity_factor or None
        self.scope = scope
        self.group_size = group_size
        self.load_balance_weight = load_balance_weight
        self.z_loss_weight = z_loss_weight
        self.init_scale = init_scale
        self.expert_dispatch = expert_dispatch
        self.activation, self.norm_topk_prob, self.drop_rule = activation, norm_topk_prob, drop_rule

        self.router = nn.Parameter(torch.empty(d_model, n_experts))  # W_g [D, E], no bias
        # [E, D, H] (SwiGLU: [E, D, 2H]), [E, H, D]
        self.w1, self.w2 = new_expert_weights(n_experts, d_model, expert_size, activation)
        self.reset_parameters()
        self.aux_losses: dict[str, torch.Tensor] = {}
        self._last_routing: SparseRouting | None = None
        self._training_capacity_factor: float | None = None

    @classmethod
    def from_config(cls, config: ModelConfig) -> TokenChoice:
        return cls(
            config.d_model,
            n_experts=config.n_experts,
            expert_size=config.expert_size,
            top_k=config.tc_top_k,
            capacity_factor=config.tc_capacity_factor,
            scope=config.tc_scope,
            group_size=config.group_size,
            load_balance_weight=config.tc_load_balance_weight,
            z_loss_weight=config.tc_z_loss_weight,
            init_scale=config.init_scale,
            expert_dispatch=config.expert_dispatch,
            activation=config.ffn_activation,
            norm_topk_prob=config.tc_norm_topk_prob,
            drop_rule=config.tc_drop_rule,
        )

    @classmethod
    def check_settings(cls, config: ModelConfig) -> None:
        check_top_k(config.tc_top_k, config.n_experts, prefix="tc_")
        check_choice("tc_drop_rule", config.tc_drop_rule, DROP_RULES)
        check_choice("tc_scope", config.tc_scope, SCOPES)
        check_choice("expert_dispatch", config.expert_dispatch, EXPERT_DISPATCHES)
        check_non_negative(
            tc_capacity_factor=config.tc_capacity_factor,
            tc_load_balance_weight=config.tc_load_balance_weight,
            tc_z_loss_weight=config.tc_z_loss_weight,
        )

    @classmethod
    def batch_multiple(cls, config: ModelConfig) -> int:
        """Group scope with a capacity routes within same-position groups; otherwise any batch will do."""
        return config.group_size if config.tc_scope == "group" and config.tc_capacity_factor else 1

    @classmethod
    def check_training_batch(cls, config: ModelConfig, micro_batch: int) -> None:
        """Every expert must get at least one capacity slot per routing group of the micro-batch."""
        grouped = config.tc_scope == "group" and config.tc_capacity_factor
        n_tokens = config.group_size if grouped else micro_batch * config.max_seq_len
        expert_capacity(
            config.tc_capacity_factor, n_tokens, config.tc_top_k, config.n_experts, config.tc_drop_rule, prefix="tc_"
        )

    @classmethod
    def rows_couple_at_inference(cls, config: ModelConfig) -> bool:
        """No: at inference the layer routes dropless (`set_inference`), so a token's output is its own."""
        return False

    @classmethod
    def trained_capacity_factor(cls, config: ModelConfig) -> float | None:
        return config.tc_capacity_factor  # inference routes dropless (`set_inference`)

    @classmethod
    def activation_values_per_token(cls, config: ModelConfig) -> float:
        """The input, the router probabilities and their sort order (3E; one more E with the z-loss), the index
        vectors of the k assignments (7k), for each of them the gathered token, the selected expert output and
        its gated copy (3k*d, an upper bound: dropped assignments keep nothing), and per capacity slot the
        dispatched token and the expert hidden layer (slots per token: k*capacity_factor, E*C/G in group scope;
        dropless: as many as the busiest expert needs, taken as 1.25*k). SwiGLU experts keep 4H per slot for H."""
        d_model, k = config.d_model, config.tc_top_k
        hidden = kept_hidden_values(config.ffn_activation, config.expert_size)
        if config.tc_scope == "group" and config.tc_capacity_factor:
            capacity = expert_capacity(
                config.tc_capacity_factor, config.group_size, k, config.n_experts, config.tc_drop_rule
            )
            slots = config.n_experts * capacity / config.group_size
        else:
            slots = k * (config.tc_capacity_factor or 1.25)
        router = config.n_experts * (3 + (config.tc_z_loss_weight > 0))
        kept = min(k, slots)
        renormalised = config.n_experts + 1 if config.tc_norm_topk_prob else 0  # sorted p and the top-k sum
        return d_model + router + 7 * k + renormalised + 3 * kept * d_model + slots * (d_model + hidden)

    @classmethod
    def audit_examples(cls, *, d_model: int, group_size: int, n_experts: int) -> dict[str, tuple[nn.Module, bool]]:
        sizes = {"n_experts": n_experts, "expert_size": 2 * d_model}
        return {
            f"{cls.kind}[group]": (cls(d_model, **sizes, scope="group", group_size=group_size), True),
            f"{cls.kind}[dropless]": (cls(d_model, **sizes, capacity_factor=None), True),
            f"{cls.kind}[batch]": (cls(d_model, **sizes, scope="batch"), False),
            f"{cls.kind}[swiglu, top-2 renormalised, dropless]": (
                cls(d_model, **sizes, top_k=2, capacity_factor=None, activation="swiglu", norm_topk_prob=True),
                True,
            ),
        }

    def is_causal(self) -> bool:
        """A batch-wide capacity lets a token's drop depend on tokens at later positions."""
        return not (self.scope == "batch" and self.capacity_factor is not None)

    def coupled_rows(self, batch: int) -> int:
        """Dropless: none; with a capacity, a routing group's rows (group scope: G examples; batch scope: all)."""
        return 1 if self.capacity_factor is None else self.group_size if self.scope == "group" else batch

    def set_inference(self, enabled: bool) -> bool:
        """Route dropless (no capacity) while enabled: each token's output then depends on that token alone, so
        the layer needs no batch at inference (the point of transition tuning). Disabling restores the capacity.
        Returns whether inference routing was on before the call."""
        was_enabled = self._training_capacity_factor is not None
        if enabled and not was_enabled:
            self._training_capacity_factor = self.capacity_factor or 0.0
            self.capacity_factor = None
        elif not enabled and was_enabled:
            self.capacity_factor = self._training_capacity_factor or None
            self._training_capacity_factor = None
        return was_enabled

    def reset_parameters(self) -> None:
        scaled_trunc_normal_(self.router, fan_in=self.d_model, scale=self.init_scale)
        init_expert_weights_(self.w1, self.w2, self.init_scale)

    def _routing_groups(self, x_BSD: torch.Tensor) -> torch.Tensor:
        """[B, S, D] -> [R, T, D]. Dropless routing has no capacity, so it always uses one group."""
        if self.scope == "group" and self.capacity_factor is not None:
            return position_groups(x_BSD, self.group_size)
        return x_BSD.reshape(1, -1, x_BSD.shape[-1])

    def _from_routing_groups(self, y_RTD: torch.Tensor, x_BSD: torch.Tensor) -> torch.Tensor:
        if self.scope == "group" and self.capacity_factor is not None:
            return from_position_groups(y_RTD, x_BSD.shape[1])
        return y_RTD.view(x_BSD.shape)

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        """1. router probabilities (float32) and top-k experts per token; 2. rank each expert's assignments per
        routing group by probability and drop those beyond capacity; 3. run the kept assignments through the
        experts (grouped GEMM over expert-sorted rows, or padded per-expert slots and one batched MLP); 4. add
        p * expert output back to each token; 5. aux losses.
        """
        if self.scope == "group" and self.capacity_factor is not None:
            check_group_size(x_BSD.shape[0], self.group_size)
        grouped = use_grouped_dispatch(self.expert_dispatch, x_BSD, self.w1, self.w2)
        x_RTD = self._routing_groups(x_BSD)
        n_groups, n_tokens, dim = x_RTD.shape
        capacity = expert_capacity(self.capacity_factor, n_tokens, self.top_k, self.n_experts, self.drop_rule)
        n_experts, top_k = self.n_experts, self.top_k

        logits_RTE = at_least_fp32(x_RTD) @ at_least_fp32(self.router)
        probs_RTE = torch.softmax(logits_RTE, dim=-1)
        # top-k experts per token; a stable sort makes equal probabilities go to the lower expert index
        gate_RTE, expert_RTE = torch.sort(probs_RTE, dim=-1, descending=True, stable=True)
        gate_RTK, expert_RTK = gate_RTE[..., :top_k], expert_RTE[..., :top_k]
        # capacity ranks by router probability p, or (the authors' rule) by token order alone: equal priorities
        priority_RTK = gate_RTK.detach() if self.drop_rule == "probability" else torch.zeros_like(gate_RTK)
        if self.norm_topk_prob:  # combine weights summing to 1 per token
            gate_RTK = gate_RTK / gate_RTK.sum(dim=-1, keepdim=True)

        # Flat assignments in (group, token, choice) order; `token_A` indexes the rows of x_RTD.view(R*T, D).
        expert_A = expert_RTK.reshape(-1)
        token_A = torch.arange(n_groups * n_tokens, device=x_BSD.device).repeat_interleave(top_k)
        group_A = token_A // n_tokens
        rank_A, order_A, count_ER = rank_within_expert(expert_A, priority_RTK.reshape(-1), group_A, n_experts, n_groups)

        # x_ND and gate_A are taken after the device syncs: torch.compile breaks its graph there and (torch 2.13)
        # fails to replay a chain of views carried across the break
        if grouped:  # the kept assignments in (expert, group, rank) order: one row each, no padding
            if capacity is None:  # dropless: every assignment, with no device sync
                kept_A, sorted_A, count_E = torch.ones_like(rank_A, dtype=torch.bool), order_A, count_ER.sum(dim=1)
            else:
                kept_A = rank_A < capacity
                sorted_A, count_E = order_A[kept_A[order_A]], count_ER.clamp(max=capacity).sum(dim=1)
            x_ND, gate_A = x_RTD.reshape(n_groups * n_tokens, dim), gate_RTK.reshape(-1)
            dx_ND = grouped_expert_update(x_ND, token_A[sorted_A], gate_A[sorted_A], count_E, self.w1, self.w2)
        else:
            if capacity is None:  # dropless: as many slots as the busiest expert needs (one device sync)
                capacity = max(int(count_ER.max()), 1)
            kept_A = rank_A < capacity
            kept = kept_A.nonzero().squeeze(-1)
            x_ND, gate_A = x_RTD.reshape(n_groups * n_tokens, dim), gate_RTK.reshape(-1)
            slot_A = ((expert_A[kept] * n_groups + group_A[kept]) * capacity + rank_A[kept]).contiguous()
            kept_token_A = token_A[kept]
            slots_CD = x_ND.new_zeros(n_experts * n_groups * capacity, dim).index_copy(0, slot_A, x_ND[kept_token_A])
            out_ECD = expert_mlp(slots_CD.view(n_experts, n_groups * capacity, dim), self.w1, self.w2)
            y_AD = out_ECD.reshape(-1, dim)[slot_A] * gate_A[kept].to(out_ECD.dtype)[:, None]
            dx_ND = x_ND.new_zeros(x_ND.shape).index_add(0, kept_token_A, y_AD.to(x_ND.dtype))

        probs_NE = probs_RTE.reshape(-1, n_experts)
        self.aux_losses = self._aux_losses(probs_NE, logits_RTE.reshape(-1, n_experts), expert_A)
        self._last_routing = SparseRouting(probs_NE.detach(), expert_A.detach(), token_A, kept_A.detach())
        return self._from_routing_groups(dx_ND.view(n_groups, n_tokens, dim), x_BSD)

    def _aux_losses(
        self, probs_NE: torch.Tensor, logits_NE: torch.Tensor, expert_A: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Switch load balancing alpha * E * sum_e mean_t p[t,e] * count_e / N (counts before drops, N = all
        tokens of the forward) and router z-loss w_z * mean_t logsumexp(z_t)^2; each only when its weight > 0."""
        losses: dict[str, torch.Tensor] = {}
        n_tokens = probs_NE.shape[0]
        if self.load_balance_weight > 0:
            fraction_E = torch.bincount(expert_A, minlength=self.n_experts).to(probs_NE.dtype) / n_tokens
            losses["load_balance"] = (
                self.load_balance_weight * self.n_experts * (probs_NE.mean(dim=0) * fraction_E).sum()
            )
        if self.z_loss_weight > 0:
            losses["router_z"] = self.z_loss_weight * torch.logsumexp(logits_NE, dim=-1).square().mean()
        return losses

    @property
    def stats(self) -> dict[str, torch.Tensor]:
        """Routing diagnostics of the last forward (detached, computed when read)."""
        return sparse_routing_statistics(self._last_routing)

    @property
    def expert_load(self) -> torch.Tensor | None:
        """[E] share of the last forward's assignments per expert, before drops (for `CollapseMonitor`)."""
        return expert_load(self._last_routing)

    def active_params_per_token(self) -> int:
        """k experts' worth of weights (2 D x H matrices each, SwiGLU 3) plus the router (nominal: capacity drops
        are not subtracted)."""
        matrices = expert_matrices(self.activation)
        return matrices * self.d_model * self.expert_size * self.top_k + self.d_model * self.n_experts

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_experts={self.n_experts}, expert_size={self.expert_size}, "
            f"top_k={self.top_k}, capacity_factor={self.capacity_factor}, scope={self.scope}, "
            f"group_size={self.group_size}, expert_dispatch={self.expert_dispatch}, activation={self.activation}, "
            f"norm_topk_prob={self.norm_topk_prob}, drop_rule={self.drop_rule}"
        )
