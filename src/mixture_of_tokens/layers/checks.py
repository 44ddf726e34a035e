"""Setting checks and numeric helpers shared by the feed-forward layers: one sentence per bad setting."""

from __future__ import annotations

import torch


def check_positive_ints(**settings: object) -> None:
    """Each keyword must be a positive int (not a bool)."""
    for setting, value in settings.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{setting} must be a positive integer, got {value!r}.")


def check_positive(setting: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{setting} must be positive, got {value}.")


def check_non_negative(**settings: float) -> None:
    """Each keyword must be >= 0 (NaN is not)."""
    for setting, value in settings.items():
        if not value >= 0:
            raise ValueError(f"{setting} must be >= 0, got {value}.")


def check_choice(setting: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{setting}={value!r} is not supported; allowed values: {', '.join(allowed)}.")


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """Routing softmaxes and statistics in float32 for low-precision inputs; float64 stays float64."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))
