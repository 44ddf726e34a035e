"""A rough training-memory estimate for `mot train --dry-run`.

States: weights, gradients and AdamW's two moments (float32 unless bf16-pure). Activations kept for backward,
per token and block: attention about 6*d values plus heads*S attention probabilities (an upper bound: fused
attention kernels keep none of them); a dense FF 2*d + 2*d_ff; an MoT / sparse FF 2*d plus, for each of its
E/G mixed tokens, the mixed token, the expert hidden layer before and after ReLU and the expert output:
(E/G)*(2*d + 2*h). Plus the logits and their float32 copy for the loss. Allocator slack comes on top.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelConfig
from ..counting import ModelCounts


@dataclass(frozen=True)
class MemoryEstimate:
    states_bytes: int
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.states_bytes + self.activation_bytes


def activation_values_per_token(config: ModelConfig) -> float:
    d = config.d_model
    values = 0.0
    for kind in config.block_ffn_kinds():
        values += 6 * d + config.n_heads * config.max_seq_len
        if kind == "dense":
            values += 2 * d + 2 * config.d_ff
        else:
            values += 2 * d + config.n_experts / config.group_size * (2 * d + 2 * config.expert_size)
    return values + 2 * config.vocab_size


def estimate_training_memory(
    counts: ModelCounts, config: ModelConfig, micro_batch: int, precision: str
) -> MemoryEstimate:
    state_bytes = 2 if precision == "bf16-pure" else 4
    value_bytes = 4 if precision == "fp32" else 2
    tokens = micro_batch * config.max_seq_len
    return MemoryEstimate(
        states_bytes=counts.total_params * state_bytes * 4,
        activation_bytes=int(activation_values_per_token(config) * tokens * value_bytes),
    )
