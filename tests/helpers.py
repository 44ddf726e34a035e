"""Plain helpers shared by the test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from torch import nn

from mixture_of_tokens.layers import MixtureOfTokens


def mot_layers_of(model: nn.Module) -> list[MixtureOfTokens]:
    """The MoT layers of a model, in block order."""
    return [m for m in model.modules() if isinstance(m, MixtureOfTokens)]
