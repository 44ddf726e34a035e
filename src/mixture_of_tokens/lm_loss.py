"""The training loss without the logits of the whole batch: the head matmul and the cross-entropy taken a chunk of
tokens at a time, the gradients of the hidden states and of the head weight computed chunk by chunk.

`chunked_lm_loss_sum` equals `F.cross_entropy(hidden @ weight.T, targets, reduction="sum", ignore_index=-100)`
on the full logits (tests/training/test_throughput.py checks the loss and both gradients in float64 and float32); the
model uses it when the trainer asks for the loss only (`Transformer(..., return_logits=False)`).
"""

from __future__ import annotations

import torch

from .data.masking import IGNORE_INDEX
from .layers.experts import compute_dtype

LOSS_CHUNK_TOKENS = 1024
"""Tokens per chunk of the training loss: at GPT-2's V = 50257 one chunk's float32 logits take 1024 * V * 4 B = 206 MB
(the peak of the loss, besides a copy in the compute dtype under bf16)."""


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum over the scored tokens of cross_entropy(hidden @ weight.T, targets), `chunk_tokens` rows at a time.

    Per chunk: the logits in the compute dtype (the matmul), then in float32 (float64 for a float64 model), their
    log-sum-exp and target logit; when gradients are needed, also softmax - one-hot (zero on unscored rows) and from
    it the chunk's rows of d(hidden) and its part of d(weight), accumulated in float32. The gradients are computed
    in the forward (no second head matmul) and scaled by the incoming gradient in backward.
    """

    @staticmethod
    def forward(
        ctx,
        hidden_ND: torch.Tensor,
        weight_VD: torch.Tensor,
        targets_N: torch.Tensor,
        matmul_dtype: torch.dtype,
        chunk_tokens: int,
        needs_grad: bool,
    ) -> torch.Tensor:
        accumulate_dtype = torch.promote_types(matmul_dtype, torch.float32)
        with torch.autocast(hidden_ND.device.type, enabled=False):  # dtypes chosen here, not by autocast
            weight_VD_c = weight_VD.to(matmul_dtype)
            loss_sum = torch.zeros((), dtype=accumulate_dtype, device=hidden_ND.device)
            if needs_grad:
                grad_hidden_ND = torch.empty(hidden_ND.shape, dtype=matmul_dtype, device=hidden_ND.device)
                grad_weight_VD = torch.zeros(weight_VD.shape, dtype=accumulate_dtype, device=weight_VD.device)
            for start in range(0, hidden_ND.shape[0], chunk_tokens):
                rows = slice(start, start + chunk_tokens)
                chunk_ND = hidden_ND[rows].to(matmul_dtype)  # from here on N counts this chunk's tokens
                logits_NV = (chunk_ND @ weight_VD_c.T).to(accumulate_dtype)
                scored_N = targets_N[rows] != IGNORE_INDEX
                target_N1 = torch.where(scored_N, targets_N[rows], 0)[:, None]
                target_logit_N = logits_NV.gather(1, target_N1)[:, 0]
                max_N = logits_NV.amax(dim=1)
                probs_NV = logits_NV.sub_(max_N[:, None]).exp_()  # in place: one float32 [N, V] buffer
                total_N = probs_NV.sum(dim=1)
                loss_N = total_N.log() + max_N - target_logit_N
                loss_sum = loss_sum + torch.where(scored_N, loss_N, 0).sum()
                if needs_grad:  # d loss_N / d logits = softmax - one-hot at the target; zero where nothing is scored
                    probs_NV.div_(total_N[:, None]).scatter_add_(1, target_N1, torch.full_like(max_N, -1)[:, None])
                    grad_logits_NV = probs_NV.masked_fill_(~scored_N[:, None], 0).to(matmul_dtype)
                    grad_hidden_ND[rows] = grad_logits_NV @ weight_VD_c
                    if grad_weight_VD.dtype == matmul_dtype:
                        grad_weight_VD.addmm_(grad_logits_NV.T, chunk_ND)
                    else:
                        grad_weight_VD += grad_logits_NV.T @ chunk_ND
                    del grad_logits_NV
                del logits_NV, probs_NV  # free this chunk's [N, V] buffers before the next chunk's matmul
        if needs_grad:
            ctx.save_for_backward(grad_hidden_ND, grad_weight_VD)
            ctx.dtypes = hidden_ND.dtype, weight_VD.dtype
        return loss_sum

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden_ND, grad_weight_VD = ctx.saved_tensors
        hidden_dtype, weight_dtype = ctx.dtypes
        needs_hidden, needs_weight = ctx.needs_input_grad[:2]
        # one rounding each: the product is taken in float32 (opmath) and rounded to the input's dtype
        grad_hidden = torch.mul(grad_hidden_ND, grad_loss).to(hidden_dtype) if needs_hidden else None
        grad_weight = torch.mul(grad_weight_VD, grad_loss).to(weight_dtype) if needs_weight else None
        return grad_hidden, grad_weight, None, None, None, None


def chunked_lm_loss_sum(
    hidden_ND: torch.Tensor, weight_VD: torch.Tensor, targets_N: torch.Tensor, *, chunk_tokens: int = LOSS_CHUNK_TOKENS
) -> torch.Tensor:
    """sum over tokens whose target is not IGNORE_INDEX of cross_entropy(hidden @ weight.T, target), equal to
    `F.cross_entropy(..., reduction="sum")` on the full logits without ever holding more than `chunk_tokens` rows of
    them. The matmul runs in the autocast dtype when autocast is on (as `nn.Linear` would), else in the inputs'."""
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be a positive integer, got {chunk_tokens!r}.")
    dtype = compute_dtype(hidden_ND, weight_VD)
    needs_grad = torch.is_grad_enabled() and (hidden_ND.requires_grad or weight_VD.requires_grad)
    return _ChunkedLinearCrossEntropy.apply(hidden_ND, weight_VD, targets_N, dtype, chunk_tokens, needs_grad)


__all__ = ["LOSS_CHUNK_TOKENS", "chunked_lm_loss_sum"]
