"""Parameter and FLOP counters a user can print (`mot train --dry-run`, the trainer's header line).

FLOPs are 2 x multiply-adds of matmuls (norms, softmaxes and biases are ignored, as in Kaplan et al.).
Attention scores count the full S x S product (the causal mask is not subtracted), like nanoGPT's MFU estimate.
"Active" parameters are those whose multiply-adds one token pays for: for an MoT layer the experts' share
2*D*E*H/G plus the controller D*E, so an MoT model and its dense twin have nearly equal active counts. Token
Choice pays k experts (2*D*H*k) plus the router D*E (nominal: capacity drops are not subtracted); Expert Choice
pays K*E/G experts (K tokens per expert per group of G) plus the router. A SwiGLU expert or dense layer is three
D x H matrices instead of two; grouped-query attention's key and value projections are D x (kv heads x head
width) each. Norms (LayerNorm, RMSNorm, query/key norms) and RoPE's rotations are not counted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from .blocks import attention_params


@dataclass(frozen=True)
class ModelCounts:
    total_params: int
    embedding_params: int
    non_embedding_params: int
    active_params_per_token: int
    forward_flops_per_token: int

    @property
    def train_flops_per_token(self) -> int:
        """Forward + backward (backward = 2x forward)."""
        return 3 * self.forward_flops_per_token

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "train_flops_per_token": self.train_flops_per_token}

    def summary(self) -> str:
        return (
            f"params {human(self.total_params)} total, {human(self.non_embedding_params)} non-embedding, "
            f"{human(self.active_params_per_token)} active/token; "
            f"{human(self.forward_flops_per_token)}FLOP/token forward, "
            f"{human(self.train_flops_per_token)}FLOP/token train"
        )


def human(count: float) -> str:
    for unit, size in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(count) >= size:
            return f"{count / size:.2f}{unit}"
    return f"{count:.0f}"


def _ffn_active_params(ffn: nn.Module) -> int:
    """Every feed-forward layer of this package says what a token pays for; any other module counts in full."""
    if hasattr(ffn, "active_params_per_token"):
        return int(ffn.active_params_per_token())
    return sum(p.numel() for p in ffn.parameters())


def _ffn_forward_flops(ffn: nn.Module) -> int:
    if hasattr(ffn, "flops_per_token"):
        return int(ffn.flops_per_token())
    return 2 * _ffn_active_params(ffn)


def count_model(model: nn.Module, seq_len: int | None = None) -> ModelCounts:
    """Counts for a `Transformer`; `seq_len` (default: the config's context) sets the attention FLOPs."""
    config = model.config
    seq_len = seq_len or config.max_seq_len
    total = sum(p.numel() for p in model.parameters())  # tied weights are one parameter
    embedding = model.token_embedding.weight.numel()
    if model.position_embedding is not None:  # rotary positions have no table
        embedding += model.position_embedding.weight.numel()
    if not config.tie_embeddings:
        embedding += model.head.weight.numel()
    d = config.d_model
    active = 0
    forward = 2 * d * config.vocab_size  # output head
    attn_params = attention_params(config)  # 4*d*d for multi-head; less with grouped-query attention
    for block in model.blocks:
        active += attn_params + _ffn_active_params(block.ffn)
        forward += 2 * attn_params + 2 * 2 * seq_len * d + _ffn_forward_flops(block.ffn)
    return ModelCounts(
        total_params=total,
        embedding_params=embedding,
        non_embedding_params=total - embedding,
        active_params_per_token=active,
        forward_flops_per_token=forward,
    )
