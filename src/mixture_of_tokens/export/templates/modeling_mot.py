"""Mixture of Tokens causal language model for transformers, written by `mot export --to hf` (mixture-of-tokens).

Load it with `AutoModelForCausalLM.from_pretrained(DIRECTORY, trust_remote_code=True)`. This file is
self-contained (PyTorch and transformers only): the exported directory works without the mixture-of-tokens
package, and its forward equals that package's model at inference (eval mode; Token Choice routes dropless).

Blocks: x + attn(norm(x)), then x + ffn(norm(x)); the paper's GPT-2-like block (learned positions, LayerNorm,
ReLU) or, by the SETTINGS below, Llama-style: RoPE, RMSNorm, SwiGLU in the dense layer and every expert (silu(x W_gate)
* (x W_up), then W_down; W1 [E, D, 2H] holds gate then up), grouped-query attention, query/key norms, no dense biases.
Feed-forward kinds, one per block (`config.block_ffn_kinds`):
    dense         Linear(D, d_ff) + ReLU + Linear(d_ff, D), with biases (or SwiGLU).
    mot           Mixture of Tokens: for each group of G tokens at the same position in G consecutive rows of
                  the batch, expert e gets the mix m[r, e] = sum_g w[r, g, e] x[r, g] (w: softmax over the group
                  of x @ W_c / tau), runs relu(m @ W1[e]) @ W2[e] (or SwiGLU), and its output goes back to the
                  group's tokens with the same weights.
    token_choice  top-k router (softmax over experts, float32); output = sum over the k chosen experts of
                  p[t, e] * expert_e(x_t) (p renormalised over the k when `tc_norm_topk_prob`); dropless (no
                  capacity), so a token's output is its own.

Batch rule with MoT blocks: the batch must be a multiple of `config.group_size` (rows g*G .. g*G+G-1 form group g),
and the rows of a group change each other's outputs (same position only: nothing leaks from later positions).
Padded tokens (attention_mask 0) take no part in the mix. To score or generate one sequence, put it in a batch with
G - 1 filler rows of ordinary text and read its row; the README of the exported directory says more.
Axes in names: B batch, S position, D d_model, V vocab, M heads, W head width, N tokens flattened, G group size,
R (group, position) rows, E experts, H expert width, F W1's width (H or 2H), K top-k, A assignments, C slots, 1 size 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

FFN_KINDS = ("dense", "mot", "token_choice")

# the mixture-of-tokens ModelConfig fields that shape inference, and their defaults (the paper's block)
SETTINGS = {
    "vocab_size": 8192, "max_seq_len": 128, "d_model": 128, "n_blocks": 4, "n_heads": 4, "d_ff": 512,
    "final_norm": True, "group_size": 8, "n_experts": 8, "expert_size": 512, "experts_per_token": 1,
    "mot_temperature": 1.0, "mot_learnable_temperature": "none", "mot_routing": "softmax",
    "mot_discrete_rule": "project", "mot_emit": "group", "mot_separate_emit_controller": False,
    "positions": "learned", "rope_base": 10000.0, "norm": "layernorm", "norm_eps": 1e-5, "ffn_activation": "relu",
    "n_kv_heads": 0, "qk_norm": False, "dense_bias": True, "tc_norm_topk_prob": False,
}  # fmt: skip


class MoTConfig(PretrainedConfig):
    """The exported model's SETTINGS; `experts_per_token` is Token Choice's top_k (top_k is a generation setting)."""

    model_type = "mixture_of_tokens"
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "n_blocks", "num_attention_heads": "n_heads",
                     "max_position_embeddings": "max_seq_len"}  # fmt: skip

    def __init__(self, block_ffn_kinds: list[str] | None = None, **kwargs) -> None:
        for name, default in SETTINGS.items():
            setattr(self, name, kwargs.pop(name, default))
        self.block_ffn_kinds = list(block_ffn_kinds or ["dense"] * self.n_blocks)
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)
        unknown = sorted(set(self.block_ffn_kinds) - set(FFN_KINDS))
        if unknown or len(self.block_ffn_kinds) != self.n_blocks:
            raise ValueError(f"block_ffn_kinds must name {self.n_blocks} kinds out of {', '.join(FFN_KINDS)}.")

    @property
    def batch_multiple(self) -> int:
        """Every batch must be a multiple of this: the group size with MoT blocks, else 1."""
        return self.group_size if "mot" in self.block_ffn_kinds else 1


def at_least_fp32(tensor: Tensor) -> Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class Norm(nn.Module):
    """`config.norm` (RMSNorm if `rms`) over `width` values (default d_model), eps `config.norm_eps`: LayerNorm in
    float32, or RMSNorm (x / sqrt(mean(x^2) + eps) * weight, no bias) in float32 (float64 for float64 inputs)."""

    def __init__(self, config: MoTConfig, width: int | None = None, rms: bool = False) -> None:
        super().__init__()
        width = width or config.d_model
        self.rms, self.eps, self.normalized_shape = rms or config.norm == "rmsnorm", config.norm_eps, (width,)
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = None if self.rms else nn.Parameter(torch.zeros(width))

    def forward(self, x: Tensor) -> Tensor:
        if self.rms:
            return F.rms_norm(at_least_fp32(x), self.normalized_shape, at_least_fp32(self.weight), self.eps).to(x.dtype)
        weight, bias = self.weight.float(), self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


def rotary_cos_sin(position_ids_BS: Tensor, config: MoTConfig, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """RoPE's cos and sin [B, 1, S, W] (W: head width) at `position_ids_BS`: frequency i = rope_base^(-2i / W) for
    i < W/2, repeated for the two halves (transformers' default rope), computed in float32 (float64 for float64)."""
    width, exact = config.d_model // config.n_heads, torch.promote_types(dtype, torch.float32)
    exponents_W = torch.arange(0, width, 2, dtype=exact, device=position_ids_BS.device) / width
    freqs_BSW = position_ids_BS.to(exact)[..., None] * (1.0 / config.rope_base**exponents_W)
    angles_B1SW = torch.cat((freqs_BSW, freqs_BSW), dim=-1)[:, None]
    return angles_B1SW.cos().to(dtype), angles_B1SW.sin().to(dtype)


def apply_rotary(x_BMSW: Tensor, cos_B1SW: Tensor, sin_B1SW: Tensor) -> Tensor:
    """x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1) for the halves x1, x2 of each head."""
    half = x_BMSW.shape[-1] // 2
    return x_BMSW * cos_B1SW + torch.cat((-x_BMSW[..., half:], x_BMSW[..., :half]), dim=-1) * sin_B1SW


class CausalSelfAttention(nn.Module):
    """Causal self-attention through `config._attn_implementation`: "sdpa" (the default, PyTorch's
    scaled_dot_product_attention, as the mixture-of-tokens package computes it) or "eager" (the same in plain ops).
    With n_kv_heads < n_heads, query head h reads key/value head h // (n_heads / n_kv_heads)."""

    def __init__(self, config: MoTConfig) -> None:
        super().__init__()
        self.config = config
        self.n_heads, self.n_kv_heads = config.n_heads, config.n_kv_heads or config.n_heads
        self.head_dim = config.d_model // config.n_heads
        self.qkv = nn.Linear(config.d_model, config.d_model + 2 * self.n_kv_heads * self.head_dim, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)
        self.q_norm = Norm(config, self.head_dim, rms=True) if config.qk_norm else None  # RMSNorm in either block
        self.k_norm = Norm(config, self.head_dim, rms=True) if config.qk_norm else None

    def forward(self, x_BSD: Tensor, allowed_B1SS: Tensor | None = None, rotary: tuple | None = None) -> Tensor:
        """Causal attention; `allowed_B1SS` (from `attention_allowed`) also masks padded keys; `rotary`: RoPE's
        (cos, sin) from `rotary_cos_sin`, applied to queries and keys after their norms."""
        batch, seq_len, dim = x_BSD.shape
        heads, kv_heads = self.n_heads, self.n_kv_heads
        # rows: queries, keys, values; [B, S, D + 2 * kv heads * W] -> [B, S, heads, W], 2 x [B, S, kv heads, W]
        qkv_BSMW = self.qkv(x_BSD).view(batch, seq_len, heads + 2 * kv_heads, self.head_dim)
        q_BSMW, k_BSMW, v_BSMW = qkv_BSMW.split([heads, kv_heads, kv_heads], dim=2)
        if self.q_norm is not None:
            q_BSMW, k_BSMW = self.q_norm(q_BSMW), self.k_norm(k_BSMW)
        q_BMSW, k_BMSW, v_BMSW = (t.transpose(1, 2) for t in (q_BSMW, k_BSMW, v_BSMW))
        if rotary is not None:
            q_BMSW, k_BMSW = apply_rotary(q_BMSW, *rotary), apply_rotary(k_BMSW, *rotary)
        if self.config._attn_implementation == "eager":
            y_BMSW = eager_attention(q_BMSW, k_BMSW, v_BMSW, allowed_B1SS)
        else:  # causal alone, or the causal-and-padding mask
            gqa = {"enable_gqa": True} if kv_heads != heads else {}
            y_BMSW = F.scaled_dot_product_attention(
                q_BMSW, k_BMSW, v_BMSW, attn_mask=allowed_B1SS, is_causal=allowed_B1SS is None, **gqa
            )
        return self.out(y_BMSW.transpose(1, 2).reshape(batch, seq_len, dim))


def eager_attention(q_BMSW: Tensor, k_BMSW: Tensor, v_BMSW: Tensor, allowed_B1SS: Tensor | None) -> Tensor:
    """softmax(q k^T / sqrt(W), masked) v in plain ops; the causal mask when `allowed_B1SS` is None. Each key/value
    head serves n_heads / n_kv_heads consecutive query heads."""
    seq_len, repeats = q_BMSW.shape[2], q_BMSW.shape[1] // k_BMSW.shape[1]
    k_BMSW, v_BMSW = k_BMSW.repeat_interleave(repeats, dim=1), v_BMSW.repeat_interleave(repeats, dim=1)
    if allowed_B1SS is None:
        allowed_B1SS = torch.ones(seq_len, seq_len, dtype=torch.bool, device=q_BMSW.device).tril()
    scores_BMSS = (q_BMSW @ k_BMSW.transpose(-2, -1)) * q_BMSW.shape[-1] ** -0.5
    scores_BMSS = scores_BMSS.masked_fill(~allowed_B1SS, float("-inf"))
    return torch.softmax(scores_BMSS, dim=-1) @ v_BMSW


def attention_allowed(keep_BS: Tensor) -> Tensor:
    """[B, 1, S, S] keys each query may attend to: earlier or same positions that are not padding. A query always
    sees itself, so a padded query (whose output no real token reads) never has an empty row."""
    seq_len = keep_BS.shape[1]
    causal_SS = torch.ones(seq_len, seq_len, dtype=torch.bool, device=keep_BS.device).tril()
    diagonal_SS = torch.eye(seq_len, dtype=torch.bool, device=keep_BS.device)
    return ((causal_SS & keep_BS[:, None, :]) | diagonal_SS)[:, None]


class FeedForward(nn.Module):
    """down(relu(up(x))), or with SwiGLU down(silu(gate(x)) * up(x)); biases unless `dense_bias` is False."""

    def __init__(self, config: MoTConfig) -> None:
        super().__init__()
        self.swiglu, bias = config.ffn_activation == "swiglu", config.dense_bias
        if self.swiglu:
            self.gate = nn.Linear(config.d_model, config.d_ff, bias=bias)
        self.up = nn.Linear(config.d_model, config.d_ff, bias=bias)
        self.down = nn.Linear(config.d_ff, config.d_model, bias=bias)

    def forward(self, x_BSD: Tensor, keep_BS: Tensor | None = None) -> Tensor:
        """Per token, so padding (`keep_BS` False) cannot reach another token."""
        if self.swiglu:
            return self.down(F.silu(self.gate(x_BSD)) * self.up(x_BSD))
        return self.down(torch.relu(self.up(x_BSD)))


def expert_weights(config: MoTConfig) -> tuple[nn.Parameter, nn.Parameter]:
    """W1 [E, D, H] (SwiGLU: [E, D, 2H], gate then up) and W2 [E, H, D], filled from model.safetensors."""
    first = (2 if config.ffn_activation == "swiglu" else 1) * config.expert_size
    w1_EDF = torch.empty(config.n_experts, config.d_model, first)
    return nn.Parameter(w1_EDF), nn.Parameter(torch.empty(config.n_experts, config.expert_size, config.d_model))


def expert_mlp(x_ECD: Tensor, w1_EDF: Tensor, w2_EHD: Tensor) -> Tensor:
    """relu(x[e] @ W1[e]) @ W2[e] for every expert e: [E, C, D] -> [E, C, D]; SwiGLU when W1 holds 2H columns:
    (silu(x @ W1_gate[e]) * (x @ W1_up[e])) @ W2[e]."""
    hidden_ECF = torch.bmm(x_ECD, w1_EDF.to(x_ECD.dtype))
    if hidden_ECF.shape[-1] == w2_EHD.shape[1]:
        return torch.bmm(hidden_ECF.relu_(), w2_EHD.to(hidden_ECF.dtype))
    gate_ECH, up_ECH = hidden_ECF.chunk(2, dim=-1)
    return torch.bmm(F.silu(gate_ECH) * up_ECH, w2_EHD.to(hidden_ECF.dtype))


def ties_at_max(weights: Tensor, *, dim: int) -> Tensor:
    """1 where a weight equals the maximum along `dim` (every tied maximum), else 0: the authors' discrete rule."""
    return (weights == weights.amax(dim=dim, keepdim=True)).to(weights.dtype)


class MixtureOfTokens(nn.Module):
    """Groups of G same-position tokens of consecutive rows; R indexes (group, position) rows."""

    def __init__(self, config: MoTConfig) -> None:
        super().__init__()
        self.group_size, self.routing, self.emit = config.group_size, config.mot_routing, config.mot_emit
        self.authors_ties = config.mot_routing == "discrete" and config.mot_discrete_rule == "authors"
        self.fixed_temperature = float(config.mot_temperature)
        separate, learnable = config.mot_separate_emit_controller, config.mot_learnable_temperature
        self.controller = nn.Parameter(torch.empty(config.d_model, config.n_experts))
        self.emit_controller = nn.Parameter(torch.empty(config.d_model, config.n_experts)) if separate else None
        self.w1, self.w2 = expert_weights(config)
        shape = () if learnable == "scalar" else (config.n_experts,)
        self.log_temperature = None if learnable == "none" else nn.Parameter(torch.empty(shape))

    def _tau(self) -> float | Tensor:
        return self.fixed_temperature if self.log_temperature is None else self.log_temperature.exp()

    def _group_weights(self, logits_RGE: Tensor, keep_RG1: Tensor | None) -> Tensor:
        """Weights over the group axis; with `keep_RG1`, masked tokens get 0 and the rest are normalised among
        themselves (a row with no kept token gets all zeros)."""
        if self.routing == "uniform":
            if keep_RG1 is None:
                return torch.full_like(logits_RGE, 1.0 / logits_RGE.shape[1])
            kept_RGE = keep_RG1.expand_as(logits_RGE).to(logits_RGE.dtype)
            return kept_RGE / kept_RGE.sum(dim=1, keepdim=True).clamp(min=1)
        masked_RGE = at_least_fp32(logits_RGE)
        if keep_RG1 is not None:
            masked_RGE = masked_RGE.masked_fill(~keep_RG1, float("-inf"))
        if self.routing == "discrete" and not self.authors_ties:
            top_R1E = masked_RGE.argmax(dim=1, keepdim=True)
            weights_RGE = torch.zeros_like(logits_RGE).scatter_(1, top_R1E, 1.0)
        else:  # an all-masked row is NaN here and zeroed below
            weights_RGE = torch.softmax(masked_RGE / self._tau(), dim=1)
            weights_RGE = (ties_at_max(weights_RGE, dim=1) if self.authors_ties else weights_RGE).to(logits_RGE.dtype)
        return weights_RGE if keep_RG1 is None else torch.where(keep_RG1, weights_RGE, 0.0)

    def forward(self, x_BSD: Tensor, keep_BS: Tensor | None = None) -> Tensor:
        """Merge, experts, emit. `keep_BS` (False: padding) keeps padded tokens out of the mix: zero merge and emit
        weight, the group softmax renormalised over the kept tokens, so padding cannot change a kept token."""
        batch, seq_len, dim = x_BSD.shape
        group = self.group_size
        if batch % group:
            raise ValueError(
                f"a Mixture of Tokens model needs a batch that is a multiple of its group size {group}, got "
                f"{batch} rows; fill the batch with rows of ordinary text (see the model card)."
            )
        # [B, S, D] -> [B/G, G, S, D] -> [B/G * S, G, D]: one row per (group, position)
        x_RGD = x_BSD.view(batch // group, group, seq_len, dim).transpose(1, 2).reshape(-1, group, dim)
        keep_RG1 = None
        if keep_BS is not None:  # [B, S] -> [B/G, G, S] -> [B/G * S, G, 1], as x
            keep_RG1 = keep_BS.view(batch // group, group, seq_len).transpose(1, 2).reshape(-1, group, 1)
        logits_RGE = x_RGD @ self.controller.to(x_RGD.dtype)
        merge_RGE = self._group_weights(logits_RGE, keep_RG1)
        source_RGE = logits_RGE if self.emit_controller is None else x_RGD @ self.emit_controller.to(x_RGD.dtype)
        if self.emit == "experts":
            emit_RGE = torch.softmax(at_least_fp32(source_RGE) / self._tau(), dim=-1)
            emit_RGE = (ties_at_max(emit_RGE, dim=-1) if self.authors_ties else emit_RGE).to(logits_RGE.dtype)
            emit_RGE = emit_RGE if keep_RG1 is None else torch.where(keep_RG1, emit_RGE, 0.0)
        elif self.emit_controller is None:
            emit_RGE = merge_RGE
        else:
            emit_RGE = self._group_weights(source_RGE, keep_RG1)
        mixed_RED = torch.bmm(merge_RGE.transpose(1, 2), x_RGD)
        out_ERD = expert_mlp(mixed_RED.transpose(0, 1), self.w1, self.w2)
        dx_RGD = torch.bmm(emit_RGE, out_ERD.transpose(0, 1))
        # [B/G * S, G, D] -> [B/G, S, G, D] -> [B, S, D]
        return dx_RGD.view(batch // group, seq_len, group, dim).transpose(1, 2).reshape(batch, seq_len, dim)


class TokenChoice(nn.Module):
    """Dropless top-k routing; A indexes the (token, choice) assignments in token order."""

    def __init__(self, config: MoTConfig) -> None:
        super().__init__()
        self.top_k, self.norm_topk_prob = config.experts_per_token, config.tc_norm_topk_prob
        self.router = nn.Parameter(torch.empty(config.d_model, config.n_experts))
        self.w1, self.w2 = expert_weights(config)

    def forward(self, x_BSD: Tensor, keep_BS: Tensor | None = None) -> Tensor:
        """Dropless, so padding (`keep_BS` False) takes no capacity and cannot reach another token."""
        dim, n_experts, top_k = x_BSD.shape[-1], self.router.shape[1], self.top_k
        x_ND = x_BSD.reshape(-1, dim)
        probs_NE = torch.softmax(at_least_fp32(x_ND) @ at_least_fp32(self.router), dim=-1)
        gate_NE, expert_NE = torch.sort(probs_NE, dim=-1, descending=True, stable=True)  # ties: lower index
        expert_A = expert_NE[:, :top_k].reshape(-1)
        token_A = torch.arange(x_ND.shape[0], device=x_ND.device).repeat_interleave(top_k)
        # slot of each assignment: its expert's block of `capacity` rows, in token order within the expert
        order_A = torch.argsort(expert_A, stable=True)
        count_E = torch.bincount(expert_A, minlength=n_experts)
        capacity = max(int(count_E.max()), 1)
        start_E, rank_A = count_E.cumsum(0) - count_E, torch.empty_like(order_A)
        rank_A[order_A] = torch.arange(order_A.numel(), device=x_ND.device) - start_E[expert_A[order_A]]
        slot_A = expert_A * capacity + rank_A
        slots_CD = x_ND.new_zeros(n_experts * capacity, dim).index_copy(0, slot_A, x_ND[token_A])
        out_ECD = expert_mlp(slots_CD.view(n_experts, capacity, dim), self.w1, self.w2)
        gate_NK = gate_NE[:, :top_k]
        if self.norm_topk_prob:  # combine weights summing to 1 per token
            gate_NK = gate_NK / gate_NK.sum(dim=-1, keepdim=True)
        gate_A = gate_NK.reshape(-1).to(out_ECD.dtype)
        y_AD = out_ECD.reshape(-1, dim)[slot_A] * gate_A[:, None]
        return x_ND.new_zeros(x_ND.shape).index_add(0, token_A, y_AD.to(x_ND.dtype)).view(x_BSD.shape)


FFN_CLASSES = {"dense": FeedForward, "mot": MixtureOfTokens, "token_choice": TokenChoice}


class Block(nn.Module):
    """x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, config: MoTConfig, ffn_kind: str) -> None:
        super().__init__()
        self.attn_norm = Norm(config)
        self.attn = CausalSelfAttention(config)
        self.ffn_norm = Norm(config)
        self.ffn = FFN_CLASSES[ffn_kind](config)

    def forward(
        self, x_BSD: Tensor, allowed_B1SS: Tensor | None, keep_BS: Tensor | None, rotary: tuple | None
    ) -> Tensor:
        x_BSD = x_BSD + self.attn(self.attn_norm(x_BSD), allowed_B1SS, rotary)
        return x_BSD + self.ffn(self.ffn_norm(x_BSD), keep_BS)


class MoTPreTrainedModel(PreTrainedModel):
    config_class = MoTConfig
    base_model_prefix = "mot"
    _no_split_modules = ["Block"]
    _supports_sdpa = True  # attention is scaled_dot_product_attention; "eager" computes the same in plain ops

    def _init_weights(self, module: nn.Module) -> None:
        """Every weight comes from model.safetensors; nothing is initialised here."""


class MoTForCausalLM(MoTPreTrainedModel, GenerationMixin):
    """`model(input_ids[B, S]) -> logits[B, S, vocab]`; with `labels`, the mean next-token cross-entropy. There is no
    KV cache: `generate` recomputes the whole prefix at every step."""

    def __init__(self, config: MoTConfig) -> None:
        super().__init__(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        learned = config.positions == "learned"  # else RoPE, inside attention
        self.position_embedding = nn.Embedding(config.max_seq_len, config.d_model) if learned else None
        self.blocks = nn.ModuleList(Block(config, kind) for kind in config.block_ffn_kinds)
        self.final_norm = Norm(config) if config.final_norm else nn.Identity()
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.token_embedding

    def get_output_embeddings(self) -> nn.Linear:
        return self.head

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        labels: torch.LongTensor | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """`attention_mask` [B, S] (1 = token, 0 = padding) may pad on either side, as in transformers' decoder
        models: positions count a row's tokens only (`position_ids` = cumsum(mask) - 1, unless given) and padded
        keys are masked in attention, so a real token's logits are those of its row alone."""
        batch, seq_len = input_ids.shape
        if seq_len > self.config.max_seq_len:
            raise ValueError(f"sequence length {seq_len} exceeds max_seq_len={self.config.max_seq_len}.")
        keep_BS = None
        if attention_mask is not None and not bool(attention_mask.all()):
            keep_BS = attention_mask.to(device=input_ids.device, dtype=torch.bool)
        if position_ids is None and keep_BS is None:
            position_ids = torch.arange(seq_len, device=input_ids.device)[None]
        elif position_ids is None:
            position_ids = (keep_BS.long().cumsum(dim=-1) - 1).clamp(min=0)
        allowed_B1SS = None if keep_BS is None else attention_allowed(keep_BS)
        x_BSD, rotary = self.token_embedding(input_ids), None
        if self.position_embedding is None:  # RoPE, at each row's positions
            rotary = rotary_cos_sin(position_ids, self.config, x_BSD.dtype)
        else:
            x_BSD = x_BSD + self.position_embedding(position_ids)
        for block in self.blocks:
            x_BSD = block(x_BSD, allowed_B1SS, keep_BS, rotary)
        logits_BSV = self.head(self.final_norm(x_BSD))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits_BSV[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits_BSV)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, **kwargs) -> dict:
        """The whole prefix and its mask every step (no cache); positions come from the mask in `forward`."""
        return {"input_ids": input_ids, "attention_mask": kwargs.get("attention_mask")}
