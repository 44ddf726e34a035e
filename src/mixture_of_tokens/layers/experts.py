"""The expert MLPs of every sparse layer (Mixture of Tokens, Token Choice, Expert Choice), and how Token / Expert
Choice choose between the two ways of running them (`expert_dispatch`).

Each of E experts is relu(x @ W1[e]) @ W2[e] without biases (docs/method.md §1), W1 [E, D, H], W2 [E, H, D];
with `ffn_activation` "swiglu" it is (silu(x @ W1g[e]) * (x @ W1u[e])) @ W2[e], the gate and up projections fused
into one W1 [E, D, 2H] (columns 0..H-1 the gate, H..2H-1 the up projection: transformers' `gate_up_proj` [E, 2H, D]
transposed). The form is read off the shapes (W1 holds H or 2H columns for W2's H rows), so the two can never
disagree. There is no Python loop over experts:
    padded: two batched matmuls over the capacity slots C the routing fills ([E, C, D]; MoT's mixed tokens, Token
        Choice's capacity-padded slots, Expert Choice's picked tokens).
    grouped: the A token-expert assignments sorted by expert as one [A, D] tensor and two grouped GEMMs
        (`torch._grouped_mm`) whose groups are the experts' row counts: no padding rows, nothing dropped is
        computed.
"""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_choice
from .init import DEFAULT_INIT_SCALE, scaled_trunc_normal_

FFN_ACTIVATIONS: tuple[str, ...] = ("relu", "swiglu")
"""The feed-forward activations (ModelConfig.ffn_activation): ReLU (the paper) or SwiGLU (Llama, Mixtral, Qwen)."""

EXPERT_DISPATCHES: tuple[str, ...] = ("auto", "grouped", "padded")
"""How Token / Expert Choice run their experts (ModelConfig.expert_dispatch)."""

GROUPED_DTYPES: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)
"""The dtypes torch._grouped_mm multiplies."""


def expert_activation(w1_EDF: torch.Tensor, w2_EHD: torch.Tensor) -> str:
    """The experts' form: "relu" when W1 has H columns for W2's H rows, "swiglu" when it has 2H (gate, up)."""
    first, hidden = w1_EDF.shape[-1], w2_EHD.shape[-2]
    if first == hidden:
        return "relu"
    if first == 2 * hidden:
        return "swiglu"
    raise ValueError(
        f"expert weights W1 [.., {first}] and W2 [{hidden}, ..] are neither ReLU (H, H) nor SwiGLU (2H, H)."
    )


def activate(hidden_F: torch.Tensor, activation: str) -> torch.Tensor:
    """The expert's (or dense layer's) nonlinearity on the first projection's output: relu (in place: the next
    matmul's backward needs its input, not relu's), or silu(gate) * up for the [.., F = 2H] SwiGLU projection."""
    if activation == "relu":
        return hidden_F.relu_()
    gate_H, up_H = hidden_F.chunk(2, dim=-1)
    return torch.nn.functional.silu(gate_H) * up_H


def expert_matrices(activation: str) -> int:
    """Weight matrices of D x H per expert (or dense layer): 2 for ReLU, 3 for SwiGLU (gate, up, down)."""
    return 3 if activation == "swiglu" else 2


def kept_hidden_values(activation: str, expert_size: int) -> int:
    """Values one expert application keeps for backward between its two matmuls: ReLU's in-place output (H);
    SwiGLU's [2H] projection (silu's input and the product's up), silu's output and the product (4H)."""
    return 4 * expert_size if activation == "swiglu" else expert_size


def expert_mlp(x_ECD: torch.Tensor, w1_EDH: torch.Tensor, w2_EHD: torch.Tensor) -> torch.Tensor:
    """relu(x[e] @ W1[e]) @ W2[e] for every expert e (SwiGLU when W1 is [E, D, 2H]): [E, C, D] -> [E, C, D].

    `x_ECD` may be a strided view (e.g. [C, E, D] transposed): bmm reads it without a copy. The weights are cast
    to the input's dtype. ReLU runs in place: bmm's backward needs its inputs, not its output.
    """
    activation = expert_activation(w1_EDH, w2_EHD)
    hidden_ECH = activate(torch.bmm(x_ECD, w1_EDH.to(x_ECD.dtype)), activation)
    return torch.bmm(hidden_ECH, w2_EHD.to(hidden_ECH.dtype))


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward hands on a contiguous gradient: grouped_mm's backward refuses the stride-0
    gradient that e.g. `.sum().backward()` sends."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


def compute_dtype(x: torch.Tensor, *others: torch.Tensor) -> torch.dtype:
    """The dtype a matmul of x (and `others`) runs in, as autocast would choose it: autocast's when it is on for
    x's device, else the promotion of the operands' dtypes. For the paths that pick their dtype themselves
    (torch._grouped_mm is not autocast; custom autograd functions run with autocast off inside)."""
    device_type = x.device.type
    if x.is_floating_point() and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    dtype = x.dtype
    for other in others:
        dtype = torch.promote_types(dtype, other.dtype)
    return dtype


def grouped_expert_mlp(
    x_AD: torch.Tensor, count_E: torch.Tensor, w1_EDH: torch.Tensor, w2_EHD: torch.Tensor
) -> torch.Tensor:
    """relu(x[a] @ W1[e]) @ W2[e] (or SwiGLU) for rows sorted by expert, count_E[e] rows of expert e: [A, D] -> [A, D].

    Two grouped GEMMs with int32 end offsets cumsum(count_E); an expert with no row is skipped. Runs in
    `compute_dtype(x_AD)`; `grouped_mm_problem` says whether it can run at all.
    """
    dtype = compute_dtype(x_AD)
    offsets_E = count_E.cumsum(0).to(torch.int32)  # cumsum(dtype=int32) came out int64 compiled (torch 2.13)
    activation = expert_activation(w1_EDH, w2_EHD)
    hidden_AH = activate(torch._grouped_mm(x_AD.to(dtype), w1_EDH.to(dtype), offs=offsets_E), activation)
    return _ContiguousGrad.apply(torch._grouped_mm(hidden_AH, w2_EHD.to(dtype), offs=offsets_E))


def _device_problem(device: torch.device) -> str | None:
    if device.type == "cpu":
        version = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
        return None if version >= (2, 9) else f"torch {torch.__version__} has no CPU kernel (2.9 or later has)"
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        return None if capability >= (8, 0) else f"the GPU's compute capability {capability} is below (8, 0)"
    return f"the device is {device.type}, not cpu or cuda"


def grouped_mm_problem(x: torch.Tensor, w1_EDH: torch.Tensor, w2_EHD: torch.Tensor) -> str | None:
    """Why torch._grouped_mm cannot run the experts on input `x`, or None when it can: it needs a float32,
    bfloat16 or float16 compute dtype (bfloat16 only inside torch.compile), a CPU (torch >= 2.9) or CUDA (compute
    capability >= 8.0) device, and rows of D and H values that are multiples of 16 bytes."""
    if not hasattr(torch, "_grouped_mm"):
        return f"torch {torch.__version__} has no torch._grouped_mm"
    dtype = compute_dtype(x)
    if dtype not in GROUPED_DTYPES:
        return f"the compute dtype is {dtype}, not float32, bfloat16 or float16"
    if dtype != torch.bfloat16 and torch.compiler.is_compiling():
        return f"under torch.compile torch._grouped_mm takes bfloat16 only (its meta kernel), not {dtype}"
    problem = _device_problem(x.device)
    if problem is not None:
        return problem
    itemsize = torch.empty((), dtype=dtype).element_size()
    d_model, expert_size = w1_EDH.shape[1], w2_EHD.shape[1]
    if (d_model * itemsize) % 16 or (expert_size * itemsize) % 16:
        return f"rows of d_model={d_model} or expert_size={expert_size} {dtype} values are not multiples of 16 bytes"
    for w in (w1_EDH, w2_EHD):
        if w.dtype == dtype and any(stride != 1 and (stride * itemsize) % 16 for stride in w.stride()):
            return f"the expert weights' strides {w.stride()} are not multiples of 16 bytes"
    return None


def use_grouped_dispatch(expert_dispatch: str, x: torch.Tensor, w1_EDH: torch.Tensor, w2_EHD: torch.Tensor) -> bool:
    """Whether a Token / Expert Choice forward on `x` runs its experts grouped. "padded": no; "auto": on CUDA
    when `grouped_mm_problem` finds nothing, else no (silently); "grouped": yes, and a ValueError naming the
    reason when torch._grouped_mm cannot run here."""
    check_choice("expert_dispatch", expert_dispatch, EXPERT_DISPATCHES)
    if expert_dispatch == "padded":
        return False
    problem = grouped_mm_problem(x, w1_EDH, w2_EHD)
    if expert_dispatch == "auto":
        return x.device.type == "cuda" and problem is None
    if problem is not None:
        raise ValueError(
            f"expert_dispatch='grouped' cannot run here: {problem}; it needs torch._grouped_mm with a float32, "
            "bfloat16 or float16 compute dtype (bfloat16 under torch.compile) on CPU (torch >= 2.9) or CUDA "
            "(compute capability >= 8.0) and d_model and expert_size rows of a multiple of 16 bytes; use "
            "expert_dispatch='auto' or 'padded'."
        )
    return True


def grouped_expert_update(
    x_ND: torch.Tensor,
    token_A: torch.Tensor,
    gate_A: torch.Tensor,
    count_E: torch.Tensor,
    w1_EDH: torch.Tensor,
    w2_EHD: torch.Tensor,
) -> torch.Tensor:
    """dx[n] = sum over assignments a with token_A[a] = n of gate_A[a] * expert_e(a)(x[n]): [N, D] -> [N, D].

    The assignments come sorted by expert, count_E[e] of expert e: their rows are gathered into one [A, D]
    tensor, run through `grouped_expert_mlp`, scaled by the gates and added back with `index_add_`.
    """
    out_AD = grouped_expert_mlp(x_ND.index_select(0, token_A), count_E, w1_EDH, w2_EHD)
    y_AD = out_AD * gate_A[:, None].to(out_AD.dtype)
    return x_ND.new_zeros(x_ND.shape).index_add_(0, token_A, y_AD.to(x_ND.dtype))


def new_expert_weights(
    n_experts: int, d_model: int, expert_size: int, activation: str = "relu"
) -> tuple[nn.Parameter, nn.Parameter]:
    """Uninitialised W1 [E, D, H] (SwiGLU: [E, D, 2H], gate then up) and W2 [E, H, D]; fill them with
    `init_expert_weights_`."""
    check_choice("ffn_activation", activation, FFN_ACTIVATIONS)
    first = 2 * expert_size if activation == "swiglu" else expert_size
    return (
        nn.Parameter(torch.empty(n_experts, d_model, first)),
        nn.Parameter(torch.empty(n_experts, expert_size, d_model)),
    )


def init_expert_weights_(w1_EDH: torch.Tensor, w2_EHD: torch.Tensor, scale: float = DEFAULT_INIT_SCALE) -> None:
    """docs/method.md §1 init: truncated normal, std sqrt(scale / fan_in), fan-in D for W1 (both SwiGLU halves)
    and H for W2."""
    scaled_trunc_normal_(w1_EDH, fan_in=w1_EDH.shape[1], scale=scale)
    scaled_trunc_normal_(w2_EHD, fan_in=w2_EHD.shape[1], scale=scale)
