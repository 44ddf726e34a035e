"""A rough training-memory estimate for `mot train --dry-run`.

States: weights, gradients and AdamW's two moments (float32 unless bf16-pure). Activations kept for backward,
per token and block: attention about 6*d values plus heads*S attention probabilities (an upper bound: fused
attention kernels keep none of them), and what the block's feed-forward layer reports
(`activation_values_per_token` of its kind). Plus the logits and their float32 copy for the loss. Allocator
slack comes on top.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ModelConfig
from ..counting import ModelCounts
from ..layers import block_classes
from ..runtime.precision import Precision


@dataclass(frozen=True)
class MemoryEstimate:
    states_bytes: int
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.states_bytes + self.activation_bytes


def activation_values_per_token(config: ModelConfig) -> float:
    """Attention per block plus what each block's feed-forward layer says it keeps, plus the logits."""
    attention = 6 * config.d_model + config.n_heads * config.max_seq_len
    feed_forward = sum(cls.activation_values_per_token(config) for cls in block_classes(config))
    return config.n_blocks * attention + feed_forward + 2 * config.vocab_size


def estimate_training_memory(
    counts: ModelCounts, config: ModelConfig, micro_batch: int, precision: Precision
) -> MemoryEstimate:
    state_bytes, value_bytes = precision.state_bytes, precision.activation_bytes
    tokens = micro_batch * config.max_seq_len
    return MemoryEstimate(
        states_bytes=counts.total_params * state_bytes * 4,
        activation_bytes=int(activation_values_per_token(config) * tokens * value_bytes),
    )
