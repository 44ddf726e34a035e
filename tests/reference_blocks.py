"""Plain-loop float64 references of the block options (docs/model-and-presets.md): RMSNorm, rotary positions,
grouped-query attention with optional per-head query/key norms, and the SwiGLU dense layer.

Deliberately slow and explicit: loops over sequences, positions, heads and keys; the only vectorised operation is
one vector-matrix product. Written from the formulas (and transformers' Llama / Qwen3 conventions: RoPE pairs
dimension i with i + head_width/2; query head h reads key/value head h // (heads / kv heads)).
"""

from __future__ import annotations

import math

import torch


def reference_rms_norm(v: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """v / sqrt(mean(v^2) + eps) * weight for one vector, in float64."""
    v = v.detach().double()
    mean_square = sum(float(c) ** 2 for c in v) / v.numel()
    out = v / math.sqrt(mean_square + eps)
    return out if weight is None else out * weight.detach().double()


def reference_rotate(v: torch.Tensor, position: int, base: float) -> torch.Tensor:
    """RoPE on one head vector: each pair (i, i + K/2) turned by the angle position * base^(-2i/K)."""
    width = v.numel()
    half = width // 2
    out = torch.zeros(width, dtype=torch.float64)
    for i in range(half):
        angle = position * base ** (-2.0 * i / width)
        a, b = float(v[i]), float(v[i + half])
        out[i] = a * math.cos(angle) - b * math.sin(angle)
        out[i + half] = b * math.cos(angle) + a * math.sin(angle)
    return out


def reference_attention(
    x: torch.Tensor,
    qkv_weight: torch.Tensor,
    out_weight: torch.Tensor,
    *,
    n_heads: int,
    n_kv_heads: int,
    rope_base: float | None = None,
    q_norm: torch.Tensor | None = None,
    k_norm: torch.Tensor | None = None,
    eps: float = 1e-5,
    start: int = 0,
) -> torch.Tensor:
    """Causal self-attention x[B, S, D] -> [B, S, D] in float64, one sequence, query, head and key at a time.

    qkv_weight [D + 2 * kv_heads * K, D] holds the query rows, then the key rows, then the value rows (K the head
    width D / n_heads). Per position: project, RMS-normalise each head's query and key (when q_norm / k_norm are
    given), rotate them by RoPE at position start + s (when rope_base is given); query head h attends to the keys
    and values of kv head h // (n_heads / n_kv_heads) at positions <= s with softmax(q.k / sqrt(K)).
    """
    x, qkv_weight, out_weight = x.double(), qkv_weight.detach().double(), out_weight.detach().double()
    batch, seq_len, dim = x.shape
    width = dim // n_heads
    per_kv = n_heads // n_kv_heads
    out = torch.zeros(batch, seq_len, dim, dtype=torch.float64)
    for b in range(batch):
        queries, keys, values = [], [], []
        for s in range(seq_len):
            projected = qkv_weight @ x[b, s]
            q_heads = [projected[h * width : (h + 1) * width] for h in range(n_heads)]
            k_heads = [projected[dim + j * width : dim + (j + 1) * width] for j in range(n_kv_heads)]
            offset = dim + n_kv_heads * width
            v_heads = [projected[offset + j * width : offset + (j + 1) * width] for j in range(n_kv_heads)]
            if q_norm is not None:
                q_heads = [reference_rms_norm(q, q_norm, eps) for q in q_heads]
                k_heads = [reference_rms_norm(k, k_norm, eps) for k in k_heads]
            if rope_base is not None:
                q_heads = [reference_rotate(q, start + s, rope_base) for q in q_heads]
                k_heads = [reference_rotate(k, start + s, rope_base) for k in k_heads]
            queries.append(q_heads)
            keys.append(k_heads)
            values.append(v_heads)
        for s in range(seq_len):
            heads_out = []
            for h in range(n_heads):
                j = h // per_kv
                scores = [float(queries[s][h] @ keys[t][j]) / math.sqrt(width) for t in range(s + 1)]
                top = max(scores)
                exps = [math.exp(score - top) for score in scores]
                total = sum(exps)
                mixed = torch.zeros(width, dtype=torch.float64)
                for t in range(s + 1):
                    mixed = mixed + exps[t] / total * values[t][j]
                heads_out.append(mixed)
            out[b, s] = out_weight @ torch.cat(heads_out)
    return out


def reference_swiglu_feed_forward(
    x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor
) -> torch.Tensor:
    """Llama's MLP token by token, no biases: (silu(x W_gate^T) * (x W_up^T)) W_down^T (nn.Linear layout)."""
    x = x.double()
    w_gate, w_up, w_down = w_gate.detach(), w_up.detach(), w_down.detach()
    batch, seq_len, _ = x.shape
    out = torch.zeros(batch, seq_len, w_down.shape[0], dtype=torch.float64)
    for b in range(batch):
        for s in range(seq_len):
            gate, up = w_gate.double() @ x[b, s], w_up.double() @ x[b, s]
            product = torch.tensor(
                [float(g) / (1.0 + math.exp(-float(g))) * float(u) for g, u in zip(gate, up)], dtype=torch.float64
            )
            out[b, s] = w_down.double() @ product
    return out
