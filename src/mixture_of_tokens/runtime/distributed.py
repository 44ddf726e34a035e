"""Data parallelism applied from outside the model: torchrun environment, DDP or FSDP2, rank-local batches.

Every rank draws the same global batch (the sampler is deterministic in seed and step) and keeps its contiguous
slice of rows, so MoT groups (consecutive examples) are the same as in a single-process run whenever the group
size divides the per-rank micro-batch; the averaged gradient equals the single-process gradient.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

if TYPE_CHECKING:
    from ..model import Transformer


PARALLEL_MODES: tuple[str, ...] = ("ddp", "fsdp")
"""How a model is wrapped under torchrun: DDP, or FSDP2 (`fully_shard`)."""


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); a single process needs nothing."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return DistributedContext()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def shutdown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def micro_batch_size(global_batch: int, context: DistributedContext, accumulation: int) -> int:
    """Rows per rank per forward; fails with one sentence when the global batch does not split evenly."""
    parts = context.world_size * accumulation
    if global_batch % parts != 0:
        raise ValueError(
            f"batch_size={global_batch} must be divisible by world size x grad_accum_steps = "
            f"{context.world_size} x {accumulation} = {parts}."
        )
    return global_batch // parts


def local_rows(tensor: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """This rank's contiguous slice of a global batch."""
    rows = tensor.shape[0] // context.world_size
    return tensor[context.rank * rows : (context.rank + 1) * rows]


def wrap_model(model: Transformer, context: DistributedContext, mode: str, device: torch.device) -> nn.Module:
    """DDP, or FSDP2 (`fully_shard` per block, then the root); unchanged when single-process. DDP looks for
    parameters without gradient when the model says a step may leave some (`may_leave_parameters_unused`)."""
    if mode not in PARALLEL_MODES:
        raise ValueError(f"parallel={mode!r} is not supported; allowed values: {', '.join(PARALLEL_MODES)}.")
    if not context.enabled:
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(
            model,
            device_ids=[context.local_rank] if device.type == "cuda" else None,
            find_unused_parameters=model.may_leave_parameters_unused(),
        )
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block)
    fully_shard(model)
    return model


@contextlib.contextmanager
def gradient_sync(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on accumulation micro-steps (DDP `no_sync`, FSDP2 `set_requires_gradient_sync`)."""
    if enabled:
        yield
    elif hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    elif hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    else:
        yield


def all_reduce_mean(value: float, context: DistributedContext, device: torch.device) -> float:
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size


def full_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Unsharded model and optimizer state keyed by parameter name, on CPU, whatever the wrapping (none, DDP,
    FSDP2), so a checkpoint written by N ranks resumes on M ranks. Collective under FSDP: call on every rank."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_full_state_dicts(
    model: nn.Module, optimizer: torch.optim.Optimizer, model_state: dict[str, Any], optimizer_state: dict[str, Any]
) -> None:
    """Inverse of `full_state_dicts` (every rank passes the full state)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(
        model,
        optimizer,
        model_state_dict=model_state,
        optim_state_dict=optimizer_state,
        options=StateDictOptions(full_state_dict=True),
    )


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()
