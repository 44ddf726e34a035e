"""The training-memory estimate of `mot train --dry-run`: one process at the peak of a training step.

The peak is reached in the backward pass of the loss, when every activation kept for backward is still alive:
  states       weights, gradients and AdamW's two moments (4 copies of the parameters, float32 unless bf16-pure)
  activations  per token and block: the residual stream, both LayerNorm outputs, q/k/v, the attention output
               and its copy into the output projection (7*d values), fused attention's log-sum-exp per head and
               the two LayerNorms' statistics; plus what the block's feed-forward layer keeps
               (`activation_values_per_token` of its kind, its input included); plus the final LayerNorm;
  loss         per token, the logits (in the activation dtype), the float32 log-probabilities, their gradient
               and the logits' float32 gradient (4*V values in fp32);
  runtime      on the CPU, what PyTorch itself maps in during the first training step (kernels, thread
               buffers): about 90 MB with the CPU build of torch 2.13, measured as peak RSS minus a process that
               has everything but the model and its training; on CUDA, the CUDA context is not counted.
Checked against saved-tensor hooks (exact for the tiny presets) and against peak RSS (tests/test_memory.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import ModelConfig
from ..counting import ModelCounts
from ..layers import block_classes
from ..runtime.precision import Precision

CPU_RUNTIME_BYTES = 90 * 10**6
FLOAT32_BYTES = 4


@dataclass(frozen=True)
class MemoryEstimate:
    device: str
    precision: str
    states_bytes: int
    activation_bytes: int
    runtime_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.states_bytes + self.activation_bytes + self.runtime_bytes

    def describe(self, micro_batch: int) -> str:
        gb = 1e9
        return (
            f"memory estimate for one process on {self.device} in {self.precision} (micro-batch {micro_batch}): "
            f"weights+grads+AdamW {self.states_bytes / gb:.2f} GB, activations and loss "
            f"{self.activation_bytes / gb:.2f} GB, PyTorch runtime {self.runtime_bytes / gb:.2f} GB, "
            f"total {self.total_bytes / gb:.2f} GB"
        )


def block_values_per_token(config: ModelConfig) -> float:
    """Values kept for backward per token outside the loss: every block and the final LayerNorm."""
    attention_and_norms = 7 * config.d_model + config.n_heads + 4
    feed_forward = sum(cls.activation_values_per_token(config) for cls in block_classes(config))
    return config.n_blocks * attention_and_norms + feed_forward + 2 * config.d_model + 2


def activation_values_per_token(config: ModelConfig) -> float:
    """Values alive per token at the peak, counting the float32 loss buffers as values (fp32 training)."""
    return block_values_per_token(config) + 4 * config.vocab_size


def loss_bytes_per_token(config: ModelConfig, activation_bytes: int) -> int:
    """The logits in the activation dtype; the float32 log-probabilities, their gradient and the logits'
    float32 gradient (the peak, in log-softmax's backward)."""
    return config.vocab_size * (activation_bytes + 3 * FLOAT32_BYTES)


def estimate_training_memory(
    counts: ModelCounts, config: ModelConfig, micro_batch: int, precision: Precision, device: torch.device
) -> MemoryEstimate:
    tokens = micro_batch * config.max_seq_len
    value_bytes = precision.activation_bytes
    per_token = block_values_per_token(config) * value_bytes + loss_bytes_per_token(config, value_bytes)
    return MemoryEstimate(
        device=device.type,
        precision=str(precision),
        states_bytes=counts.total_params * precision.state_bytes * 4,
        activation_bytes=int(per_token * tokens),
        runtime_bytes=CPU_RUNTIME_BYTES if device.type == "cpu" else 0,
    )
