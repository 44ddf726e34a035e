"""How the layers' auxiliary losses combine across layers (ModelConfig.load_balance_reduce): sum or mean."""

from __future__ import annotations

import math

import pytest
import torch

from mixture_of_tokens.config import ModelConfig
from mixture_of_tokens.layers import TokenChoice
from mixture_of_tokens.model import Transformer

ALPHA, Z_WEIGHT, N_EXPERTS = 0.01, 1e-3, 4


def two_token_choice_layers(reduce: str) -> Transformer:
    """Three blocks, Token Choice in blocks 1 and 2 (block 0 is dense and records no aux loss)."""
    config = ModelConfig(
        vocab_size=40, max_seq_len=6, d_model=8, n_blocks=3, n_heads=2, d_ff=16, ffn="token_choice",
        ffn_blocks="1,2", n_experts=N_EXPERTS, expert_size=16, load_balance_weight=ALPHA, z_loss_weight=Z_WEIGHT,
        load_balance_reduce=reduce,
    )  # fmt: skip
    torch.manual_seed(0)
    return Transformer(config).double()


def zero_routers(model: Transformer) -> None:
    """Zero router weights: every router probability is 1/E and every logit 0, whatever the input."""
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, TokenChoice):
                layer.router.zero_()


@pytest.mark.parametrize("reduce,layers_counted", [("sum", 2), ("mean", 1)])
def test_hand_computed_aux_losses(reduce, layers_counted):
    """With uniform router probabilities each layer's load-balancing loss is alpha * E * sum_e (1/E) * f_e = alpha
    (the fractions f_e sum to 1 whichever experts win the ties) and its z-loss w_z * logsumexp(0, ..., 0)^2 =
    w_z * (log E)^2. Two Token Choice layers: sum gives twice that, mean gives it once."""
    model = two_token_choice_layers(reduce)
    zero_routers(model)
    ids = torch.randint(40, (4, 6))
    output = model(ids, ids)
    assert set(output.aux_losses) == {f"block{i}.{k}" for i in (1, 2) for k in ("load_balance", "router_z")}
    per_block = 1.0 / 2 if reduce == "mean" else 1.0
    z_loss = Z_WEIGHT * math.log(N_EXPERTS) ** 2
    for index in (1, 2):
        assert output.aux_losses[f"block{index}.load_balance"].item() == pytest.approx(ALPHA * per_block, abs=1e-15)
        assert output.aux_losses[f"block{index}.router_z"].item() == pytest.approx(z_loss * per_block, abs=1e-15)
    expected = output.lm_loss.item() + layers_counted * (ALPHA + z_loss)
    assert output.loss.item() == pytest.approx(expected, abs=1e-12)


def test_mean_is_the_average_of_what_the_layers_recorded():
    """With trained-looking routers the layers record different values; mean adds their average per name."""
    summed, averaged = two_token_choice_layers("sum"), two_token_choice_layers("mean")
    averaged.load_state_dict(summed.state_dict())
    ids = torch.randint(40, (4, 6))
    out_sum, out_mean = summed(ids, ids), averaged(ids, ids)
    layers = [m for m in averaged.modules() if isinstance(m, TokenChoice)]
    for name in ("load_balance", "router_z"):
        recorded = [layer.aux_losses[name].item() for layer in layers]
        assert recorded[0] != recorded[1]
        assert sum(out_mean.aux_losses[f"block{i}.{name}"].item() for i in (1, 2)) == pytest.approx(
            sum(recorded) / 2, abs=1e-15
        )
        assert sum(out_sum.aux_losses[f"block{i}.{name}"].item() for i in (1, 2)) == pytest.approx(
            sum(recorded), abs=1e-15
        )
    aux_sum = sum(v.item() for v in out_sum.aux_losses.values())
    assert out_mean.lm_loss.item() == out_sum.lm_loss.item()
    assert out_mean.loss.item() == pytest.approx(out_sum.lm_loss.item() + aux_sum / 2, abs=1e-12)


def test_mean_gradient_is_half_the_sum_gradient_for_two_layers():
    """What the reduction is for: with mean, two Token Choice layers' routers are pulled half as hard."""
    models = {reduce: two_token_choice_layers(reduce) for reduce in ("sum", "mean")}
    models["mean"].load_state_dict(models["sum"].state_dict())
    ids = torch.randint(40, (4, 6))
    grads = {}
    for reduce, model in models.items():
        sum(model(ids, ids).aux_losses.values()).backward()
        grads[reduce] = model.blocks[1].ffn.router.grad
    torch.testing.assert_close(grads["mean"], grads["sum"] / 2, atol=1e-15, rtol=1e-12)


def test_invalid_reduction():
    with pytest.raises(ValueError, match="load_balance_reduce='max' is not supported; allowed values: sum, mean"):
        ModelConfig(load_balance_reduce="max")
