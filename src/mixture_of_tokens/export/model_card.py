"""The README.md (model card) of an exported model: what it is, how to load it, and MoT's batch rule."""

from __future__ import annotations

from pathlib import Path

from ..blocks import kv_heads
from ..config import ModelConfig
from ..data import Tokenizer
from ..layers import batch_multiple, layer_class

__all__ = ["block_summary", "model_card", "native_model_card"]


def block_summary(config: ModelConfig) -> str:
    """The block in a sentence: positions, norm, feed-forward activation, attention heads and the other options."""
    if config.positions == "rope":
        parts = [f"rotary positions (RoPE, base {config.rope_base:g})"]
    else:
        parts = ["learned positions"]
    parts.append(f"{'RMSNorm' if config.norm == 'rmsnorm' else 'LayerNorm'} (eps {config.norm_eps:g})")
    parts.append(f"{'SwiGLU' if config.ffn_activation == 'swiglu' else 'ReLU'} feed-forwards and experts")
    if kv_heads(config) != config.n_heads:
        parts.append(f"grouped-query attention ({kv_heads(config)} key/value heads for {config.n_heads} query heads)")
    if config.qk_norm:
        parts.append("per-head query/key norms")
    if not config.dense_bias:
        parts.append("no biases in the dense feed-forward")
    if not config.final_norm:
        parts.append("no final norm")
    return f"Block: {', '.join(parts)}."


def model_card(config: ModelConfig, tokenizer: Tokenizer, source: Path) -> str:
    kinds = config.block_ffn_kinds()
    layout = ", ".join(f"{kind} x{kinds.count(kind)}" for kind in dict.fromkeys(kinds))
    group = batch_multiple(config)
    has_mot = group > 1  # rows of a group couple (MoT groups across the batch)
    lines = [
        "---",
        "library_name: transformers",
        "tags: [mixture-of-tokens, mixture-of-experts]",
        "---",
        "",
        "# Mixture of Tokens language model",
        "",
        f"Exported by `mot export --to hf` (mixture-of-tokens) from `{source.name}`: a decoder-only pre-LN",
        f"Transformer, {config.n_blocks} blocks of width {config.d_model}, {config.n_heads} heads, context",
        f"{config.max_seq_len} tokens, vocabulary {config.vocab_size} ({tokenizer.name}); feed-forward blocks:",
        f"{layout}. `DIR` below is this directory (or the hub name it is uploaded under).",
        block_summary(config),
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("DIR", trust_remote_code=True)  # modeling_mot.py, plain PyTorch',
        'tokenizer = AutoTokenizer.from_pretrained("DIR", trust_remote_code=True)',
        "```",
        "",
        "`modeling_mot.py` needs only PyTorch and transformers. Its logits equal those of the mixture-of-tokens",
        "package's model for the same ids (checked when the directory was written, float32, to 1e-5). Token Choice",
        "blocks route dropless, as that package runs them at inference: a token's output is its own, and padding",
        "takes no expert capacity. There is no KV cache: `generate` recomputes the whole prefix at every step.",
        "Padding works as in transformers' decoder models, on either side: positions are counted from the",
        "`attention_mask` (cumsum - 1) and padded keys are masked in attention, so in a batch padded on the left",
        '(`tokenizer.padding_side = "left"`, for `generate` and `pipeline`) or on the right (scoring), the real',
        "tokens of each row get the logits of that row alone"
        + (" (MoT blocks: see the batch rule below)." if has_mot else "."),
        "The tokenizer's `<|endoftext|>` is the end-of-text and the padding token (id",
        f"{tokenizer.eos_id}), also when it appears inside a text.",
    ]
    if has_mot:
        lines += [
            "",
            "## The batch rule (Mixture of Tokens)",
            "",
            f"A MoT block mixes the tokens of a group of G = {group} consecutive rows of the batch at the same",
            "position:",
            "",
            f"- **the batch must be a multiple of {group}** (rows g*{group} .. g*{group}+{group - 1} form group g); "
            "another batch size is refused with one sentence;",
            "- **the rows of a group change each other's outputs** (tokens at other positions never meet, so nothing",
            "  leaks from later positions, but a row's logits depend on the other rows of its group);",
            "- **padded tokens (attention_mask 0) take no part in the mix**: they get zero merge and emit weight, the",
            "  group's softmax is renormalised over its unmasked tokens, and a group position with no unmasked token",
            "  contributes nothing, so neither the pad id nor the contents of all-padding rows change a real row. What",
            "  padding does change: a real token is mixed only with the unmasked tokens in the same column of its",
            "  group (with left padding these sit at other positions of their rows), and a group with fewer real",
            "  tokens than G is not the group the model was trained on;",
            f"- **to score or generate one sequence, fill its group with {group - 1} rows of ordinary text** (e.g.",
            "  windows of the training text, cut to the same length) and read only its row. The mixture-of-tokens",
            "  package does exactly this (`Predictor`, `mot eval`, its lm-eval adapter: the query in one random row of",
            "  a batch of max(32, G) training-text rows, seeded by the query's text), so its scores are reproducible.",
            "",
            "```python",
            "import torch",
            "",
            'ids = tokenizer("The ship sailed", return_tensors="pt").input_ids        # [1, S]',
            "filler = ...  # [G - 1, S] token ids of ordinary text",
            "logits = model(torch.cat([ids, filler])).logits[0]                     # the sequence's own row",
            "```",
        ]
    return "\n".join(lines) + "\n"


def native_model_card(config: ModelConfig, tokenizer: Tokenizer, source: Path, target) -> str:  # noqa: ANN001
    """The card of a native export (export/native.py): a standard transformers architecture, no remote code."""
    roles = [layer_class(kind).native_role for kind in config.block_ffn_kinds()]
    sparse = [index for index, role in enumerate(roles) if role == "top_k_moe"]
    lines = [
        "---",
        "library_name: transformers",
        f"tags: [mixture-of-tokens, {target.model_type}]",
        "---",
        "",
        f"# {target.architecture} exported from mixture-of-tokens",
        "",
        f"Exported by `mot export --to hf` (mixture-of-tokens) from `{source.name}` as transformers' own",
        f"`{target.architecture}` (model_type `{target.model_type}`), written by its `save_pretrained`: no remote",
        "code.",
        f"{config.n_blocks} blocks of width {config.d_model}, {config.n_heads} query heads and "
        f"{config.n_kv_heads or config.n_heads} key/value heads, RoPE (base {config.rope_base:g}), RMSNorm, SwiGLU,",
        f"context {config.max_seq_len} tokens, vocabulary {config.vocab_size} ({tokenizer.name}).",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("DIR")',
        'tokenizer = AutoTokenizer.from_pretrained("DIR")',
        "```",
        "",
        "Its logits equal those of the mixture-of-tokens package's model for the same ids (checked when the",
        "directory was written, float32, to 1e-5).",
    ]
    if sparse:
        lines += [
            "",
            f"Blocks {', '.join(map(str, sparse))} are Token Choice MoE blocks ({config.n_experts} SwiGLU experts of "
            f"width {config.expert_size}, top-{config.tc_top_k},",
            "probabilities "
            + ("renormalised over the top-k" if config.tc_norm_topk_prob else "not renormalised")
            + "); the others are dense (`mlp_only_layers`). The package trained them with an expert capacity; at",
            "inference both it and transformers route dropless, so a token's output is its own.",
        ]
        if target.model_type == "qwen2_moe":
            lines += [
                "Qwen2-MoE always has a shared expert: here its width is 0 (`shared_expert_intermediate_size: 0`),",
                "so it adds nothing.",
            ]
    lines += [
        "",
        "The tokenizer's `<|endoftext|>` is the end-of-text and the padding token (id",
        f"{tokenizer.eos_id}).",
    ]
    return "\n".join(lines) + "\n"
