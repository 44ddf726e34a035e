"""Decoder-only pre-LN Transformer with a per-block choice of feed-forward sublayer.

The model is single-device and knows nothing of parallelism; wrap it with DDP/FSDP from outside.
Layers may record `aux_losses` (added to the LM loss) and `stats` (detached diagnostics) during forward.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .layers import FeedForward, MixtureOfTokens
from .layers.init import scaled_trunc_normal_


class CausalSelfAttention(nn.Module):
    """Multi-head causal attention without biases, fused through `scaled_dot_product_attention`."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        batch, seq_len, dim = x_BSD.shape
        # [B, S, 3D] -> 3 x [B, heads, S, D/heads]
        q_BHSK, k_BHSK, v_BHSK = (
            self.qkv(x_BSD).view(batch, seq_len, 3, self.n_heads, dim // self.n_heads).permute(2, 0, 3, 1, 4)
        )
        y_BHSK = F.scaled_dot_product_attention(q_BHSK, k_BHSK, v_BHSK, is_causal=True)
        return self.out(y_BHSK.transpose(1, 2).reshape(batch, seq_len, dim))


def build_ffn(kind: str, config: ModelConfig) -> nn.Module:
    """The feed-forward sublayer of one block."""
    if kind == "dense":
        return FeedForward(config.d_model, config.d_ff)
    if kind == "mot":
        return MixtureOfTokens(
            config.d_model,
            config.n_experts,
            config.expert_size,
            config.group_size,
            temperature=config.mot_temperature,
            learnable_temperature=config.mot_learnable_temperature,
            routing=config.mot_routing,
            emit=config.mot_emit,
            init_scale=config.init_scale,
        )
    raise ValueError(f"feed-forward kind {kind!r} is not supported; allowed values: dense, mot.")


class Block(nn.Module):
    """x + attn(LN(x)), then x + ffn(LN(x))."""

    def __init__(self, config: ModelConfig, ffn_kind: str) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config.d_model, config.n_heads)
        self.ffn_norm = nn.LayerNorm(config.d_model)
        self.ffn = build_ffn(ffn_kind, config)

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        x_BSD = x_BSD + self.attn(self.attn_norm(x_BSD))
        return x_BSD + self.ffn(self.ffn_norm(x_BSD))


@dataclass
class ModelOutput:
    """logits[B, S, V]; with targets also the total loss = lm_loss + sum of auxiliary losses."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)


class Transformer(nn.Module):
    """`Transformer(config)(ids[B, S], targets[B, S] | None) -> ModelOutput`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.max_seq_len, config.d_model)
        self.blocks = nn.ModuleList(Block(config, kind) for kind in config.block_ffn_kinds())
        self.final_norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.reset_parameters()
        if config.tie_embeddings:
            self.head.weight = self.token_embedding.weight

    def reset_parameters(self) -> None:
        """Truncated normal, std sqrt(init_scale / fan_in), for every weight (METHOD.md §1); zero biases.

        Embedding tables count d_model as their fan-in (a one-hot input has no meaningful fan-in).
        """
        scale = self.config.init_scale
        for module in self.modules():
            if isinstance(module, nn.Linear):
                scaled_trunc_normal_(module.weight, fan_in=module.in_features, scale=scale)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                scaled_trunc_normal_(module.weight, fan_in=module.embedding_dim, scale=scale)
            elif isinstance(module, MixtureOfTokens):
                module.reset_parameters()

    def forward(self, ids_BS: torch.Tensor, targets_BS: torch.Tensor | None = None) -> ModelOutput:
        batch, seq_len = ids_BS.shape
        if seq_len > self.config.max_seq_len:
            raise ValueError(f"sequence length {seq_len} exceeds max_seq_len={self.config.max_seq_len}.")
        positions_S = torch.arange(seq_len, device=ids_BS.device)
        x_BSD = self.token_embedding(ids_BS) + self.position_embedding(positions_S)
        for block in self.blocks:
            x_BSD = block(x_BSD)
        logits_BSV = self.head(self.final_norm(x_BSD))
        if targets_BS is None:
            return ModelOutput(logits=logits_BSV)
        lm_loss = F.cross_entropy(logits_BSV.float().flatten(0, 1), targets_BS.flatten())
        aux_losses = self.aux_losses()
        loss = lm_loss + sum(aux_losses.values()) if aux_losses else lm_loss
        return ModelOutput(logits=logits_BSV, loss=loss, lm_loss=lm_loss, aux_losses=aux_losses)

    def aux_losses(self) -> dict[str, torch.Tensor]:
        """Auxiliary losses the layers recorded in the last forward, keyed 'block{i}.{name}'."""
        losses: dict[str, torch.Tensor] = {}
        for index, block in enumerate(self.blocks):
            for name, value in getattr(block.ffn, "aux_losses", {}).items():
                losses[f"block{index}.{name}"] = value
        return losses

    def routing_stats(self) -> dict[str, float]:
        """Detached routing diagnostics of the last forward, keyed 'block{i}.{name}' (syncs the device)."""
        stats: dict[str, float] = {}
        for index, block in enumerate(self.blocks):
            for name, value in getattr(block.ffn, "stats", {}).items():
                stats[f"block{index}.{name}"] = float(value)
        return stats

    def mot_layers(self) -> list[MixtureOfTokens]:
        return [block.ffn for block in self.blocks if isinstance(block.ffn, MixtureOfTokens)]


@contextlib.contextmanager
def mot_mode(model: nn.Module, *, group_size: int | None = None, routing: str | None = None) -> Iterator[None]:
    """Temporarily evaluate every MoT layer at another group size and/or routing (e.g. "discrete")."""
    layers = [m for m in model.modules() if isinstance(m, MixtureOfTokens)]
    saved = [(layer.group_size, layer.routing) for layer in layers]
    if group_size is not None and group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size}.")
    if routing is not None and routing not in ("softmax", "uniform", "discrete"):
        raise ValueError(f"routing={routing!r} is not supported; allowed values: softmax, uniform, discrete.")
    try:
        for layer in layers:
            layer.group_size = group_size or layer.group_size
            layer.routing = routing or layer.routing
        yield
    finally:
        for layer, (old_group_size, old_routing) in zip(layers, saved):
            layer.group_size, layer.routing = old_group_size, old_routing
