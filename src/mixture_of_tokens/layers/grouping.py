"""Same-position groups across consecutive examples: the one grouping helper of every grouped layer.

A group is `group_size` tokens at the same sequence position taken from consecutive examples of the batch:
examples b = g*G ... g*G+G-1 form group g. Tokens never meet tokens at other positions, so grouped layers add
no future-token leakage.

MoT's within-sequence variant (masked language modelling only) groups G consecutive positions of one sequence
instead (`sequence_groups`): positions s = g*G ... g*G+G-1 of a sequence form its group g. Sequences never meet,
but a token meets later positions of its own sequence, so that grouping needs bidirectional attention.
"""

from __future__ import annotations

import torch


def _check_tiles(group_size: int, length: int, where: str, allowed_for: str) -> None:
    """Fail before any compute when `group_size` does not divide `length`, listing the sizes that would."""
    if group_size < 1:
        raise ValueError(f"group_size must be a positive integer, got {group_size}.")
    if length % group_size != 0:
        divisors = [g for g in range(1, length + 1) if length % g == 0]
        raise ValueError(
            f"group_size={group_size} must divide {where}: allowed group sizes for {allowed_for} are {divisors}."
        )


def check_group_size(batch_size: int, group_size: int) -> None:
    """Fail before any compute when the group size cannot tile the batch."""
    _check_tiles(group_size, batch_size, f"the batch size {batch_size}", "this batch")


def group_by_position(x_BSD: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B, S, D] -> [B/G, G, S, D] (a view: consecutive examples form a group)."""
    batch_size, seq_len, dim = x_BSD.shape
    check_group_size(batch_size, group_size)
    return x_BSD.view(batch_size // group_size, group_size, seq_len, dim)


def position_groups(x_BSD: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B, S, D] -> [B/G * S, G, D]: one row per (group, position) holding that position's G tokens.

    The row axis is what grouped layers batch over (merge/emit matmuls, per-group top-k, per-group capacity).
    This is a copy (the layer's one input copy); undo it with `from_position_groups`.
    """
    x_PGSD = group_by_position(x_BSD, group_size)
    n_groups, _, seq_len, dim = x_PGSD.shape
    return x_PGSD.transpose(1, 2).reshape(n_groups * seq_len, group_size, dim)


def from_position_groups(x_RGD: torch.Tensor, seq_len: int) -> torch.Tensor:
    """[B/G * S, G, D] -> [B, S, D], the inverse of `position_groups`."""
    n_rows, group_size, dim = x_RGD.shape
    n_groups = n_rows // seq_len
    return x_RGD.view(n_groups, seq_len, group_size, dim).transpose(1, 2).reshape(n_groups * group_size, seq_len, dim)


def check_sequence_length(seq_len: int, group_size: int) -> None:
    """Fail before any compute when the group size cannot tile the sequence (within-sequence groups)."""
    _check_tiles(group_size, seq_len, f"the sequence length {seq_len} for within-sequence groups", "this length")


def sequence_groups(x_BSD: torch.Tensor, group_size: int) -> torch.Tensor:
    """[B, S, D] -> [B * S/G, G, D]: one row per (sequence, group of G consecutive positions); a view when x is
    contiguous. Undo it with `from_sequence_groups`."""
    batch_size, seq_len, dim = x_BSD.shape
    check_sequence_length(seq_len, group_size)
    return x_BSD.reshape(batch_size * seq_len // group_size, group_size, dim)


def from_sequence_groups(x_RGD: torch.Tensor, batch_size: int) -> torch.Tensor:
    """[B * S/G, G, D] -> [B, S, D], the inverse of `sequence_groups`."""
    n_rows, group_size, dim = x_RGD.shape
    return x_RGD.reshape(batch_size, n_rows * group_size // batch_size, dim)
