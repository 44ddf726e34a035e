"""The paper's MoT naming ("/32E", "/32E/8") turned into layer sizes, and the SwiGLU width that matches a ReLU
layer's FLOPs."""

from __future__ import annotations

import re
from dataclasses import dataclass

_NAME = re.compile(r"^(?:MoT[-\w]*)?/(\d+)E(?:/(\d+))?$")


@dataclass(frozen=True)
class MoTSizing:
    """Group size, number of experts and expert width of one MoT layer."""

    group_size: int
    n_experts: int
    expert_size: int


def mot_sizing(name: str, d_ff: int) -> MoTSizing:
    """Parse "/nE" or "/nE/k" (optionally prefixed, e.g. "MoT-Medium/32E/8").

    "/nE" is group size n with n experts of full width d_ff; "/nE/k" splits each expert k ways:
    n*k experts of width d_ff/k. The total expert width E*h = G*d_ff, so the experts cost one dense FF per token.
    """
    match = _NAME.match(name.strip())
    if match is None:
        raise ValueError(f"MoT size name {name!r} is not of the form '/nE' or '/nE/k' (e.g. '/32E', '/32E/8').")
    group_size = int(match.group(1))
    granularity = int(match.group(2) or 1)
    if group_size < 1 or granularity < 1:
        raise ValueError(f"MoT size name {name!r}: n and k must be positive integers.")
    if d_ff % granularity != 0:
        raise ValueError(f"MoT size name {name!r}: k={granularity} must divide d_ff={d_ff}.")
    return MoTSizing(group_size=group_size, n_experts=group_size * granularity, expert_size=d_ff // granularity)


SWIGLU_WIDTH_MULTIPLE = 8
"""SwiGLU widths are rounded to a multiple of 8 (aligned rows for the grouped GEMM in every dtype)."""


def swiglu_width(relu_width: int) -> int:
    """The hidden width of a SwiGLU layer with the FLOPs and parameters of a ReLU layer `relu_width` wide: SwiGLU
    has three D x H matrices to ReLU's two, so H = 2/3 of the ReLU width, rounded to the nearest multiple of 8
    (at least 8): 512 -> 344, 2048 -> 1368, 3072 -> 2048 (docs/method.md)."""
    if not isinstance(relu_width, int) or relu_width < 1:
        raise ValueError(f"relu_width must be a positive integer, got {relu_width!r}.")
    return max(SWIGLU_WIDTH_MULTIPLE, SWIGLU_WIDTH_MULTIPLE * round(2 * relu_width / 3 / SWIGLU_WIDTH_MULTIPLE))


def feed_forward_width(d_model: int, activation: str = "relu") -> int:
    """The dense feed-forward width d_ff of a d_model-wide block: 4 d_model for ReLU (the paper), its
    FLOP-matched `swiglu_width` for SwiGLU."""
    return swiglu_width(4 * d_model) if activation == "swiglu" else 4 * d_model
