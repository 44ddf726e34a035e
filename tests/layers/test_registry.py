"""The registry of feed-forward kinds: a fifth kind is one layer class plus one registry line, and every part of
the package that needs to know about kinds (config checks, model, batch checks, audit, evaluation policy, memory
estimate, counting) picks it up by asking the layer."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_model_config
from torch import nn

from mixture_of_tokens.audit import audit_layer_types, layer_suite
from mixture_of_tokens.config import ModelConfig, TrainConfig
from mixture_of_tokens.counting import count_model
from mixture_of_tokens.evaluation import is_batch_dependent, resolve_policy
from mixture_of_tokens.layers import FFN_REGISTRY, FeedForwardLayer, batch_multiple, register_kind
from mixture_of_tokens.model import Transformer
from mixture_of_tokens.training.loop import check_run_settings
from mixture_of_tokens.training.memory import block_values_per_token


class PairMean(FeedForwardLayer):
    """A toy kind: each token's update is a linear map of the mean of its same-position pair of examples."""

    kind = "pair_mean"

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, d_model, bias=False)

    @classmethod
    def from_config(cls, config: ModelConfig) -> PairMean:
        return cls(config.d_model)

    @classmethod
    def batch_multiple(cls, config: ModelConfig) -> int:
        return 2

    @classmethod
    def rows_couple_at_inference(cls, config: ModelConfig) -> bool:
        return True

    @classmethod
    def activation_values_per_token(cls, config: ModelConfig) -> float:
        return 1000.0

    @classmethod
    def audit_examples(cls, *, d_model: int, group_size: int, n_experts: int) -> dict[str, tuple[nn.Module, bool]]:
        return {cls.kind: (cls(d_model), True)}

    def forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        batch, seq_len, dim = x_BSD.shape
        mean_PSD = x_BSD.view(batch // 2, 2, seq_len, dim).mean(dim=1, keepdim=True)
        return self.proj(mean_PSD.expand(-1, 2, -1, -1).reshape(batch, seq_len, dim))

    def active_params_per_token(self) -> int:
        return self.proj.weight.numel()


@pytest.fixture
def toy_kind():
    register_kind(PairMean)  # the one registry line a new kind needs
    yield PairMean.kind
    del FFN_REGISTRY[PairMean.kind]


def toy_config(**overrides) -> ModelConfig:
    fields = dict(vocab_size=32, max_seq_len=8, d_model=8, d_ff=16, ffn="pair_mean", ffn_blocks="all")
    return tiny_model_config(**{**fields, **overrides})


def test_unknown_kind_is_refused_until_registered(toy_kind):
    del FFN_REGISTRY[toy_kind]
    with pytest.raises(ValueError, match="ffn='pair_mean' is not supported"):
        toy_config()
    register_kind(PairMean)
    assert toy_config().block_ffn_kinds() == ["pair_mean", "pair_mean"]


def test_a_registered_kind_trains_audits_and_is_estimated_without_other_changes(toy_kind):
    config = toy_config(ffn_blocks="second-half")
    model = Transformer(config)
    assert isinstance(model.blocks[1].ffn, PairMean) and not isinstance(model.blocks[0].ffn, PairMean)
    ids = torch.randint(0, 32, (4, 8))
    model(ids, ids).loss.backward()

    assert batch_multiple(config) == 2
    check_run_settings(config, TrainConfig(batch_size=4))
    with pytest.raises(ValueError, match="must divide the batch size 3"):
        check_run_settings(config, TrainConfig(batch_size=3))

    assert is_batch_dependent(config)
    assert resolve_policy(config).name == "protocol"

    dense_values = block_values_per_token(toy_config(ffn="dense"))
    dense_ffn = 8 + 16  # the dense layer keeps its input (d) and the hidden layer after ReLU (d_ff)
    assert block_values_per_token(config) == dense_values - dense_ffn + 1000.0

    counts = count_model(model)
    assert (
        counts.active_params_per_token
        == count_model(Transformer(toy_config(ffn="dense"))).active_params_per_token - (2 * 8 * 16) + 8 * 8
    )

    assert toy_kind in layer_suite()
    result = next(r for r in audit_layer_types() if r.name == toy_kind)
    assert not result.future_leak and result.coupling == "sequences 1"
