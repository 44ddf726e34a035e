"""Expert Choice sparse MoE (Zhou et al. 2022) in same-position groups (docs/method.md §2).

Tensor names carry their axes (the legend is in `layers/__init__.py`); here R indexes the (group, position) rows
and K the tokens each expert picks per group (`tokens_per_expert`).

Per group of G tokens at one position (consecutive examples, as in MoT): p[t, :] = softmax over experts of
x_t @ W_g (float32); each expert e picks the K tokens of the group with the largest p[t, e] and processes them;
a token's update is LayerNorm(sum over the experts that picked it of p[t, e] * expert_e(x_t)); tokens no expert
picked get a zero update. Groups never span positions, so the layer adds no future-token leakage.

The LayerNorm is applied to picked tokens only: the authors' code normalises every token, so an unpicked token
gets the LayerNorm bias; here it gets exactly zero, as docs/method.md §2 says. Ties between tokens with equal
probabilities (e.g. E = 1, where every p is 1) go to the earlier example of the group (a stable sort).

Every expert takes exactly K tokens per group, so the [E, R*K, D] buffer of `expert_dispatch` "padded" (gather
within each group, batched expert MLP, scatter-add) has no padding; "grouped" runs the same rows, sorted by
expert, through two grouped GEMMs (layers/experts.py) and adds them back with `index_add`; "auto" picks grouped
where `torch._grouped_mm` runs on CUDA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .base import FeedForwardLayer
from .checks import at_least_fp32, check_choice, check_positive, check_positive_ints
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
from .grouping import from_position_groups, position_groups
from .init import DEFAULT_INIT_SCALE, scaled_trunc_normal_
from .routing_stats import SparseRouting, expert_load, sparse_routing_statistics

if TYPE_CHECKING:
    from ..config import ModelConfig


class ExpertChoice(FeedForwardLayer):
    """Drop-in feed-forward sublayer: `forward(x[B, S, D]) -> [B, S, D]`; sets `stats` (no aux losses).

    Args:
        d_model: model width D.
        n_experts: number of experts E.
        expert_size: hidden width H of each expert.
        group_size: tokens per group G (consecutive examples at one position); must divide the batch.
        tokens_per_expert: tokens K each expert picks per group (1 <= K <= G; the paper: 1 of 32).
        init_scale: truncated-normal init with std sqrt(init_scale / fan_in).
        expert_dispatch: "auto" | "grouped" | "padded", how the experts run (module docstring; settable).
        activation: "relu" (the paper's experts) or "swiglu" (W1 [E, D, 2H]: gate and up; layers/experts.py).
    """

    kind = "expert_choice"
    router_parameter = "router"

    def __init__(
        self,
        d_model: int,
        *,
        n_experts: int,
        expert_size: int,
        group_size: int,
        tokens_per_expert: int = 1,
        init_scale: float = DEFAULT_INIT_SCALE,
        expert_dispatch: str = "auto",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        check_positive_ints(d_model=d_model, n_experts=n_experts, expert_size=expert_size, group_size=group_size)
        check_choice("expert_dispatch", expert_dispatch, EXPERT_DISPATCHES)
        self._check_tokens_per_expert(tokens_per_expert, group_size)
        check_positive("init_scale", init_scale)
        self.d_model = d_model
        self.n_experts = n_experts
        self.expert_size = expert_size
        self.group_size = group_size
        self.tokens_per_expert = tokens_per_expert
        self.init_scale = init_scale
        self.expert_dispatch = expert_dispatch
        self.activation = activation

        self.router = nn.Parameter(torch.empty(d_model, n_experts))  # W_g [D, E], no bias
        # [E, D, H] (SwiGLU: [E, D, 2H]), [E, H, D]
        self.w1, self.w2 = new_expert_weights(n_experts, d_model, expert_size, activation)
        self.norm = nn.LayerNorm(d_model)
        self.reset_parameters()
        self.aux_losses: dict[str, torch.Tensor] = {}
        self._last_routing: SparseRouting | None = None

    @classmethod
    def from_config(cls, config: ModelConfig) -> ExpertChoice:
        return cls(
            config.d_model,
            n_experts=config.n_experts,
            expert_size=config.expert_size,
            group_size=config.group_size,
            tokens_per_expert=config.ec_tokens_per_expert,
            init_scale=config.init_scale,
            expert_dispatch=config.expert_dispatch,
            activation=config.ffn_activation,
        )

    @classmethod
    def check_settings(cls, config: ModelConfig) -> None:
        check_choice("expert_dispatch", config.expert_dispatch, EXPERT_DISPATCHES)
        cls._check_tokens_per_expert(config.ec_tokens_per_expert, config.group_size, "ec_tokens_per_expert")

    @classmethod
    def batch_multiple(cls, config: ModelConfig) -> int:
        return config.group_size

    @classmethod
    def rows_couple_at_inference(cls, config: ModelConfig) -> bool:
        return True

    @classmethod
    def activation_values_per_token(cls, config: ModelConfig) -> float:
        """The grouped input and the output LayerNorm's input (2d) and statistics, the router probabilities,
        their sort order and sorted values (4E), and for each of its K*E/G picked tokens the token, the expert
        hidden layer after ReLU (in place; SwiGLU: 4H, `kept_hidden_values`), the expert output and the int64
        gather index."""
        d_model, hidden = config.d_model, kept_hidden_values(config.ffn_activation, config.expert_size)
        picked = config.ec_tokens_per_expert * config.n_experts / config.group_size
        return 2 * d_model + 4 * config.n_experts + 3 + picked * (2 * d_model + hidden + 2)

    @classmethod
    def audit_examples(cls, *, d_model: int, group_size: int, n_experts: int) -> dict[str, tuple[nn.Module, bool]]:
        layer = cls(d_model, n_experts=n_experts, expert_size=2 * d_model, group_size=group_size)
        swiglu = cls(d_model, n_experts=n_experts, expert_size=2 * d_model, group_size=group_size, activation="swiglu")
        return {cls.kind: (layer, True), f"{cls.kind}[swiglu]": (swiglu, True)}

    @staticmethod
    def _check_tokens_per_expert(tokens_per_expert: int, group_size: int, setting: str = "tokens_per_expert") -> None:
        if not isinstance(tokens_per_expert, int) or not 1 <= tokens_per_expert <= group_size:
            raise ValueError(f"{setting} must be an integer in 1..group_size={group_size}, got {tokens_per_expert!r}.")

    def reset_parameters(self) -> None:
        scaled_trunc_normal_(self.router, fan_in=self.d_model, scale=self.init_scale)
        init_expert_weights_(self.w1, self.w2, self.init_scale)
        self.norm.reset_parameters()

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        """1. same-position groups; 2. softmax over experts per token; 3. each expert takes its top-K tokens of
        every group (gather); 4. the experts as one batched MLP (padded) or two grouped GEMMs (grouped);
        5. gate-scale, add back, LayerNorm picked tokens.
        """
        self._check_tokens_per_expert(self.tokens_per_expert, self.group_size)  # group_size may be changed
        grouped = use_grouped_dispatch(self.expert_dispatch, x_BSD, self.w1, self.w2)
        x_RGD = position_groups(x_BSD, self.group_size)
        n_rows, group_size, dim = x_RGD.shape
        n_experts, k = self.n_experts, self.tokens_per_expert

        logits_RGE = at_least_fp32(x_RGD) @ at_least_fp32(self.router)
        probs_RGE = torch.softmax(logits_RGE, dim=-1)
        # each expert's top-K tokens of the group; a stable sort makes ties go to the earlier example
        gate_RGE, token_RGE = torch.sort(probs_RGE, dim=1, descending=True, stable=True)
        gate_RKE, token_RKE = gate_RGE[:, :k], token_RGE[:, :k]
        gate_REK, token_REK = gate_RKE.transpose(1, 2), token_RKE.transpose(1, 2)
        token_A = (token_REK + torch.arange(n_rows, device=x_BSD.device)[:, None, None] * group_size).reshape(-1)

        if grouped:  # assignments in (expert, row, choice) order, R*K of each expert; rows of x_RGD.view(R*G, D)
            sorted_A = token_A.view(n_rows, n_experts, k).transpose(0, 1).reshape(-1)
            gate_A = gate_REK.transpose(0, 1).reshape(-1)
            count_E = torch.full((n_experts,), n_rows * k, device=x_BSD.device)
            x_ND = x_RGD.reshape(n_rows * group_size, dim)
            sum_ND = grouped_expert_update(x_ND, sorted_A, gate_A, count_E, self.w1, self.w2)
            sum_RGD = sum_ND.view(n_rows, group_size, dim)
        else:
            index_RAD = token_REK.reshape(n_rows, n_experts * k, 1).expand(-1, -1, dim)
            picked_RAD = x_RGD.gather(1, index_RAD)  # [R, E*K, D]
            x_ECD = picked_RAD.view(n_rows, n_experts, k, dim).transpose(0, 1).reshape(n_experts, n_rows * k, dim)
            out_ECD = expert_mlp(x_ECD, self.w1, self.w2)
            gate_REKD = gate_REK[..., None].to(out_ECD.dtype)
            y_REKD = out_ECD.view(n_experts, n_rows, k, dim).transpose(0, 1) * gate_REKD
            y_RAD = y_REKD.reshape(n_rows, -1, dim)  # the experts' dtype (autocast's, under autocast)
            sum_RGD = y_RAD.new_zeros(x_RGD.shape).scatter_add(1, index_RAD, y_RAD)
        picked_RG = torch.zeros(n_rows, group_size, dtype=torch.bool, device=x_BSD.device)
        picked_RG.scatter_(1, token_REK.reshape(n_rows, -1), True)
        dx_RGD = self.norm(sum_RGD) * picked_RG[..., None].to(sum_RGD.dtype)

        expert_A = torch.arange(n_experts, device=x_BSD.device).repeat_interleave(k).repeat(n_rows)
        self._last_routing = SparseRouting(
            probs_RGE.detach().reshape(-1, n_experts), expert_A, token_A, torch.ones_like(expert_A, dtype=torch.bool)
        )
        return from_position_groups(dx_RGD, x_BSD.shape[1])

    @property
    def stats(self) -> dict[str, torch.Tensor]:
        """Routing diagnostics of the last forward (detached, computed when read). Load is balanced by
        construction; `unrouted_ratio` is the share of tokens no expert picked."""
        return sparse_routing_statistics(self._last_routing)

    @property
    def expert_load(self) -> torch.Tensor | None:
        """[E] share of the last forward's assignments per expert (uniform by construction)."""
        return expert_load(self._last_routing)

    def coupled_rows(self, batch: int) -> int:
        """The G consecutive examples of a group (at every position)."""
        return self.group_size

    def active_params_per_token(self) -> int:
        """K * E / G experts' worth of weights per token plus the router (the output LayerNorm is ignored); an
        expert is 2 D x H matrices (ReLU) or 3 (SwiGLU)."""
        experts = (
            expert_matrices(self.activation)
            * self.d_model
            * self.expert_size
            * self.tokens_per_expert
            * self.n_experts
            // self.group_size
        )
        return experts + self.d_model * self.n_experts

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_experts={self.n_experts}, expert_size={self.expert_size}, "
            f"group_size={self.group_size}, tokens_per_expert={self.tokens_per_expert}, "
            f"expert_dispatch={self.expert_dispatch}, activation={self.activation}"
        )
