"""Pre-LN Transformer with a per-block choice of feed-forward sublayer: a decoder (causal objective) or, with the
masked objective, a BERT-style encoder (bidirectional attention, loss on the masked positions only).

The model is single-device and knows nothing of parallelism; wrap it with DDP/FSDP from outside.
Layers may record `aux_losses` (added to the LM loss) and `stats` (detached diagnostics) during forward.
The trainer asks for the loss only (`return_logits=False`): the head and the cross-entropy then run a chunk of
tokens at a time (`lm_loss.chunked_lm_loss_sum`), so float32 logits of the whole batch never exist.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import LayerNorm, RMSNorm, apply_rotary, build_norm, kv_heads, rotary_cos_sin
from .config import ModelConfig
from .data.masking import IGNORE_INDEX
from .layers import FeedForwardLayer, build_ffn
from .layers.init import authors_embedding_init_, scaled_trunc_normal_
from .layers.modes import inference_routing, mot_mode, set_inference_routing
from .lm_loss import LOSS_CHUNK_TOKENS, chunked_lm_loss_sum


@dataclass
class LayerKVCache:
    """Keys and values [B, kv heads, L, D/heads] one attention layer has seen so far (keys after RoPE)."""

    keys_BMLW: torch.Tensor | None = None
    values_BMLW: torch.Tensor | None = None

    def append(self, k_BMSW: torch.Tensor, v_BMSW: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys_BMLW is None or self.values_BMLW is None:
            self.keys_BMLW, self.values_BMLW = k_BMSW, v_BMSW
        else:
            self.keys_BMLW = torch.cat([self.keys_BMLW, k_BMSW], dim=2)
            self.values_BMLW = torch.cat([self.values_BMLW, v_BMSW], dim=2)
        return self.keys_BMLW, self.values_BMLW


class KVCache:
    """Incremental decoding state: `model(new_ids, cache=cache)` attends to every earlier position and appends.

    All rows advance together (one position per call per row), which is also what MoT's same-position groups need.
    """

    def __init__(self, n_blocks: int) -> None:
        self.layers = [LayerKVCache() for _ in range(n_blocks)]
        self.length = 0


Rotary = tuple[torch.Tensor, torch.Tensor]
"""RoPE's cos and sin [S, head width] at the positions of a forward (`blocks.rotary_cos_sin`)."""


class CausalSelfAttention(nn.Module):
    """Multi-head attention without biases, fused through `scaled_dot_product_attention`: causal, or
    bidirectional with `causal=False` (the masked objective; no KV cache then).

    With `n_kv_heads` < n_heads (grouped-query attention) query head h reads key/value head h // (n_heads /
    n_kv_heads), as transformers' repeat_kv; the KV cache holds the kv heads only. `rotary` (cos, sin) rotates
    queries and keys; `qk_norm` RMS-normalises each head's queries and keys first (Qwen3). Tensor names: M heads,
    W head width, L key/value positions, F the fused q, k, v width (the legend: `layers/__init__.py`)."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        *,
        causal: bool = True,
        n_kv_heads: int | None = None,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads or n_heads
        self.head_dim = d_model // n_heads
        self.causal = causal
        # rows: queries [D], keys [kv heads x head width], values [kv heads x head width] (3D for multi-head)
        self.qkv = nn.Linear(d_model, d_model + 2 * self.n_kv_heads * self.head_dim, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        if qk_norm:
            self.q_norm = RMSNorm(self.head_dim, eps=norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=norm_eps)
        else:
            self.q_norm = self.k_norm = None

    def forward(
        self, x_BSD: torch.Tensor, cache: LayerKVCache | None = None, rotary: Rotary | None = None
    ) -> torch.Tensor:
        batch, seq_len, dim = x_BSD.shape
        heads, kv_heads_, width = self.n_heads, self.n_kv_heads, self.head_dim
        qkv_BSF = self.qkv(x_BSD)
        if kv_heads_ == heads and self.q_norm is None and rotary is None:  # the paper's block: one permuted view
            q_BMSW, k_BMSW, v_BMSW = qkv_BSF.view(batch, seq_len, 3, heads, width).permute(2, 0, 3, 1, 4)
        else:
            # [B, S, D + 2 * kv heads * width] -> [B, heads, S, width], 2 x [B, kv heads, S, width]
            q_BSMW, k_BSMW, v_BSMW = qkv_BSF.view(batch, seq_len, heads + 2 * kv_heads_, width).split(
                [heads, kv_heads_, kv_heads_], dim=2
            )
            if self.q_norm is not None:
                q_BSMW, k_BSMW = self.q_norm(q_BSMW), self.k_norm(k_BSMW)
            q_BMSW, k_BMSW, v_BMSW = (t.transpose(1, 2) for t in (q_BSMW, k_BSMW, v_BSMW))
            if rotary is not None:
                q_BMSW, k_BMSW = apply_rotary(q_BMSW, *rotary), apply_rotary(k_BMSW, *rotary)
        gqa = {"enable_gqa": True} if kv_heads_ != heads else {}
        if cache is None:
            y_BMSW = F.scaled_dot_product_attention(q_BMSW, k_BMSW, v_BMSW, is_causal=self.causal, **gqa)
        else:
            k_BMLW, v_BMLW = cache.append(k_BMSW, v_BMSW)
            # the S new queries sit at the last S of L positions: query i sees keys 0 .. L-S+i
            total = k_BMLW.shape[2]
            mask_SL = None
            if seq_len > 1:
                mask_SL = torch.ones(seq_len, total, dtype=torch.bool, device=x_BSD.device).tril(total - seq_len)
            y_BMSW = F.scaled_dot_product_attention(q_BMSW, k_BMLW, v_BMLW, attn_mask=mask_SL, **gqa)
        return self.out(y_BMSW.transpose(1, 2).reshape(batch, seq_len, dim))


class Block(nn.Module):
    """x + attn(norm(x)), then x + ffn(norm(x)); norm is LayerNorm or RMSNorm (`config.norm`)."""

    def __init__(self, config: ModelConfig, ffn_kind: str) -> None:
        super().__init__()
        self.attn_norm = build_norm(config)
        self.attn = CausalSelfAttention(
            config.d_model,
            config.n_heads,
            causal=config.objective == "causal",
            n_kv_heads=kv_heads(config),
            qk_norm=config.qk_norm,
            norm_eps=config.norm_eps,
        )
        self.ffn_norm = build_norm(config)
        self.ffn = build_ffn(ffn_kind, config)

    def forward(
        self, x_BSD: torch.Tensor, cache: LayerKVCache | None = None, rotary: Rotary | None = None
    ) -> torch.Tensor:
        x_BSD = x_BSD + self.attn(self.attn_norm(x_BSD), cache, rotary)
        return x_BSD + self.ffn(self.ffn_norm(x_BSD))


@dataclass
class ModelOutput:
    """logits[B, S, V]; with targets also the total loss = lm_loss + sum of auxiliary losses. Masked objective:
    V counts the mask token too, and lm_loss is the mean over the scored (masked) positions. logits is None when
    the forward was asked for the loss only (`return_logits=False`)."""

    logits: torch.Tensor | None
    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)


class Transformer(nn.Module):
    """`Transformer(config)(ids[B, S], targets[B, S] | None) -> ModelOutput`.

    Causal objective: targets are the next tokens. Masked objective: ids are the masked input and targets the
    labels, IGNORE_INDEX where nothing is scored (`data.masking.mask_tokens` makes both from text); the token
    embedding and the head hold one more row, the mask token (id `config.vocab_size`).
    """

    pretrained_loader: ClassVar[Callable[..., Transformer] | None] = None
    """What `from_pretrained` calls: `inference.load_model`, which puts itself here when the package is imported
    (it reads checkpoints and exports, which are built on this module)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.model_vocab_size, config.d_model)
        if config.positions == "learned":
            self.position_embedding = nn.Embedding(config.max_seq_len, config.d_model)
        else:  # rotary positions act inside attention: no position table
            self.position_embedding = None
        self.blocks = nn.ModuleList(Block(config, kind) for kind in config.block_ffn_kinds())
        self.final_norm = build_norm(config) if config.final_norm else nn.Identity()
        self.head = nn.Linear(config.d_model, config.model_vocab_size, bias=False)
        self.reset_parameters()
        if config.tie_embeddings:
            self.head.weight = self.token_embedding.weight

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> Transformer:
        """The model of a checkpoint, run or `mot export --to hf` directory, ready for inference (eval mode,
        inference routing) on `device` in `dtype`: `mixture_of_tokens.load_model`. (transformers loads an export
        with `AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=True)`.)"""
        if cls.pretrained_loader is None:
            raise RuntimeError("Transformer.from_pretrained needs mixture_of_tokens imported (it sets the loader).")
        return cls.pretrained_loader(directory, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        """Truncated normal, std sqrt(init_scale / fan_in), for every weight (docs/method.md §1); zero biases.

        Embedding tables count d_model as their fan-in (a one-hot input has no meaningful fan-in), unless
        `embedding_init` is "authors": fan-in 1, cut at +-0.2 (`authors_embedding_init_`).
        """
        scale = self.config.init_scale
        for module in self.modules():
            if isinstance(module, nn.Linear):
                scaled_trunc_normal_(module.weight, fan_in=module.in_features, scale=scale)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding) and self.config.embedding_init == "authors":
                authors_embedding_init_(module.weight, scale=scale)
            elif isinstance(module, nn.Embedding):
                scaled_trunc_normal_(module.weight, fan_in=module.embedding_dim, scale=scale)
            elif isinstance(module, FeedForwardLayer) and hasattr(module, "reset_parameters"):
                module.reset_parameters()  # layers with their own tensors (experts, routers) initialise them

    def forward(
        self,
        ids_BS: torch.Tensor,
        targets_BS: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        return_logits: bool = True,
        loss_chunk_tokens: int = LOSS_CHUNK_TOKENS,
    ) -> ModelOutput:
        """Embed, run the blocks, final norm; then the logits (and the loss against `targets`), or with
        `return_logits=False` the loss alone, the head and cross-entropy taken `loss_chunk_tokens` tokens at a time
        (the training step's way: equal to the full-logits loss, without float32 logits of the whole batch).
        With `cache`, ids are the next positions after `cache.length` (incremental decoding); the cache grows."""
        if not return_logits and targets_BS is None:
            raise ValueError("return_logits=False computes the loss only, so it needs targets.")
        batch, seq_len = ids_BS.shape
        if cache is not None:
            self.config.check_causal("incremental decoding (a KV cache)")
        start = cache.length if cache is not None else 0
        if start + seq_len > self.config.max_seq_len:
            raise ValueError(f"sequence length {start + seq_len} exceeds max_seq_len={self.config.max_seq_len}.")
        positions_S = torch.arange(start, start + seq_len, device=ids_BS.device)
        x_BSD = self.token_embedding(ids_BS)
        rotary = None
        if self.position_embedding is not None:
            x_BSD = x_BSD + self.position_embedding(positions_S)
        else:
            head_dim = self.config.d_model // self.config.n_heads
            rotary = rotary_cos_sin(positions_S, head_dim, self.config.rope_base, x_BSD.dtype)
        for index, block in enumerate(self.blocks):
            x_BSD = block(x_BSD, None if cache is None else cache.layers[index], rotary)
        if cache is not None:
            cache.length += seq_len
        hidden_BSD = self.final_norm(x_BSD)
        if not return_logits:
            total = chunked_lm_loss_sum(
                hidden_BSD.flatten(0, 1), self.head.weight, targets_BS.flatten(), chunk_tokens=loss_chunk_tokens
            )
            return self._with_losses(None, self._mean_lm_loss(total, targets_BS))
        logits_BSV = self.head(hidden_BSD)
        if targets_BS is None:
            return ModelOutput(logits=logits_BSV)
        if self.config.objective == "causal":
            lm_loss = F.cross_entropy(logits_BSV.float().flatten(0, 1), targets_BS.flatten())
        else:
            total = F.cross_entropy(
                logits_BSV.float().flatten(0, 1), targets_BS.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            lm_loss = self._mean_lm_loss(total, targets_BS)
        return self._with_losses(logits_BSV, lm_loss)

    def _mean_lm_loss(self, total: torch.Tensor, targets_BS: torch.Tensor) -> torch.Tensor:
        """The summed loss over the scored tokens as a mean: causal, over the targets that are not IGNORE_INDEX (as
        `F.cross_entropy`'s mean); masked, over the scored positions, 0 (not NaN) when a batch scores none."""
        scored = (targets_BS != IGNORE_INDEX).sum()
        return total / (scored if self.config.objective == "causal" else scored.clamp(min=1))

    def _with_losses(self, logits_BSV: torch.Tensor | None, lm_loss: torch.Tensor) -> ModelOutput:
        """The output with the layers' auxiliary losses added to `lm_loss`."""
        aux_losses = self.aux_losses()
        loss = lm_loss + sum(aux_losses.values()) if aux_losses else lm_loss
        return ModelOutput(logits=logits_BSV, loss=loss, lm_loss=lm_loss, aux_losses=aux_losses)

    def aux_losses(self) -> dict[str, torch.Tensor]:
        """Auxiliary losses the layers recorded in the last forward, keyed 'block{i}.{name}', each as the part it
        adds to the loss: as recorded when `load_balance_reduce` is "sum"; divided by the number of layers that
        recorded a loss of that name when it is "mean", so that each name adds its mean over those layers."""
        recorded = [
            (index, name, value)
            for index, block in enumerate(self.blocks)
            for name, value in getattr(block.ffn, "aux_losses", {}).items()
        ]
        reporters = Counter(name for _, name, _ in recorded)
        mean = self.config.load_balance_reduce == "mean"
        return {f"block{index}.{name}": value / reporters[name] if mean else value for index, name, value in recorded}

    def is_causal(self) -> bool:
        """True when no output at position s can depend on a token at a later position: causal attention and
        causal feed-forward layers."""
        return self.config.objective == "causal" and all(layer.is_causal() for layer in self.feed_forward_layers())

    def on_train_step(self, step: int, steps: int) -> None:
        """Tell every feed-forward layer that 0-based optimizer step `step` of a `steps`-step run begins (the
        training loop calls this)."""
        for layer in self.feed_forward_layers():
            layer.on_train_step(step, steps)

    def may_leave_parameters_unused(self) -> bool:
        """True when some layer says a training step may leave one of its parameters without a gradient (e.g. a
        frozen MoT temperature): a DDP wrapper must then look for them each step instead of waiting for them."""
        return any(layer.may_leave_parameters_unused() for layer in self.feed_forward_layers())

    def feed_forward_layers(self) -> list[FeedForwardLayer]:
        """Every feed-forward sublayer, in block order."""
        return [m for m in self.modules() if isinstance(m, FeedForwardLayer)]

    def routing_stats(self) -> dict[str, float]:
        """Detached routing diagnostics of the last forward, keyed 'block{i}.{name}' (syncs the device)."""
        stats: dict[str, float] = {}
        for index, block in enumerate(self.blocks):
            for name, value in getattr(block.ffn, "stats", {}).items():
                stats[f"block{index}.{name}"] = float(value)
        return stats


__all__ = [
    "Block",
    "CausalSelfAttention",
    "KVCache",
    "LayerKVCache",
    "LayerNorm",
    "ModelOutput",
    "RMSNorm",
    "Transformer",
    "inference_routing",
    "mot_mode",
    "set_inference_routing",
]
