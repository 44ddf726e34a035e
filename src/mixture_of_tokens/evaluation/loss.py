"""Mean held-out LM loss over fixed batches: the one loss evaluation behind training, `mot eval` and reports; for
the masked objective also the masked-token loss and accuracy over every scored position (`evaluate_masked_lm`)."""

from __future__ import annotations

import torch

from ..data.masking import IGNORE_INDEX
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
    """Mean LM loss over fixed held-out batches (each rank scores its rows of every batch). Masked-LM batches
    (labels with IGNORE_INDEX) are weighted by their scored positions: the mean over every masked position, as
    `evaluate_masked_lm` reports it."""
    context = context or dist_utils.DistributedContext()
    masked = any(bool((targets == IGNORE_INDEX).any()) for _, targets in batches)  # global batches: ranks agree
    was_training = model.training
    model.eval()
    losses, scored = [], []
    for inputs, targets in batches:
        inputs, targets = (dist_utils.local_rows(t, context).to(device) for t in (inputs, targets))
        with precision.autocast(device):
            losses.append(model(inputs, targets).lm_loss.item())
        if masked:
            scored.append(int((targets != IGNORE_INDEX).sum()))
    model.train(was_training)
    if not masked:
        return dist_utils.all_reduce_mean(sum(losses) / len(losses), context, device)
    weighted = sum(loss * n for loss, n in zip(losses, scored, strict=True))
    total = dist_utils.all_reduce_mean(float(sum(scored)), context, device)
    return dist_utils.all_reduce_mean(weighted, context, device) / max(total, 1e-30)


@torch.no_grad()
def evaluate_masked_lm(
    model: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    precision: Precision = FP32,
    context: dist_utils.DistributedContext | None = None,
) -> tuple[float, float, int]:
    """(loss, accuracy, scored positions) of a masked LM over fixed held-out (inputs, labels) batches: the mean
    cross-entropy and the share of argmax predictions equal to the label, over every scored position of every
    batch (labels other than IGNORE_INDEX)."""
    context = context or dist_utils.DistributedContext()
    was_training = model.training
    model.eval()
    loss_sum = correct = scored = 0.0
    for inputs, labels in batches:
        inputs, labels = (dist_utils.local_rows(t, context).to(device) for t in (inputs, labels))
        with precision.autocast(device):
            logits_BSV = model(inputs).logits
        keep_BS = labels != IGNORE_INDEX
        logits_NV, labels_N = logits_BSV[keep_BS].float(), labels[keep_BS]
        loss_sum += float(torch.nn.functional.cross_entropy(logits_NV, labels_N, reduction="sum"))
        correct += float((logits_NV.argmax(dim=-1) == labels_N).sum())
        scored += float(keep_BS.sum())
    model.train(was_training)
    loss_sum, correct, scored = (dist_utils.all_reduce_mean(v, context, device) for v in (loss_sum, correct, scored))
    if scored == 0:
        raise ValueError("the held-out batches score no position (every label is IGNORE_INDEX); use more batches.")
    return loss_sum / scored, correct / scored, round(scored * context.world_size)
