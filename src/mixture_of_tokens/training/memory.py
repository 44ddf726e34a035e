"""The memory estimate of `mot train --dry-run`: one process at the larger of two peaks, a training step's and the
held-out evaluation's (`RunMemoryEstimate`).

The peak of a training step is reached at the end of the forward pass, in the loss, when every activation kept for
backward is alive:

  states       weights, gradients and AdamW's two moments (4 copies of the parameters, float32 unless bf16-pure)
  activations  per token and block: the residual stream, both LayerNorm outputs, q/k/v, the attention output
               and its copy into the output projection (7*d values), fused attention's log-sum-exp per head and
               the two LayerNorms' statistics (fewer keys and values with grouped-query attention, more with RoPE,
               query/key norms and RMSNorm: `attention_and_norm_values_per_token`); plus what the block's
               feed-forward layer keeps
               (`activation_values_per_token` of its kind, its input included); plus the final LayerNorm (its
               output's place is taken by the gradient of the hidden states the chunked loss keeps);
  loss         the trainer's chunked loss (`lm_loss`): one chunk of LOSS_CHUNK_TOKENS tokens' logits in float32
               (plus their copy in bf16 under bf16), and the head's float32 gradient, computed in the forward;
  runtime      on the CPU, what PyTorch itself maps in during the first training steps: about 97 MB with the
               CPU build of torch 2.13 (kernels, thread buffers, and the first optimizer importing torch._dynamo),
               and about 98 MB more when Triton is installed (torch._dynamo then imports it too); measured as the
               peak RSS of two training steps of a model too small to count (d = 16, V = 64) minus a process that
               has everything but a model and its training; on CUDA, the CUDA context is not counted.
The evaluation (every eval step and the final one) runs the model without gradients on `eval_batch` rows at a time:
the training micro-batch, rounded up to the rows the layers couple (`evaluation.loss.evaluation_rows`), with the
training step's chunked loss. Its peak is the larger of two moments:
  states       weights and AdamW's two moments (the gradients are freed after every step)
  a block      one block's forward: at most what a training step keeps of that block (its attention, norms and
               feed-forward layer: an upper bound, as nothing is kept after a block without gradients)
  the loss     the residual stream and the final norm's output (2*d values per token), one chunk's float32 logits
               (plus their copy in the activation dtype, and the head weight's copy in that dtype under bf16-mixed)
  besides both the micro-batch's int64 inputs and targets, and the runtime as in training (already mapped in by then).
Before, the evaluation ran the whole batch with full logits: tiny-mot at batch 512 needed 4.52 GB for it against 2.04
GB for a training step; in micro-batches with the chunked loss it needs less than the training step.
Checked against saved-tensor hooks (exact for the tiny presets) and against peak RSS (tests/training/test_memory.py).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import torch

from ..blocks import kv_heads
from ..config import ModelConfig
from ..counting import ModelCounts
from ..layers import block_classes
from ..lm_loss import LOSS_CHUNK_TOKENS
from ..runtime.precision import Precision

CPU_RUNTIME_BYTES = 97 * 10**6
TRITON_IMPORT_BYTES = 98 * 10**6


def cpu_runtime_bytes() -> int:
    """What PyTorch maps in on the CPU during the first training steps, with Triton's import when it is installed."""
    with_triton = importlib.util.find_spec("triton") is not None
    return CPU_RUNTIME_BYTES + (TRITON_IMPORT_BYTES if with_triton else 0)


FLOAT32_BYTES = 4


@dataclass(frozen=True)
class MemoryEstimate:
    """One peak: the states (weights, their gradients and optimizer moments as far as they are alive then), the
    activations (and the loss's buffers), and PyTorch's own runtime."""

    device: str
    precision: str
    states_bytes: int
    activation_bytes: int
    runtime_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.states_bytes + self.activation_bytes + self.runtime_bytes

    def parts(self, states: str, activations: str) -> str:
        """`STATES 0.08 GB, ACTIVATIONS 1.86 GB, PyTorch runtime 0.10 GB, total 2.04 GB`."""
        gb = 1e9
        return (
            f"{states} {self.states_bytes / gb:.2f} GB, {activations} {self.activation_bytes / gb:.2f} GB, PyTorch "
            f"runtime {self.runtime_bytes / gb:.2f} GB, total {self.total_bytes / gb:.2f} GB"
        )


@dataclass(frozen=True)
class RunMemoryEstimate:
    """The two peaks of a run, a training step's at `micro_batch` and the evaluation's at `eval_batch` rows per
    forward; the run needs the larger."""

    training: MemoryEstimate
    evaluation: MemoryEstimate
    micro_batch: int
    eval_batch: int

    @property
    def dominated_by_evaluation(self) -> bool:
        return self.evaluation.total_bytes > self.training.total_bytes

    @property
    def total_bytes(self) -> int:
        return max(self.training.total_bytes, self.evaluation.total_bytes)

    def describe(self) -> str:
        """Three lines: the peak and which part of the run reaches it, then each part."""
        training, evaluation = self.training, self.evaluation
        if self.dominated_by_evaluation:
            where = "the held-out evaluation, above the training step"
        else:
            where = "the training step, above the held-out evaluation"
        return (
            f"memory estimate for one process on {training.device} in {training.precision}: peak "
            f"{self.total_bytes / 1e9:.2f} GB, in {where}\n"
            f"  training step (micro-batch {self.micro_batch}): "
            f"{training.parts('weights+grads+AdamW', 'activations and loss')}\n"
            f"  evaluation ({self.eval_batch} rows per forward, chunked loss): "
            f"{evaluation.parts('weights+AdamW', 'activations and loss')}"
        )


def attention_and_norm_values_per_token(config: ModelConfig) -> float:
    """One block's attention and its two norms (the paper's block: 7d + heads + 4). Grouped-query attention keeps
    keys and values of kv heads only (q, k, v: d + 2w for the kv width w = kv heads x head width); RoPE keeps the
    rotated queries and keys (d + w); per-head query/key norms keep their normalised values, their output or its
    rotation and one statistic per head (2d + heads + 2w + kv heads, with or without RoPE); an RMSNorm keeps its
    normalised input besides its input (d - 1 more than a LayerNorm). RoPE's cos and sin, shared by the blocks, are
    2 x head width per position, not counted (under 0.2% of the tiny presets)."""
    d_model, heads = config.d_model, config.n_heads
    kv_width = kv_heads(config) * (d_model // heads)
    values = 7 * d_model + heads + 4 - 2 * (d_model - kv_width)
    if config.qk_norm:
        values += 2 * d_model + heads + 2 * kv_width + kv_heads(config)
    elif config.positions == "rope":
        values += d_model + kv_width
    if config.norm == "rmsnorm":
        values += 2 * (d_model - 1)
    return values


def block_values_per_token(config: ModelConfig) -> float:
    """Values kept for backward per token outside the loss: every block and the final norm (the chunked loss keeps
    nothing per token beyond them; its buffers are per chunk, `loss_bytes`)."""
    feed_forward = sum(cls.activation_values_per_token(config) for cls in block_classes(config))
    final_norm = 2 * config.d_model + 2 + (config.d_model - 1 if config.norm == "rmsnorm" else 0)
    return config.n_blocks * attention_and_norm_values_per_token(config) + feed_forward + final_norm


def loss_bytes(config: ModelConfig, tokens: int, activation_bytes: int) -> int:
    """The chunked loss at its peak: one chunk's float32 logits (in place they become the softmax and its
    gradient), their copy in the activation dtype when that is not float32, and the head's float32 gradient."""
    chunk = min(tokens, LOSS_CHUNK_TOKENS)
    copy_bytes = activation_bytes if activation_bytes != FLOAT32_BYTES else 0
    return (
        chunk * config.model_vocab_size * (FLOAT32_BYTES + copy_bytes)
        + config.model_vocab_size * config.d_model * FLOAT32_BYTES
    )


def estimate_training_memory(
    counts: ModelCounts, config: ModelConfig, micro_batch: int, precision: Precision, device: torch.device
) -> MemoryEstimate:
    tokens = micro_batch * config.max_seq_len
    value_bytes = precision.activation_bytes
    activations = block_values_per_token(config) * value_bytes * tokens
    return MemoryEstimate(
        device=device.type,
        precision=str(precision),
        states_bytes=counts.total_params * precision.state_bytes * 4,
        activation_bytes=int(activations) + loss_bytes(config, tokens, value_bytes),
        runtime_bytes=cpu_runtime_bytes() if device.type == "cpu" else 0,
    )


INT64_BYTES = 8


def evaluation_values_per_token(config: ModelConfig) -> float:
    """Values alive per token in the largest block's forward without gradients: at most what a training step keeps
    of that block (`attention_and_norm_values_per_token` and the feed-forward layer's)."""
    attention = attention_and_norm_values_per_token(config)
    return attention + max(cls.activation_values_per_token(config) for cls in block_classes(config))


def evaluation_bytes(config: ModelConfig, tokens: int, precision: Precision) -> int:
    """The evaluation's activations at their peak for `tokens` tokens per forward: the larger of one block's
    (`evaluation_values_per_token`) and the loss's (the residual stream and final norm output, one chunk's float32
    logits and their copy in the activation dtype, the head weight's copy in that dtype when the weights are
    float32); besides either, the micro-batch's int64 inputs and targets."""
    value_bytes, vocab = precision.activation_bytes, config.model_vocab_size
    block = evaluation_values_per_token(config) * value_bytes * tokens
    copy_bytes = value_bytes if value_bytes != FLOAT32_BYTES else 0
    head_copy = vocab * config.d_model * value_bytes if value_bytes != precision.state_bytes else 0
    chunk = min(tokens, LOSS_CHUNK_TOKENS) * vocab * (FLOAT32_BYTES + copy_bytes)
    loss = 2 * config.d_model * value_bytes * tokens + chunk + head_copy
    return int(max(block, loss)) + 2 * INT64_BYTES * tokens


def estimate_evaluation_memory(
    counts: ModelCounts, config: ModelConfig, eval_batch: int, precision: Precision, device: torch.device
) -> MemoryEstimate:
    """The held-out evaluation's peak at `eval_batch` rows per forward: weights and AdamW's moments (no gradients),
    the activations and chunked loss (`evaluation_bytes`), PyTorch's runtime."""
    return MemoryEstimate(
        device=device.type,
        precision=str(precision),
        states_bytes=counts.total_params * precision.state_bytes * 3,
        activation_bytes=evaluation_bytes(config, eval_batch * config.max_seq_len, precision),
        runtime_bytes=cpu_runtime_bytes() if device.type == "cpu" else 0,
    )


def estimate_run_memory(
    counts: ModelCounts,
    config: ModelConfig,
    *,
    micro_batch: int,
    eval_batch: int,
    precision: Precision,
    device: torch.device,
) -> RunMemoryEstimate:
    """Both peaks of a run: a training step at `micro_batch` sequences and the evaluation at `eval_batch` rows per
    forward (the trainer's: `evaluation.loss.evaluation_rows` of the micro-batch)."""
    return RunMemoryEstimate(
        training=estimate_training_memory(counts, config, micro_batch, precision, device),
        evaluation=estimate_evaluation_memory(counts, config, eval_batch, precision, device),
        micro_batch=micro_batch,
        eval_batch=eval_batch,
    )
