"""One optimizer step: the LR of the schedule, gradient accumulation over micro-batches, clipping, AdamW, and a
guard that keeps non-finite values out of the weights without a host sync.

The guard works on the device: every step it records whether the loss and the gradient norm are finite
(`torch.logical_or` into a flag, and the first bad step), and zeroes the gradients of a non-finite step before
AdamW sees them, so NaN or infinity never enters the weights or the moments. The loop reads the flag (one sync)
only where it syncs anyway (log, eval and checkpoint steps) and before anything is written, and stops there.

On CUDA a step is also free of the other host waits: the batch arrives through pinned memory without blocking
(`runtime.devices.to_device`), AdamW is the fused kernel (`fused_adamw_applies`), and the model returns the loss
only, its head and cross-entropy taken a chunk of tokens at a time (`Transformer(..., return_logits=False)`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import TrainConfig
from ..runtime import distributed as dist_utils
from ..runtime.devices import to_device
from ..runtime.precision import Precision
from .schedule import lr_multiplier


@dataclass
class StepResult:
    """What one step measured, as device tensors (reading them is a host sync, done at log steps only)."""

    lr: float
    loss: torch.Tensor
    lm_loss: torch.Tensor
    grad_norm: torch.Tensor
    aux: dict[str, torch.Tensor]


def fused_adamw_applies(parameters: Iterable[torch.Tensor]) -> bool:
    """True when every parameter is a floating-point CUDA tensor: AdamW then runs as one fused kernel per group
    (its step counters on the device, so no host work per parameter). Elsewhere torch's default stays (for-each
    kernels on CUDA, per-tensor updates on the CPU)."""
    parameters = list(parameters)
    return bool(parameters) and all(p.device.type == "cuda" and p.is_floating_point() for p in parameters)


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW in two groups, decayed and not: weight decay on matrices and expert tensors (dim >= 2) and none on
    biases, norms, temperatures, or (`weight_decay_params="all"`, the authors' code) on every parameter, the second
    group then empty; fused where `fused_adamw_applies`."""
    trained = [p for p in model.parameters() if p.requires_grad]
    decay_all = config.weight_decay_params == "all"
    groups = [
        {"params": [p for p in trained if decay_all or p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in trained if not (decay_all or p.dim() >= 2)], "weight_decay": 0.0},
    ]
    fused = True if fused_adamw_applies(trained) else None  # None: torch's default implementation
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), fused=fused)


def with_implementation_of(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> dict[str, Any]:
    """The saved optimizer state `saved` with `optimizer`'s implementation (fused, foreach) in its param groups,
    since loading a state dict otherwise restores the saved flags: a checkpoint written fused on CUDA resumes on
    the CPU without fusion, one written on the CPU resumes fused on CUDA (AdamW's loader then moves the step
    counters to the device, where the fused kernel keeps them)."""
    implementation = {key: optimizer.param_groups[0].get(key) for key in ("fused", "foreach")}
    return {**saved, "param_groups": [{**group, **implementation} for group in saved["param_groups"]]}


def learning_rate(step: int, config: TrainConfig) -> float:
    """LR of 0-based step `step`; a continued schedule (lr_schedule_offset) runs steps offset+1 ... offset+steps."""
    offset = config.lr_schedule_offset
    return config.lr * lr_multiplier(
        step + offset,
        warmup_steps=config.warmup_steps,
        total_steps=config.steps + offset,
        min_ratio=config.min_lr_ratio,
    )


def _local(tensor: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (FSDP2), else the tensor itself."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


class NonFiniteGuard:
    """A device-side record of non-finite losses or gradient norms: no host sync until `first_bad_step`."""

    def __init__(self, device: torch.device) -> None:
        self.seen = torch.zeros((), dtype=torch.bool, device=device)
        self.first_step = torch.full((), -1, dtype=torch.long, device=device)

    def observe(self, step: int, loss: torch.Tensor, grad_norm: torch.Tensor) -> torch.Tensor:
        """Record 1-based `step`; returns its finite flag (a device tensor)."""
        finite = torch.isfinite(loss) & torch.isfinite(grad_norm)
        self.first_step = torch.where(self.seen | finite, self.first_step, step)
        self.seen = torch.logical_or(self.seen, ~finite)
        return finite

    def first_bad_step(self, context: dist_utils.DistributedContext, current_step: int) -> int | None:
        """The first non-finite step, or None when every step so far was finite (one host sync; collective under
        torchrun, where another rank's bad step is reported as the current one)."""
        if dist_utils.all_reduce_mean(float(self.seen), context, self.seen.device) == 0:
            return None
        first = int(self.first_step)
        return first if first > 0 else current_step


class OptimizerStep:
    """Callable once per step: forward and backward over the micro-batches, clip, guard, AdamW."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: TrainConfig,
        *,
        context: dist_utils.DistributedContext,
        device: torch.device,
        precision: Precision,
    ) -> None:
        self.model, self.optimizer, self.config = model, optimizer, config
        self.context, self.device, self.precision = context, device, precision
        self.guard = NonFiniteGuard(device)

    def __call__(self, step: int, batch: tuple[torch.Tensor, torch.Tensor]) -> StepResult:
        """Train on `batch` (the global batch; this rank takes its rows) as 0-based step `step`."""
        lr = learning_rate(step, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = (to_device(dist_utils.local_rows(t, self.context), self.device) for t in batch)
        loss, lm_loss, aux = self._forward_backward(inputs, targets)
        clip = self.config.grad_clip if self.config.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: the global norm as a plain tensor
            grad_norm = grad_norm.full_tensor()
        finite = self.guard.observe(step + 1, loss, grad_norm)
        self._zero_gradients_unless(finite)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(lr=lr, loss=loss, lm_loss=lm_loss, grad_norm=grad_norm, aux=aux)

    def _forward_backward(
        self, inputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Mean loss, LM loss and auxiliary losses over the micro-batches; gradients accumulated (synced on the
        last micro-batch only)."""
        accumulation = self.config.grad_accum_steps
        loss_sum = lm_loss_sum = torch.zeros((), device=self.device)
        aux_sums: dict[str, torch.Tensor] = {}
        micro_batches = zip(inputs.chunk(accumulation), targets.chunk(accumulation), strict=True)
        for index, (micro_inputs, micro_targets) in enumerate(micro_batches):
            with dist_utils.gradient_sync(self.model, enabled=index == accumulation - 1):
                with self.precision.autocast(self.device):
                    output = self.model(micro_inputs, micro_targets, return_logits=False)  # the chunked loss
                (output.loss / accumulation).backward()
            loss_sum = loss_sum + output.loss.detach().float()
            lm_loss_sum = lm_loss_sum + output.lm_loss.detach().float()
            for name, value in output.aux_losses.items():
                aux_sums[name] = aux_sums.get(name, 0.0) + value.detach()
        aux = {name: value / accumulation for name, value in aux_sums.items()}
        return loss_sum / accumulation, lm_loss_sum / accumulation, aux

    @torch.no_grad()
    def _zero_gradients_unless(self, finite: torch.Tensor) -> None:
        """Gradients times 1 (a finite step: unchanged) or 0 with NaN and infinity removed (a non-finite step:
        AdamW then adds nothing non-finite to the weights or moments)."""
        for parameter in self.model.parameters():
            if parameter.grad is not None:
                grad = _local(parameter.grad)
                grad.nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0).mul_(finite.to(grad.dtype))
