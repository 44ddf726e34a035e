"""Held-out loss and perplexity, and for MoT the same batches in its other evaluation modes (docs/method.md §1):
discrete (argmax) routing and other group sizes, each reported separately. A masked LM is scored on its masked
positions: masked-token loss and accuracy."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..config import ModelConfig
from ..layers import EvaluationMode as EvalMode
from ..layers import block_classes
from ..model import Transformer, mot_mode
from .loss import evaluate_loss, evaluate_masked_lm

__all__ = ["EvalMode", "LossResult", "eval_modes", "evaluate_modes"]


@dataclass
class LossResult:
    """Held-out loss in one mode; a masked LM's also has its accuracy, and n_tokens counts its masked positions."""

    mode: EvalMode
    loss: float
    n_tokens: int
    accuracy: float | None = None

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss) if self.loss < 700 else float("inf")

    def to_dict(self) -> dict[str, object]:
        result: dict[str, object] = {
            "mode": self.mode.name,
            **self.mode.settings(),
            "loss": self.loss,
            "perplexity": self.perplexity,
            "tokens": self.n_tokens,
        }
        if self.accuracy is not None:
            result["accuracy"] = self.accuracy
        return result


def eval_modes(config: ModelConfig, batch_size: int) -> list[EvalMode]:
    """As trained, plus the other modes the model's layer kinds offer (MoT: discrete routing, other group sizes)."""
    modes: list[EvalMode] = []
    for cls in dict.fromkeys(block_classes(config)):
        modes += cls.evaluation_modes(config, batch_size)
    return modes or [EvalMode("trained")]


@torch.no_grad()
def evaluate_modes(
    model: Transformer,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    modes: list[EvalMode],
    device: torch.device | str = "cpu",
    *,
    micro_batch: int | None = None,
) -> list[LossResult]:
    """Mean LM loss over the same fixed batches in each mode (token-weighted; the batches have equal sizes), run
    `micro_batch` rows at a time, rounded up in each mode to the rows it couples (`loss.evaluation_rows`; None: whole
    batches). A masked LM (batches of inputs and labels): loss and accuracy over the masked positions."""
    model.eval()
    results = []
    n_tokens = sum(targets.numel() for _, targets in batches)
    for mode in modes:
        with mot_mode(model, **mode.settings()):
            if model.config.objective == "masked":
                loss, accuracy, n_masked = evaluate_masked_lm(
                    model, batches, torch.device(device), micro_batch=micro_batch
                )
                results.append(LossResult(mode, loss, n_masked, accuracy))
            else:
                loss = evaluate_loss(model, batches, torch.device(device), micro_batch=micro_batch)
                results.append(LossResult(mode, loss, n_tokens))
    return results
