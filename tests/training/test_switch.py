"""Transition tuning inside one run: the in-place switch reuses the MoT parameter objects, so AdamW keeps their
moments, and equals the checkpoint conversion."""

from __future__ import annotations

import pytest
import torch
from helpers import build_model, tiny_model_config

from mixture_of_tokens import TrainConfig, Transformer
from mixture_of_tokens.layers import ExpertChoice, MixtureOfTokens, TokenChoice
from mixture_of_tokens.layers.conversion import convert_config, convert_weights
from mixture_of_tokens.training.switch import check_switch, switch_in_place, switched_copy

CONFIG = tiny_model_config(vocab_size=50, max_seq_len=8, d_model=16, d_ff=32, expert_size=32)


def trained_with_adamw(seed: int = 0) -> tuple[Transformer, torch.optim.AdamW, torch.Tensor]:
    model = build_model(CONFIG, seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}])
    ids = torch.randint(0, 50, (8, 8))
    for _ in range(2):
        model(ids, ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer, ids


@pytest.mark.parametrize(
    "target,layer_type,n_fresh", [("token-choice", TokenChoice, 0), ("expert-choice", ExpertChoice, 2)]
)
def test_switch_keeps_parameter_objects_and_their_adamw_moments(target, layer_type, n_fresh):
    model, optimizer, ids = trained_with_adamw()
    mot = model.blocks[1].ffn
    assert isinstance(mot, MixtureOfTokens)
    moments = {id(p): optimizer.state[p]["exp_avg"].clone() for p in (mot.controller, mot.w1, mot.w2)}
    n_before = sum(len(g["params"]) for g in optimizer.param_groups)

    expected = Transformer(convert_config(CONFIG, target))
    expected.load_state_dict(convert_weights(model.state_dict(), CONFIG, target))
    switch_in_place(model, optimizer, target)

    layer = model.blocks[1].ffn
    assert isinstance(layer, layer_type) and model.config.ffn == layer_type.kind
    assert layer.router is mot.controller and layer.w1 is mot.w1 and layer.w2 is mot.w2
    for parameter in (layer.router, layer.w1, layer.w2):
        assert torch.equal(optimizer.state[parameter]["exp_avg"], moments[id(parameter)])
    assert sum(len(g["params"]) for g in optimizer.param_groups) == n_before + n_fresh
    assert torch.equal(model(ids).logits, expected(ids).logits)
    # training goes on: every parameter of the switched model is in the optimizer
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert all(id(p) in in_optimizer for p in model.parameters())
    model(ids, ids).loss.backward()
    optimizer.step()


def test_switched_copy_leaves_the_model_alone():
    model, _, ids = trained_with_adamw()
    before = model(ids).logits
    copied = switched_copy(model, "token-choice")
    assert isinstance(copied.blocks[1].ffn, TokenChoice) and isinstance(model.blocks[1].ffn, MixtureOfTokens)
    assert torch.equal(model(ids).logits, before)
    assert not torch.equal(copied(ids).logits, before)  # normalised over experts now: the loss spikes


@pytest.mark.parametrize(
    "fields,match",
    [
        ({"switch_to": "token-choice", "switch_at": 10}, "switch_at=10 must be a step in 1..steps-1=9"),
        ({"switch_to": "token-choice", "switch_at": 0}, "switch_at=0 must be a step"),
        ({"switch_to": "expert-choice", "switch_at": 5}, None),
        ({"eval_also": "token-choice"}, None),
    ],
)
def test_switch_settings(fields, match):
    train = TrainConfig(steps=10, **fields)
    if match is None:
        check_switch(CONFIG, train)
    else:
        with pytest.raises(ValueError, match=match):
            check_switch(CONFIG, train)


@pytest.mark.parametrize("value", ["discrete-mot", "dense", "token_choice"])
def test_switch_targets_are_checked_by_the_config(value):
    with pytest.raises(ValueError, match=f"switch_to={value!r} is not supported; allowed values: '', token-choice"):
        TrainConfig(switch_to=value, switch_at=1)


def test_switch_needs_mot_layers_and_fsdp_is_refused():
    dense = tiny_model_config(vocab_size=50, max_seq_len=8, d_model=16, d_ff=32, ffn="dense")
    for fields in ({"switch_to": "token-choice", "switch_at": 5}, {"eval_also": "expert-choice"}):
        with pytest.raises(ValueError, match="no MoT layer"):
            check_switch(dense, TrainConfig(steps=10, **fields))
    with pytest.raises(ValueError, match="FSDP"):
        check_switch(
            CONFIG, TrainConfig(steps=10, switch_to="token-choice", switch_at=5), world_size=2, parallel="fsdp"
        )
    # a run resumed after its switch: the model is already Token Choice
    switched = convert_config(CONFIG, "token-choice")
    check_switch(switched, TrainConfig(steps=10, switch_to="token-choice", switch_at=5))
