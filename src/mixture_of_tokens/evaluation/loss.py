"""Mean held-out LM loss over fixed batches: the one loss evaluation behind training, `mot eval` and reports; for
the masked objective also the masked-token loss and accuracy over every scored position (`evaluate_masked_lm`).

Each batch is run `micro_batch` rows at a time (the trainer: its training micro-batch; `mot eval`: the checkpoint's),
rounded up to a multiple of the rows the model's layers couple in their present mode (`layers.coupled_rows`: MoT's
and Expert Choice's groups of consecutive examples, a capacity-bound Token Choice's routing group), so every row
meets the rows it met in the whole batch and the loss changes only by the order of float summation. The loss is the
training step's chunked loss (`return_logits=False`): float32 logits of a micro-batch never exist either.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ..data.masking import IGNORE_INDEX
from ..layers import coupled_rows
from ..runtime import distributed as dist_utils
from ..runtime.precision import FP32, Precision


def evaluation_rows(model: torch.nn.Module, batch: int, micro_batch: int | None) -> int:
    """Rows per forward when `model` evaluates a batch of `batch` rows `micro_batch` at a time (None: all at once):
    `micro_batch` rounded up to a multiple of the rows its layers couple, at most `batch`."""
    if micro_batch is None:
        return batch
    coupled = coupled_rows(model, batch)
    return min(batch, -(-micro_batch // coupled) * coupled)


@torch.no_grad()
def evaluate_loss(
    model: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    *,
    precision: Precision = FP32,
    context: dist_utils.DistributedContext | None = None,
    micro_batch: int | None = None,
) -> float:
    """Mean LM loss over fixed held-out batches (each rank scores its rows of every batch, `micro_batch` rows per
    forward: `evaluation_rows`). Masked-LM batches (labels with IGNORE_INDEX) are weighted by their scored positions:
    the mean over every masked position, as `evaluate_masked_lm` reports it."""
    context = context or dist_utils.DistributedContext()
    masked = any(bool((targets == IGNORE_INDEX).any()) for _, targets in batches)  # global batches: ranks agree
    was_training = model.training
    model.eval()
    losses, scored = [], []
    for inputs, targets in batches:
        inputs, targets = (dist_utils.local_rows(t, context) for t in (inputs, targets))
        rows = evaluation_rows(model, len(inputs), micro_batch)
        loss_sum = count = 0
        for micro_inputs, micro_targets in _micro_batches(inputs, targets, rows, device):
            with precision.autocast(device):
                lm_loss = model(micro_inputs, micro_targets, return_logits=False).lm_loss  # the chunked loss
            n_scored = (micro_targets != IGNORE_INDEX).sum()
            loss_sum, count = loss_sum + lm_loss.double() * n_scored, count + n_scored
        losses.append(float(loss_sum / count.clamp(min=1)))
        scored.append(int(count))
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
    micro_batch: int | None = None,
) -> tuple[float, float, int]:
    """(loss, accuracy, scored positions) of a masked LM over fixed held-out (inputs, labels) batches: the mean
    cross-entropy and the share of argmax predictions equal to the label, over every scored position of every
    batch (labels other than IGNORE_INDEX). The argmax needs the logits: those of one micro-batch at a time
    (`evaluation_rows`), in float32 (float64 for a float64 model) at its scored positions only."""
    context = context or dist_utils.DistributedContext()
    was_training = model.training
    model.eval()
    loss_sum = correct = scored = 0
    for inputs, labels in batches:
        inputs, labels = (dist_utils.local_rows(t, context) for t in (inputs, labels))
        rows = evaluation_rows(model, len(inputs), micro_batch)
        for micro_inputs, micro_labels in _micro_batches(inputs, labels, rows, device):
            with precision.autocast(device):
                logits_BSV = model(micro_inputs).logits
            keep_BS = micro_labels != IGNORE_INDEX
            loss_dtype = torch.promote_types(logits_BSV.dtype, torch.float32)  # as the chunked loss's
            logits_NV, labels_N = logits_BSV[keep_BS].to(loss_dtype), micro_labels[keep_BS]
            del logits_BSV
            loss_sum = loss_sum + torch.nn.functional.cross_entropy(logits_NV, labels_N, reduction="sum").double()
            correct = correct + (logits_NV.argmax(dim=-1) == labels_N).sum()
            scored = scored + keep_BS.sum()
    model.train(was_training)
    totals = (float(loss_sum), float(correct), float(scored))
    loss_sum, correct, scored = (dist_utils.all_reduce_mean(v, context, device) for v in totals)
    if scored == 0:
        raise ValueError("the held-out batches score no position (every label is IGNORE_INDEX); use more batches.")
    return loss_sum / scored, correct / scored, round(scored * context.world_size)


def _micro_batches(
    inputs: torch.Tensor, targets: torch.Tensor, rows: int, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`rows` rows of (inputs, targets) at a time, each part moved to `device` only when its turn comes."""
    for micro_inputs, micro_targets in zip(inputs.split(rows), targets.split(rows), strict=True):
        yield micro_inputs.to(device), micro_targets.to(device)
