"""MoT's recomputing path (`mot_compute="recompute"`): merge, experts and emit one block of experts at a time, and the
mixed tokens recomputed in the backward pass instead of kept.

The plain path (`mot.merge_expert_emit`) writes the mixed tokens m [R, E, D] for the whole layer, and autograd keeps
them (the first expert GEMM's input) until the backward pass; their gradient is materialised at full size too. Per
token that is E/G x d values (8 x d for /16E/8, 16 x d for /32E/16: more than the rest of the layer).

This path computes the same sums over blocks of experts, each block's mixed tokens at most BLOCK_BYTES, and keeps
only x, the weights, the hidden activations h and the expert outputs y:

    forward, per block b of experts:   m_b = merge_b^T x;  h_b = act(m_b W1_b);  y_b = h_b W2_b;  dx += emit_b y_b
    backward, per block b:             m_b again from x and the merge weights (G multiply-adds per mixed value:
                                       G/H of the first expert GEMM's), then the gradients autograd would compute.

With SwiGLU experts (W1 [E, D, 2H]) the block keeps the [2H] projection instead of ReLU's output and recomputes
silu(gate) * up from it in the backward pass (2H values per mixed token instead of the plain path's 4H).

Activation memory falls by E/G x d values per token (`activation_values_per_token`); FLOPs rise by the recomputed
merge. Gradients accumulate over blocks in float32 when the compute dtype is lower. It is a memory option, not a
speed-up: on the 2-core CPU of docs/benchmarks.md it is slower than the plain path. Tests hold it to the plain
path, forward and gradients (`tests/layers/test_mot_recompute.py`).
"""

from __future__ import annotations

import torch

from .experts import activate, compute_dtype, expert_activation

BLOCK_BYTES = 8 * 2**20
"""Budget for one block's mixed tokens [R, experts in block, D]: 8 MiB (the other block buffers are no larger)."""


def experts_per_block(rows: int, n_experts: int, d_model: int, element_size: int) -> int:
    """The largest number of experts whose mixed tokens [rows, experts, D] fit in BLOCK_BYTES (at least 1)."""
    per_expert = rows * d_model * element_size
    return max(1, min(n_experts, BLOCK_BYTES // max(per_expert, 1)))


def recomputing_mix(
    x_RGD: torch.Tensor,
    merge_RGE: torch.Tensor,
    emit_RGE: torch.Tensor,
    w1_EDH: torch.Tensor,
    w2_EHD: torch.Tensor,
) -> torch.Tensor:
    """dx[r, g] = sum_e emit[r, g, e] relu(m[r, e] W1[e]) W2[e] with m[r, e] = sum_g merge[r, g, e] x[r, g]: the
    plain path's result [R, G, D], computed one block of experts at a time. All inputs share one dtype (the
    caller casts); `emit_RGE` may be `merge_RGE` itself.

    Under autocast everything runs in the autocast dtype (as the plain path's matmuls do), with autocast off
    inside, so the backward pass sees the dtypes the forward pass saved."""
    dtype = compute_dtype(x_RGD)
    inputs = [tensor.to(dtype) for tensor in (x_RGD, merge_RGE, emit_RGE, w1_EDH, w2_EHD)]
    with torch.autocast(x_RGD.device.type, enabled=False):
        return _BlockedMix.apply(*inputs)


def _activation_backward(kept_ERF: torch.Tensor, grad_hidden_ERH: torch.Tensor, activation: str) -> torch.Tensor:
    """The gradient of the first expert matmul's output from that of the activation's output. ReLU: `kept` is
    relu's output (relu(0) passes no gradient); SwiGLU: `kept` is the [2H] projection (gate, up), and
    d silu(g) / dg = s (1 + g (1 - s)) with s = sigmoid(g)."""
    if activation == "relu":
        return grad_hidden_ERH.masked_fill_(kept_ERF <= 0, 0)
    gate_ERH, up_ERH = kept_ERF.chunk(2, dim=-1)
    sigmoid_ERH = torch.sigmoid(gate_ERH)
    silu_grad_ERH = sigmoid_ERH * (1 + gate_ERH * (1 - sigmoid_ERH))
    return torch.cat([grad_hidden_ERH * up_ERH * silu_grad_ERH, grad_hidden_ERH * gate_ERH * sigmoid_ERH], dim=-1)


def _accumulator(like: torch.Tensor) -> torch.Tensor:
    """Zeros of `like`'s shape in at least float32: the running sum over expert blocks."""
    return torch.zeros(like.shape, dtype=torch.promote_types(like.dtype, torch.float32), device=like.device)


def _mixed(x_RGD: torch.Tensor, merge_RGE: torch.Tensor, block: slice) -> torch.Tensor:
    """Mixed tokens of one block of experts, as [E_b, R, D] (a strided view of the [R, E_b, D] product)."""
    return torch.bmm(merge_RGE[:, :, block].transpose(1, 2), x_RGD).transpose(0, 1)


class _BlockedMix(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_RGD, merge_RGE, emit_RGE, w1_EDH, w2_EHD):  # noqa: ANN001, ANN205 (autograd signature)
        n_rows, _, d_model = x_RGD.shape
        n_experts = w1_EDH.shape[0]
        step = experts_per_block(n_rows, n_experts, d_model, x_RGD.element_size())
        blocks = [slice(start, min(start + step, n_experts)) for start in range(0, n_experts, step)]
        activation = expert_activation(w1_EDH, w2_EHD)
        dx_RGD = _accumulator(x_RGD)
        hidden, outputs = [], []
        for block in blocks:
            mixed_ERD = _mixed(x_RGD, merge_RGE, block)
            projected_ERF = torch.bmm(mixed_ERD, w1_EDH[block])
            # ReLU keeps its in-place output; SwiGLU keeps the projection and recomputes its product when needed
            hidden_ERH = activate(projected_ERF, activation)
            out_ERD = torch.bmm(hidden_ERH, w2_EHD[block])
            dx_RGD += torch.bmm(emit_RGE[:, :, block], out_ERD.transpose(0, 1))
            hidden.append(hidden_ERH if activation == "relu" else projected_ERF)
            outputs.append(out_ERD)
        ctx.blocks, ctx.activation = blocks, activation
        ctx.save_for_backward(x_RGD, merge_RGE, emit_RGE, w1_EDH, w2_EHD, *hidden, *outputs)
        return dx_RGD.to(x_RGD.dtype)

    @staticmethod
    def backward(ctx, grad_RGD):  # noqa: ANN001, ANN205 (autograd signature)
        x_RGD, merge_RGE, emit_RGE, w1_EDH, w2_EHD, *saved = ctx.saved_tensors
        blocks = ctx.blocks
        hidden, outputs = saved[: len(blocks)], saved[len(blocks) :]
        grad_RGD = grad_RGD.to(x_RGD.dtype).contiguous()
        need_x, need_merge, need_emit, need_w1, need_w2 = ctx.needs_input_grad
        grad_x = _accumulator(x_RGD) if need_x else None
        grad_merge = torch.empty_like(merge_RGE) if need_merge else None
        grad_emit = torch.empty_like(emit_RGE) if need_emit else None
        grad_w1 = torch.empty_like(w1_EDH) if need_w1 else None
        grad_w2 = torch.empty_like(w2_EHD) if need_w2 else None
        for block, kept_ERF, out_ERD in zip(blocks, hidden, outputs):
            hidden_ERH = kept_ERF if ctx.activation == "relu" else activate(kept_ERF, ctx.activation)
            if need_emit:  # d emit[r, g, e] = <grad[r, g], y[r, e]>
                grad_emit[:, :, block] = torch.bmm(grad_RGD, out_ERD.permute(1, 2, 0))
            grad_out_ERD = torch.bmm(emit_RGE[:, :, block].transpose(1, 2), grad_RGD).transpose(0, 1)
            if need_w2:
                grad_w2[block] = torch.bmm(hidden_ERH.transpose(1, 2), grad_out_ERD)
            grad_hidden_ERH = torch.bmm(grad_out_ERD, w2_EHD[block].transpose(1, 2))
            grad_projected_ERF = _activation_backward(kept_ERF, grad_hidden_ERH, ctx.activation)
            if need_w1:
                mixed_ERD = _mixed(x_RGD, merge_RGE, block)  # recomputed, never stored
                grad_w1[block] = torch.bmm(mixed_ERD.transpose(1, 2), grad_projected_ERF)
            if need_x or need_merge:
                grad_mixed_RED = torch.bmm(grad_projected_ERF, w1_EDH[block].transpose(1, 2)).transpose(0, 1)
                if need_x:
                    grad_x += torch.bmm(merge_RGE[:, :, block], grad_mixed_RED)
                if need_merge:  # d merge[r, g, e] = <x[r, g], grad m[r, e]>
                    grad_merge[:, :, block] = torch.bmm(x_RGD, grad_mixed_RED.transpose(1, 2))
        if grad_x is not None:
            grad_x = grad_x.to(x_RGD.dtype)
        return grad_x, grad_merge, grad_emit, grad_w1, grad_w2
