"""Mixture of Tokens causal language model for transformers, written by `mot export --to hf` (mixture-of-tokens).

Load it with `AutoModelForCausalLM.from_pretrained(DIRECTORY, trust_remote_code=True)`. This file is
self-contained (PyTorch and transformers only): the exported directory works without the mixture-of-tokens
package, and its forward equals that package's model at inference (eval mode; Token Choice routes dropless).

Feed-forward kinds, one per block (`config.block_ffn_kinds`):
    dense         Linear(D, d_ff) + ReLU + Linear(d_ff, D), with biases.
    mot           Mixture of Tokens: for each group of G tokens at the same position in G consecutive rows of
                  the batch, expert e gets the mix m[r, e] = sum_g w[r, g, e] x[r, g] (w: softmax over the group
                  of x @ W_c / tau), runs relu(m @ W1[e]) @ W2[e], and its output goes back to the group's tokens
                  with the same weights.
    token_choice  top-k router (softmax over experts, float32); output = sum over the k chosen experts of
                  p[t, e] * expert_e(x_t); dropless (no capacity), so a token's output is its own.

Batch rule of a model with MoT blocks: the batch must be a multiple of `config.group_size` (rows g*G .. g*G+G-1
form group g), and the rows of a group change each other's outputs (same position only, so nothing leaks from
later positions). Padded tokens (attention_mask 0) take no part in the mix (zero merge and emit weight, the group
softmax renormalised over the unmasked tokens). To score or generate one sequence, put it in a batch with G - 1
filler rows of ordinary text and read its row; the README of the exported directory says more.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

FFN_KINDS = ("dense", "mot", "token_choice")


class MoTConfig(PretrainedConfig):
    """The exported model's settings: the mixture-of-tokens ModelConfig fields that shape inference."""

    model_type = "mixture_of_tokens"
    attribute_map = {
        "hidden_size": "d_model",
        "num_hidden_layers": "n_blocks",
        "num_attention_heads": "n_heads",
        "max_position_embeddings": "max_seq_len",
    }

    def __init__(
        self,
        vocab_size: int = 8192,
        max_seq_len: int = 128,
        d_model: int = 128,
        n_blocks: int = 4,
        n_heads: int = 4,
        d_ff: int = 512,
        block_ffn_kinds: list[str] | None = None,
        group_size: int = 8,
        n_experts: int = 8,
        expert_size: int = 512,
        mot_temperature: float = 1.0,
        mot_learnable_temperature: str = "none",
        mot_routing: str = "softmax",
        mot_discrete_rule: str = "project",
        mot_emit: str = "group",
        mot_separate_emit_controller: bool = False,
        experts_per_token: int = 1,
        final_norm: bool = True,
        **kwargs,
    ) -> None:
        self.vocab_size = vocab_size
        self.max_seq_len = max_seq_len
        self.d_model = d_model
        self.n_blocks = n_blocks
        self.n_heads = n_heads
        self.d_ff = d_ff
        self.block_ffn_kinds = list(block_ffn_kinds or ["dense"] * n_blocks)
        self.group_size = group_size
        self.n_experts = n_experts
        self.expert_size = expert_size
        self.mot_temperature = mot_temperature
        self.mot_learnable_temperature = mot_learnable_temperature
        self.mot_routing = mot_routing
        self.mot_discrete_rule = mot_discrete_rule  # discrete routing: first top token | every tied one (authors)
        self.mot_emit = mot_emit
        self.mot_separate_emit_controller = mot_separate_emit_controller
        self.experts_per_token = experts_per_token  # Token Choice's top-k (top_k names a generation setting)
        self.final_norm = final_norm
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)
        unknown = sorted(set(self.block_ffn_kinds) - set(FFN_KINDS))
        if unknown or len(self.block_ffn_kinds) != n_blocks:
            raise ValueError(f"block_ffn_kinds must name {n_blocks} kinds out of {', '.join(FFN_KINDS)}.")

    @property
    def batch_multiple(self) -> int:
        """Every batch must be a multiple of this: the group size with MoT blocks, else 1."""
        return self.group_size if "mot" in self.block_ffn_kinds else 1


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 whatever the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


class CausalSelfAttention(nn.Module):
    """Causal self-attention through `config._attn_implementation`: "sdpa" (the default, PyTorch's
    scaled_dot_product_attention, as the mixture-of-tokens package computes it) or "eager" (the same in plain ops)."""

    def __init__(self, config: MoTConfig) -> None:
        super().__init__()
        self.config = config
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.out = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x_BSD: torch.Tensor, allowed_B1SS: torch.Tensor | None = None) -> torch.Tensor:
        """Causal attention; `allowed_B1SS` (from `attention_allowed`) also masks padded keys."""
        batch, seq_len, dim = x_BSD.shape
        q_BHSK, k_BHSK, v_BHSK = (
            self.qkv(x_BSD).view(batch, seq_len, 3, self.n_heads, dim // self.n_heads).permute(2, 0, 3, 1, 4)
        )
        if self.config._attn_implementation == "eager":
            y_BHSK = eager_attention(q_BHSK, k_BHSK, v_BHSK, allowed_B1SS)
        elif allowed_B1SS is None:
            y_BHSK = F.scaled_dot_product_attention(q_BHSK, k_BHSK, v_BHSK, is_causal=True)
        else:
            y_BHSK = F.scaled_dot_product_attention(q_BHSK, k_BHSK, v_BHSK, attn_mask=allowed_B1SS)
        return self.out(y_BHSK.transpose(1, 2).reshape(batch, seq_len, dim))


def eager_attention(
    q_BHSK: torch.Tensor, k_BHSK: torch.Tensor, v_BHSK: torch.Tensor, allowed_B1SS: torch.Tensor | None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(K), masked) v in plain ops; the causal mask when `allowed_B1SS` is None."""
    seq_len = q_BHSK.shape[2]
    if allowed_B1SS is None:
        allowed_B1SS = torch.ones(seq_len, seq_len, dtype=torch.bool, device=q_BHSK.device).tril()
    scores_BHSS = (q_BHSK @ k_BHSK.transpose(-2, -1)) * q_BHSK.shape[-1] ** -0.5
    scores_BHSS = scores_BHSS.masked_fill(~allowed_B1SS, float("-inf"))
    return torch.softmax(scores_BHSS, dim=-1) @ v_BHSK


def attention_allowed(keep_BS: torch.Tensor) -> torch.Tensor:
    """[B, 1, S, S] keys each query may attend to: earlier or same positions that are not padding. A query always
    sees itself, so a padded query (whose output no real token reads) never has an empty row."""
    seq_len = keep_BS.shape[1]
    causal_SS = torch.ones(seq_len, seq_len, dtype=torch.bool, device=keep_BS.device).tril()
    diagonal_SS = torch.eye(seq_len, dtype=torch.bool, device=keep_BS.device)
    return ((causal_SS & keep_BS[:, None, :]) | diagonal_SS)[:, None]


class FeedForward(nn.Module):
    def __init__(self, config: MoTConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.d_model, config.d_ff)
        self.down = nn.Linear(config.d_ff, config.d_model)

    def forward(self, x_BSD: torch.Tensor, keep_BS: torch.Tensor | None = None) -> torch.Tensor:
        """Per token, so padding (`keep_BS` False) cannot reach another token."""
        return self.down(torch.relu(self.up(x_BSD)))


def expert_mlp(x_ETD: torch.Tensor, w1_EDH: torch.Tensor, w2_EHD: torch.Tensor) -> torch.Tensor:
    """relu(x[e] @ W1[e]) @ W2[e] for every expert e: [E, T, D] -> [E, T, D]."""
    hidden_ETH = torch.bmm(x_ETD, w1_EDH.to(x_ETD.dtype)).relu_()
    return torch.bmm(hidden_ETH, w2_EHD.to(hidden_ETH.dtype))


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def ties_at_max(weights: torch.Tensor, *, dim: int) -> torch.Tensor:
    """1 where a weight equals the maximum along `dim` (every tied maximum), else 0: the authors' discrete rule."""
    return (weights == weights.amax(dim=dim, keepdim=True)).to(weights.dtype)


class MixtureOfTokens(nn.Module):
    """Groups of G same-position tokens of consecutive rows; R indexes (group, position) rows."""

    def __init__(self, config: MoTConfig) -> None:
        super().__init__()
        d_model, n_experts, hidden = config.d_model, config.n_experts, config.expert_size
        self.group_size = config.group_size
        self.routing = config.mot_routing
        self.authors_ties = config.mot_routing == "discrete" and config.mot_discrete_rule == "authors"
        self.emit = config.mot_emit
        self.fixed_temperature = float(config.mot_temperature)
        self.controller = nn.Parameter(torch.empty(d_model, n_experts))
        if config.mot_separate_emit_controller:
            self.emit_controller = nn.Parameter(torch.empty(d_model, n_experts))
        else:
            self.register_parameter("emit_controller", None)
        self.w1 = nn.Parameter(torch.empty(n_experts, d_model, hidden))
        self.w2 = nn.Parameter(torch.empty(n_experts, hidden, d_model))
        if config.mot_learnable_temperature == "none":
            self.register_parameter("log_temperature", None)
        else:
            shape = () if config.mot_learnable_temperature == "scalar" else (n_experts,)
            self.log_temperature = nn.Parameter(torch.empty(shape))

    def _tau(self) -> float | torch.Tensor:
        return self.fixed_temperature if self.log_temperature is None else self.log_temperature.exp()

    def _group_weights(self, logits_RGE: torch.Tensor, keep_RG1: torch.Tensor | None) -> torch.Tensor:
        """Weights over the group axis; with `keep_RG1`, masked tokens get 0 and the rest are normalised among
        themselves (a row with no kept token gets all zeros)."""
        if keep_RG1 is None:
            if self.routing == "uniform":
                return torch.full_like(logits_RGE, 1.0 / logits_RGE.shape[1])
            if self.routing == "discrete" and not self.authors_ties:
                top_R1E = logits_RGE.argmax(dim=1, keepdim=True)
                return torch.zeros_like(logits_RGE).scatter_(1, top_R1E, 1.0)
            weights_RGE = torch.softmax(at_least_fp32(logits_RGE) / self._tau(), dim=1)
            return (ties_at_max(weights_RGE, dim=1) if self.authors_ties else weights_RGE).to(logits_RGE.dtype)
        if self.routing == "uniform":
            kept_RGE = keep_RG1.expand_as(logits_RGE).to(logits_RGE.dtype)
            return kept_RGE / kept_RGE.sum(dim=1, keepdim=True).clamp(min=1)
        masked_RGE = at_least_fp32(logits_RGE).masked_fill(~keep_RG1, float("-inf"))
        if self.routing == "discrete" and not self.authors_ties:
            top_R1E = masked_RGE.argmax(dim=1, keepdim=True)
            weights_RGE = torch.zeros_like(logits_RGE).scatter_(1, top_R1E, 1.0)
        else:  # an all-masked row is NaN here and zeroed below
            weights_RGE = torch.softmax(masked_RGE / self._tau(), dim=1)
            weights_RGE = (ties_at_max(weights_RGE, dim=1) if self.authors_ties else weights_RGE).to(logits_RGE.dtype)
        return torch.where(keep_RG1, weights_RGE, 0.0)

    def forward(self, x_BSD: torch.Tensor, keep_BS: torch.Tensor | None = None) -> torch.Tensor:
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
        self.top_k = config.experts_per_token
        self.n_experts = config.n_experts
        self.router = nn.Parameter(torch.empty(config.d_model, config.n_experts))
        self.w1 = nn.Parameter(torch.empty(config.n_experts, config.d_model, config.expert_size))
        self.w2 = nn.Parameter(torch.empty(config.n_experts, config.expert_size, config.d_model))

    def forward(self, x_BSD: torch.Tensor, keep_BS: torch.Tensor | None = None) -> torch.Tensor:
        """Dropless, so padding (`keep_BS` False) takes no capacity and cannot reach another token."""
        dim, n_experts, top_k = x_BSD.shape[-1], self.n_experts, self.top_k
        x_ND = x_BSD.reshape(-1, dim)
        probs_NE = torch.softmax(at_least_fp32(x_ND) @ at_least_fp32(self.router), dim=-1)
        gate_NE, expert_NE = torch.sort(probs_NE, dim=-1, descending=True, stable=True)  # ties: lower index
        expert_A = expert_NE[:, :top_k].reshape(-1)
        token_A = torch.arange(x_ND.shape[0], device=x_ND.device).repeat_interleave(top_k)
        # slot of each assignment: its expert's block of `capacity` rows, in token order within the expert
        order_A = torch.argsort(expert_A, stable=True)
        count_E = torch.bincount(expert_A, minlength=n_experts)
        capacity = max(int(count_E.max()), 1)
        rank_A = torch.empty_like(order_A)
        rank_A[order_A] = (
            torch.arange(order_A.numel(), device=x_ND.device) - (count_E.cumsum(0) - count_E)[expert_A[order_A]]
        )
        slot_A = expert_A * capacity + rank_A
        slots_XD = x_ND.new_zeros(n_experts * capacity, dim).index_copy(0, slot_A, x_ND[token_A])
        out_ECD = expert_mlp(slots_XD.view(n_experts, capacity, dim), self.w1, self.w2)
        gate_A = gate_NE[:, :top_k].reshape(-1).to(out_ECD.dtype)
        y_AD = out_ECD.reshape(-1, dim)[slot_A] * gate_A[:, None]
        return x_ND.new_zeros(x_ND.shape).index_add(0, token_A, y_AD.to(x_ND.dtype)).view(x_BSD.shape)


FFN_CLASSES = {"dense": FeedForward, "mot": MixtureOfTokens, "token_choice": TokenChoice}


class Block(nn.Module):
    """x + attn(LN(x)), then x + ffn(LN(x))."""

    def __init__(self, config: MoTConfig, ffn_kind: str) -> None:
        super().__init__()
        self.attn_norm = LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ffn_norm = LayerNorm(config.d_model)
        self.ffn = FFN_CLASSES[ffn_kind](config)

    def forward(
        self, x_BSD: torch.Tensor, allowed_B1SS: torch.Tensor | None = None, keep_BS: torch.Tensor | None = None
    ) -> torch.Tensor:
        x_BSD = x_BSD + self.attn(self.attn_norm(x_BSD), allowed_B1SS)
        return x_BSD + self.ffn(self.ffn_norm(x_BSD), keep_BS)


class MoTPreTrainedModel(PreTrainedModel):
    config_class = MoTConfig
    base_model_prefix = "mot"
    _no_split_modules = ["Block"]
    _supports_sdpa = True  # attention is scaled_dot_product_attention; "eager" computes the same in plain ops

    def _init_weights(self, module: nn.Module) -> None:
        """Every weight comes from model.safetensors; nothing is initialised here."""


class MoTForCausalLM(MoTPreTrainedModel, GenerationMixin):
    """`model(input_ids[B, S]) -> logits[B, S, vocab]`; with `labels`, the mean next-token cross-entropy.

    There is no KV cache: `generate` recomputes the whole prefix at every step."""

    def __init__(self, config: MoTConfig) -> None:
        super().__init__(config)
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        self.position_embedding = nn.Embedding(config.max_seq_len, config.d_model)
        self.blocks = nn.ModuleList(Block(config, kind) for kind in config.block_ffn_kinds)
        self.final_norm = LayerNorm(config.d_model) if config.final_norm else nn.Identity()
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.token_embedding

    def get_output_embeddings(self) -> nn.Linear:
        return self.head

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
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
        x_BSD = self.token_embedding(input_ids) + self.position_embedding(position_ids)
        for block in self.blocks:
            x_BSD = block(x_BSD, allowed_B1SS, keep_BS)
        logits_BSV = self.head(self.final_norm(x_BSD))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits_BSV[:, :-1].float().flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits_BSV)

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, **kwargs) -> dict:
        """The whole prefix and its mask every step (no cache); positions come from the mask in `forward`."""
        return {"input_ids": input_ids, "attention_mask": kwargs.get("attention_mask")}
