"""The Transformer block's options beyond the feed-forward kind: positions, norms and attention heads.

The paper's block (the default) is GPT-2-like: learned absolute positions, LayerNorm, multi-head attention. A
Llama-style block takes rotary positions (`positions="rope"`, RoPE on each head's query and key, the rotate-half
convention of transformers' Llama: dimension i pairs with i + head_dim/2), RMSNorm, grouped-query attention
(`n_kv_heads` key/value heads, each shared by n_heads / n_kv_heads query heads) and optionally a per-head RMSNorm
on queries and keys (`qk_norm`, as Qwen3 and Qwen3-MoE). The feed-forward activation (ReLU or SwiGLU) belongs to
the layers (`layers/experts.py`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from .layers.experts import FFN_ACTIVATIONS

if TYPE_CHECKING:
    from .config import ModelConfig

POSITIONS: tuple[str, ...] = ("learned", "rope")
NORMS: tuple[str, ...] = ("layernorm", "rmsnorm")


def check_block_options(config: ModelConfig) -> None:
    """One sentence for a bad block option (called by ModelConfig.__post_init__)."""
    for name, allowed in (("positions", POSITIONS), ("norm", NORMS), ("ffn_activation", FFN_ACTIVATIONS)):
        if getattr(config, name) not in allowed:
            raise ValueError(
                f"{name}={getattr(config, name)!r} is not supported; allowed values: {', '.join(allowed)}."
            )
    for name in ("rope_base", "norm_eps"):
        if not getattr(config, name) > 0:
            raise ValueError(f"{name} must be positive, got {getattr(config, name)}.")
    kv_heads = config.n_kv_heads
    if (
        not isinstance(kv_heads, int)
        or isinstance(kv_heads, bool)
        or kv_heads < 0
        or (kv_heads and config.n_heads % kv_heads)
    ):
        raise ValueError(
            f"n_kv_heads={kv_heads!r} must divide n_heads={config.n_heads} (0: n_heads, plain multi-head attention)."
        )
    head_dim = config.d_model // config.n_heads
    if config.positions == "rope" and head_dim % 2:
        raise ValueError(f"positions='rope' needs an even head width d_model / n_heads, got {head_dim}.")


def kv_heads(config: ModelConfig) -> int:
    """Key/value heads: n_kv_heads, or n_heads when it is 0."""
    return config.n_kv_heads or config.n_heads


def attention_params(config: ModelConfig) -> int:
    """Weights of one attention layer (norms excluded): q and out D x D each, k and v D x (kv heads x head width)."""
    kv_width = kv_heads(config) * (config.d_model // config.n_heads)
    return 2 * config.d_model * config.d_model + 2 * config.d_model * kv_width


def _at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype (bf16-pure training keeps norms in float32; a float64
    model's LayerNorms run in float32 too, as they always have: tests/test_reproduction_switches.py)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class RMSNorm(nn.RMSNorm):
    """RMSNorm (x / sqrt(mean(x^2) + eps) * weight, no bias, no mean subtraction) computed in float32 for
    lower-precision inputs, as transformers' LlamaRMSNorm, and in float64 for float64 ones (the float64 references
    of tests/layers/test_block_options.py hold it to 1e-10)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else _at_least_fp32(self.weight)
        return F.rms_norm(_at_least_fp32(x), self.normalized_shape, weight, self.eps).to(x.dtype)


def build_norm(config: ModelConfig, width: int | None = None) -> nn.Module:
    """The block's norm (`config.norm`, eps `config.norm_eps`) over `width` values (default d_model)."""
    width = config.d_model if width is None else width
    if config.norm == "rmsnorm":
        return RMSNorm(width, eps=config.norm_eps)
    return LayerNorm(width, eps=config.norm_eps)


def rotary_cos_sin(
    positions_S: torch.Tensor, head_dim: int, base: float, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [S, head_dim] of RoPE at `positions_S`: frequency i = base^(-2i / head_dim) for i < head_dim/2,
    repeated for the two halves (transformers' default rope), computed in float32 (as transformers does) or float64
    for a float64 model, and cast to `dtype`."""
    exact = torch.promote_types(dtype, torch.float32)
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=exact, device=positions_S.device) / head_dim))
    freqs_SW = positions_S.to(exact)[:, None] * inv_freq[None, :]
    angles_SW = torch.cat((freqs_SW, freqs_SW), dim=-1)
    return angles_SW.cos().to(dtype), angles_SW.sin().to(dtype)


def apply_rotary(x_BMSW: torch.Tensor, cos_SW: torch.Tensor, sin_SW: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1) for the halves x1, x2 of each head."""
    half = x_BMSW.shape[-1] // 2
    rotated_BMSW = torch.cat((-x_BMSW[..., half:], x_BMSW[..., :half]), dim=-1)
    return x_BMSW * cos_SW + rotated_BMSW * sin_SW
