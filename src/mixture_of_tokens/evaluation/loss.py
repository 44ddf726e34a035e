"""Mean held-out LM loss over fixed batches: the one loss evaluation behind training, `mot eval` and reports."""

from __future__ import annotations

import torch

from ..runtime import distributed as dist_utils
from ..runtime.precision import FP32, Precision


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    precision: Precision = FP32,
    context: dist_utils.DistributedContext | None = None,
) -> float:
    """Mean LM loss over fixed held-out batches (each rank scores its rows of every batch)."""
    context = context or dist_utils.DistributedContext()
    was_training = model.training
    model.eval()
    losses = []
    for inputs, targets in batches:
        inputs, targets = (dist_utils.local_rows(t, context).to(device) for t in (inputs, targets))
        with precision.autocast(device):
            losses.append(model(inputs, targets).lm_loss.item())
    model.train(was_training)
    return dist_utils.all_reduce_mean(sum(losses) / len(losses), context, device)
