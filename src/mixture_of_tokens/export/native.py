"""Native transformers exports: a model whose every block is a transformers architecture is written as that
architecture, by transformers' own `save_pretrained`, so the directory loads with
`AutoModelForCausalLM.from_pretrained(DIR)` (no remote code) and serves wherever that architecture does.

The Llama-style block (RoPE, RMSNorm, SwiGLU without biases, any number of kv heads, untied or tied head, a final
norm) with
    dense blocks only                                      -> LlamaForCausalLM
    dense blocks only, per-head query/key norms            -> Qwen3ForCausalLM
    Token Choice blocks (and dense ones), no query/key norm -> Qwen2MoeForCausalLM, its shared expert of width 0
    Token Choice blocks (and dense ones), query/key norms  -> Qwen3MoeForCausalLM
Token Choice maps exactly because at inference it routes dropless (as this package runs it, and as transformers'
MoE blocks do): softmax over experts in float32, the top-k experts, their probabilities renormalised or not
(`tc_norm_topk_prob` -> norm_topk_prob), each expert (silu(x W_gate) * x W_up) W_down. Dense blocks of a Token Choice
model are the MoE config's mlp_only_layers (the authors' second-half layout included). Qwen2-MoE always builds a
shared expert and its sigmoid gate; with shared_expert_intermediate_size 0 the shared expert adds exactly zero.

MoT and Expert Choice couple the rows of a batch and have no transformers counterpart. Every model without a native
architecture whose kinds the remote-code export implements (MoT in either block, the paper's block, a block mixing
the two styles) keeps the remote-code export (export/hf.py, templates/modeling_mot.py); Expert Choice has none.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from ..blocks import kv_heads
from ..config import ModelConfig
from ..data import Tokenizer
from ..layers import layer_class

GATED_MLP, TOP_K_MOE = "gated_mlp", "top_k_moe"
"""The `native_role`s of the feed-forward kinds this export maps."""

__all__ = ["NATIVE_ARCHITECTURES", "NativeTarget", "native_problem", "native_target", "write_native"]

NATIVE_ARCHITECTURES: dict[str, str] = {
    "llama": "LlamaForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
}
"""model_type -> the transformers class a native export is."""


@dataclass(frozen=True)
class NativeTarget:
    model_type: str

    @property
    def architecture(self) -> str:
        return NATIVE_ARCHITECTURES[self.model_type]


def native_problem(config: ModelConfig) -> str | None:
    """Why the model has no native transformers architecture (a phrase), or None when it has one."""
    llama_style = {
        "positions": "rope", "norm": "rmsnorm", "ffn_activation": "swiglu", "dense_bias": False, "final_norm": True,
        "objective": "causal",
    }  # fmt: skip
    differing = [
        f"{name}={getattr(config, name)!r}" for name, value in llama_style.items() if getattr(config, name) != value
    ]
    if differing:
        return f"its block is not the Llama-style one ({', '.join(differing)})"
    other = [kind for kind in dict.fromkeys(config.block_ffn_kinds()) if layer_class(kind).native_role is None]
    if other:
        return f"its {', '.join(other)} layers have no transformers counterpart"
    return None


def _roles(config: ModelConfig) -> list[str | None]:
    """Each block's feed-forward role in transformers' models (`FeedForwardLayer.native_role`)."""
    return [layer_class(kind).native_role for kind in config.block_ffn_kinds()]


def native_target(config: ModelConfig) -> NativeTarget | None:
    """The architecture a model is written as natively, or None (`native_problem` says why)."""
    if native_problem(config) is not None:
        return None
    if TOP_K_MOE in _roles(config):
        return NativeTarget("qwen3_moe" if config.qk_norm else "qwen2_moe")
    return NativeTarget("qwen3" if config.qk_norm else "llama")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' progress bars (writing shards, loading weights) off while the export saves and checks, as
    before afterwards; torch's warning about initialising Qwen2-MoE's shared expert of width 0 is not shown."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors is a no-op")
            yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def _common_settings(config: ModelConfig, tokenizer: Tokenizer) -> dict:
    return {
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_blocks,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": kv_heads(config),
        "hidden_act": "silu",
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.norm_eps,
        "rope_parameters": {"rope_type": "default", "rope_theta": float(config.rope_base)},
        "tie_word_embeddings": config.tie_embeddings,
        "bos_token_id": tokenizer.eos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.eos_id,
    }


def native_config(config: ModelConfig, tokenizer: Tokenizer, target: NativeTarget):  # noqa: ANN201 (transformers)
    """The transformers config of the native export."""
    from transformers import AutoConfig

    settings = _common_settings(config, tokenizer)
    head_dim = config.d_model // config.n_heads
    if target.model_type in ("llama", "qwen3"):
        settings |= {"head_dim": head_dim, "attention_bias": False}
        if target.model_type == "llama":
            settings["mlp_bias"] = False
    else:
        settings |= {
            "num_experts": config.n_experts,
            "num_experts_per_tok": config.tc_top_k,
            "moe_intermediate_size": config.expert_size,
            "norm_topk_prob": config.tc_norm_topk_prob,
            "decoder_sparse_step": 1,
            "mlp_only_layers": [index for index, role in enumerate(_roles(config)) if role == GATED_MLP],
            "router_aux_loss_coef": config.tc_load_balance_weight,
            "use_sliding_window": False,
        }
        if target.model_type == "qwen2_moe":
            settings |= {"shared_expert_intermediate_size": 0, "qkv_bias": False}
        else:
            settings |= {"attention_bias": False}
    return AutoConfig.for_model(target.model_type, **settings)


def native_state_dict(weights: dict[str, torch.Tensor], config: ModelConfig, target: NativeTarget) -> dict:
    """This package's weights under transformers' names and layouts (nn.Linear [out, in]; fused experts
    gate_up_proj [E, 2H, D] and down_proj [E, D, H])."""
    d_model = config.d_model
    kv_width = kv_heads(config) * (d_model // config.n_heads)
    out = {
        "model.embed_tokens.weight": weights["token_embedding.weight"],
        "model.norm.weight": weights["final_norm.weight"],
    }
    if not config.tie_embeddings:
        out["lm_head.weight"] = weights["head.weight"]
    for index, role in enumerate(_roles(config)):
        ours, theirs = f"blocks.{index}.", f"model.layers.{index}."
        qkv = weights[ours + "attn.qkv.weight"]
        out |= {
            theirs + "input_layernorm.weight": weights[ours + "attn_norm.weight"],
            theirs + "post_attention_layernorm.weight": weights[ours + "ffn_norm.weight"],
            theirs + "self_attn.q_proj.weight": qkv[:d_model],
            theirs + "self_attn.k_proj.weight": qkv[d_model : d_model + kv_width],
            theirs + "self_attn.v_proj.weight": qkv[d_model + kv_width :],
            theirs + "self_attn.o_proj.weight": weights[ours + "attn.out.weight"],
        }
        if config.qk_norm:
            out[theirs + "self_attn.q_norm.weight"] = weights[ours + "attn.q_norm.weight"]
            out[theirs + "self_attn.k_norm.weight"] = weights[ours + "attn.k_norm.weight"]
        if role == GATED_MLP:
            for name in ("gate", "up", "down"):
                out[theirs + f"mlp.{name}_proj.weight"] = weights[ours + f"ffn.{name}.weight"]
            continue
        out |= {
            theirs + "mlp.gate.weight": weights[ours + "ffn.router"].t(),  # [D, E] -> [E, D]
            theirs + "mlp.experts.gate_up_proj": weights[ours + "ffn.w1"].transpose(1, 2),  # [E, D, 2H] -> [E, 2H, D]
            theirs + "mlp.experts.down_proj": weights[ours + "ffn.w2"].transpose(1, 2),  # [E, H, D] -> [E, D, H]
        }
        if target.model_type == "qwen2_moe":  # the shared expert of width 0 and its gate: zero, adding nothing
            dtype = weights[ours + "ffn.router"].dtype
            out |= {
                theirs + "mlp.shared_expert.gate_proj.weight": torch.zeros(0, d_model, dtype=dtype),
                theirs + "mlp.shared_expert.up_proj.weight": torch.zeros(0, d_model, dtype=dtype),
                theirs + "mlp.shared_expert.down_proj.weight": torch.zeros(d_model, 0, dtype=dtype),
                theirs + "mlp.shared_expert_gate.weight": torch.zeros(1, d_model, dtype=dtype),
            }
    return {name: tensor.detach().contiguous().clone() for name, tensor in out.items()}


def write_native(
    weights: dict[str, torch.Tensor], config: ModelConfig, tokenizer: Tokenizer, directory: Path, target: NativeTarget
) -> list[str]:
    """Build the transformers model, load the mapped weights (every tensor, strictly) and `save_pretrained` it into
    `directory`; returns the files written."""
    from transformers import AutoModelForCausalLM

    hf_config = native_config(config, tokenizer, target)
    dtype = weights["token_embedding.weight"].dtype
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=dtype)
    state = native_state_dict(weights, config, target)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [name for name in missing if not (config.tie_embeddings and name == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"native {target.architecture} export: missing {missing}, unexpected {unexpected}.")
    if config.tie_embeddings:
        model.tie_weights()
    model.save_pretrained(str(directory))
    return sorted(path.name for path in directory.iterdir())
