"""The paper's MoT naming ("/32E", "/32E/8") turned into layer sizes."""

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
