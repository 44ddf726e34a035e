"""MoT options beyond the method's defaults, each against a float64 plain-loop reference (tests/reference.py):
exact fixed temperature, separate merge and emit controllers, random grouping, temperature freeze."""

from __future__ import annotations

import math
import os

import pytest
import torch
from corpus import write_corpus
from helpers import assert_close, mot_layers_of, random_float64_layer, tiny_model_config, tiny_train_config
from reference import reference_mot, reference_mot_options

from mixture_of_tokens.checkpoint import load_weights_into
from mixture_of_tokens.config import ModelConfig
from mixture_of_tokens.layers import MixtureOfTokens
from mixture_of_tokens.layers.conversion import convert_config, convert_weights
from mixture_of_tokens.model import Transformer

TOL = 1e-12
"""Tighter than the shared float64 tolerance: the options must not cost exactness (item: exact fixed tau)."""


def make_layer(d=6, e=4, h=5, g=4, *, seed=0, **kwargs) -> MixtureOfTokens:
    """A float64 layer with random weights and logits of a few units (router std 3)."""
    return random_float64_layer(
        MixtureOfTokens, d, n_experts=e, expert_size=h, group_size=g, seed=seed, router_std=3.0, **kwargs
    )


# ----------------------------------------------------------------------------------------------- exact fixed tau


@pytest.mark.parametrize("emit", ["group", "experts"])
@pytest.mark.parametrize("tau", [2.0, 0.3, 1.7])
def test_fixed_temperature_is_exact_in_float64(emit, tau):
    layer = make_layer(seed=1, temperature=tau, emit=emit)
    assert layer.temperature.item() == tau and layer.log_temperature is None
    assert not [name for name, _ in layer.named_parameters() if "temperature" in name]
    assert "log_temperature" not in layer.state_dict()
    x = torch.randn(8, 3, 6, dtype=torch.float64)
    w = (layer.controller.detach(), layer.w1.detach(), layer.w2.detach())
    expected = reference_mot(x, *w, 4, tau, "softmax", emit)
    assert_close(layer(x), expected, tol=TOL)
    # what a float32 log buffer cast to float64 gave: exp(log tau) off by ~1e-9 relative, visible at this tolerance
    rounded = math.exp(float(torch.tensor(math.log(tau), dtype=torch.float32)))
    assert rounded != tau
    assert (reference_mot(x, *w, 4, rounded, "softmax", emit) - expected).abs().max() > TOL


def test_learnable_temperature_keeps_its_log_parameter():
    layer = make_layer(seed=2, temperature=2.0, learnable_temperature="per_expert")
    assert isinstance(layer.log_temperature, torch.nn.Parameter) and layer.log_temperature.shape == (4,)
    # the log parameter is created in float32 and then cast: close to 2, not exact (it is learned anyway)
    torch.testing.assert_close(layer.temperature, torch.full((4,), 2.0, dtype=torch.float64))
    x = torch.randn(8, 2, 6, dtype=torch.float64)
    w = (layer.controller.detach(), layer.w1.detach(), layer.w2.detach())
    assert_close(layer(x), reference_mot(x, *w, 4, layer.temperature.detach()))


def test_fixed_temperature_in_low_precision():
    layer = make_layer(seed=3, temperature=2.0).float()
    x = torch.randn(8, 2, 6)
    expected = make_layer(seed=3, temperature=2.0)(x.double())
    torch.testing.assert_close(layer(x).double(), expected, atol=1e-5, rtol=1e-4)


# ----------------------------------------------------------------------------------------------- the reference


def weights_of(layer: MixtureOfTokens) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return layer.controller.detach(), layer.w1.detach(), layer.w2.detach()


def reference_of(layer: MixtureOfTokens, x: torch.Tensor, rows=None) -> torch.Tensor:
    emit_controller = None if layer.emit_controller is None else layer.emit_controller.detach()
    return reference_mot_options(
        x, *weights_of(layer), layer.group_size, layer.temperature.detach(), layer.routing, layer.emit,
        emit_controller=emit_controller, rows=rows, discrete_rule=layer.discrete_rule,
    )  # fmt: skip


@pytest.mark.parametrize("routing", ["softmax", "uniform", "discrete"])
@pytest.mark.parametrize("emit", ["group", "experts"])
def test_options_reference_without_options_is_the_method_reference(routing, emit):
    layer = make_layer(seed=4, temperature=0.7, routing=routing, emit=emit)
    x = torch.randn(8, 3, 6, dtype=torch.float64)
    expected = reference_mot(x, *weights_of(layer), 4, 0.7, routing, emit)
    assert_close(reference_of(layer, x), expected, tol=TOL)
    assert_close(reference_of(layer, x, rows=list(range(8))), expected, tol=TOL)


# ----------------------------------------------------------------------------------------------- discrete rule


def _tied_input_and_layer(emit: str, separate: bool, learnable: str, rule: str):
    """A layer and an input with forced ties: rows 0 and 1 (one group) are the same tokens, so every expert's top
    token of that group may be tied; experts 0 and 1 have the same controller column(s) and tau, so every token's
    top expert may be tied."""
    layer = make_layer(
        seed=13, routing="discrete", emit=emit, separate_emit_controller=separate, learnable_temperature=learnable,
        discrete_rule=rule,
    )  # fmt: skip
    with torch.no_grad():
        controllers = [layer.controller] + ([layer.emit_controller] if separate else [])
        for controller in controllers:
            controller.normal_(0.0, 3.0 / math.sqrt(6))
            controller[:, 1] = controller[:, 0]
        if layer.log_temperature is not None:
            layer.log_temperature.uniform_(-1.0, 1.0)
            if layer.log_temperature.dim():
                layer.log_temperature[1] = layer.log_temperature[0]
    x = torch.randn(8, 3, 6, dtype=torch.float64)
    x[1] = x[0]
    return layer, x


@pytest.mark.parametrize("emit", ["group", "experts"])
@pytest.mark.parametrize("separate", [False, True])
@pytest.mark.parametrize("learnable", ["none", "per_expert"])
def test_discrete_rule_authors_sums_tied_tokens_and_emits_one_hot_over_experts(emit, separate, learnable):
    authors, x = _tied_input_and_layer(emit, separate, learnable, "authors")
    project, _ = _tied_input_and_layer(emit, separate, learnable, "project")
    assert_close(authors(x), reference_of(authors, x), tol=TOL)
    assert_close(project(x), reference_of(project, x), tol=TOL)
    assert (authors(x) - project(x)).abs().max() > 1e-3  # the forced ties make the two rules differ
    merge_RGE = authors._last_routing[1]
    assert set(merge_RGE.sum(dim=1).unique().tolist()) >= {2.0}  # the tied pair both get weight 1


def test_discrete_rule_changes_nothing_without_ties_under_emit_over_the_group():
    authors = make_layer(seed=14, routing="discrete", discrete_rule="authors")
    project = make_layer(seed=14, routing="discrete")
    x = torch.randn(8, 3, 6, dtype=torch.float64)
    assert torch.equal(authors(x), project(x))
    authors.routing = project.routing = "softmax"  # the rule is for discrete routing only
    assert torch.equal(authors(x), project(x))


def test_discrete_rule_is_a_model_setting_refused_in_one_sentence():
    config = ModelConfig(ffn="mot", mot_discrete_rule="authors")
    assert Transformer(config).blocks[0].ffn.discrete_rule == "authors"
    with pytest.raises(
        ValueError, match=r"mot_discrete_rule='fair' is not supported; allowed values: project, authors"
    ):
        ModelConfig(ffn="mot", mot_discrete_rule="fair")


# ----------------------------------------------------------------------------------------------- emit controller

TEMPERATURES = [(1.0, "none"), (0.5, "none"), (1.0, "per_expert")]


@pytest.mark.parametrize("routing", ["softmax", "uniform", "discrete"])
@pytest.mark.parametrize("emit", ["group", "experts"])
@pytest.mark.parametrize("tau,learnable", TEMPERATURES)
def test_separate_emit_controller_matches_reference(routing, emit, tau, learnable):
    layer = make_layer(
        seed=5, temperature=tau, learnable_temperature=learnable, routing=routing, emit=emit,
        separate_emit_controller=True,
    )  # fmt: skip
    with torch.no_grad():
        layer.emit_controller.normal_(0.0, 3.0 / math.sqrt(6))
        if layer.log_temperature is not None:
            layer.log_temperature.uniform_(-1.0, 1.0)
    x = torch.randn(8, 3, 6, dtype=torch.float64)
    assert_close(layer(x), reference_of(layer, x), tol=TOL)


def test_separate_emit_controller_is_a_second_controller():
    shared = make_layer(seed=6)
    separate = make_layer(seed=6, separate_emit_controller=True)
    assert shared.emit_controller is None
    assert {name for name, _ in separate.named_parameters()} == {"controller", "emit_controller", "w1", "w2"}
    x = torch.randn(8, 2, 6, dtype=torch.float64)
    with torch.no_grad():
        for name in ("controller", "w1", "w2"):
            getattr(separate, name).copy_(getattr(shared, name))
        separate.emit_controller.copy_(shared.controller)
    assert_close(separate(x), shared(x), tol=TOL)  # W_e = W_c: the method
    with torch.no_grad():
        separate.emit_controller.normal_(0.0, 3.0 / math.sqrt(6))
    assert (separate(x) - shared(x)).abs().max() > 1e-6
    (separate(x) * torch.randn_like(x)).sum().backward()
    for name, parameter in separate.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_separate_emit_controller_costs_one_more_controller():
    shared, separate = make_layer(seed=7), make_layer(seed=7, separate_emit_controller=True)
    assert separate.active_params_per_token() - shared.active_params_per_token() == 6 * 4
    assert separate.flops_per_token() - shared.flops_per_token() == 2 * 6 * 4
    torch.manual_seed(0)
    big = MixtureOfTokens(256, n_experts=64, expert_size=8, group_size=2, separate_emit_controller=True)
    assert big.emit_controller.std().item() == pytest.approx(math.sqrt(0.1 / 256), rel=0.03)


# ----------------------------------------------------------------------------------------------- random grouping


def test_random_grouping_in_training_matches_reference_with_the_drawn_permutation():
    layer = make_layer(seed=8, g=2, grouping="random", separate_emit_controller=True).train()
    x = torch.randn(8, 3, 6, dtype=torch.float64)
    torch.manual_seed(11)
    rows = torch.randperm(8)
    assert not torch.equal(rows, torch.arange(8))
    torch.manual_seed(11)
    out = layer(x)
    assert_close(out, reference_of(layer, x, rows=rows), tol=TOL)
    assert (out - reference_of(layer, x)).abs().max() > 1e-6  # not the consecutive groups


def test_random_grouping_draws_a_fresh_permutation_per_forward_reproducibly():
    layer = make_layer(seed=9, g=2, grouping="random").train()
    x = torch.randn(16, 2, 6, dtype=torch.float64)
    torch.manual_seed(3)
    first, second = layer(x), layer(x)
    assert (first - second).abs().max() > 1e-6
    torch.manual_seed(3)
    assert torch.equal(layer(x), first) and torch.equal(layer(x), second)


def test_random_grouping_at_evaluation_is_consecutive_and_draws_nothing():
    layer = make_layer(seed=10, g=2, grouping="random").eval()
    x = torch.randn(8, 2, 6, dtype=torch.float64)
    state = torch.get_rng_state()
    out = layer(x)
    assert torch.equal(torch.get_rng_state(), state)
    assert_close(out, reference_of(layer, x), tol=TOL)


@pytest.mark.parametrize("grouping", ["consecutive", "random"])
@pytest.mark.parametrize("separate", [False, True])
@pytest.mark.parametrize("example,position", [(5, 2), (0, 0), (7, 3)])
def test_perturbation_moves_only_its_own_group_at_its_own_position(grouping, separate, example, position):
    g, batch, seq_len = 2, 8, 4
    layer = make_layer(seed=12, g=g, grouping=grouping, separate_emit_controller=separate).train()
    x = torch.randn(batch, seq_len, 6, dtype=torch.float64)
    x2 = x.clone()
    x2[example, position] += 3.0
    torch.manual_seed(5)
    rows = torch.randperm(batch) if grouping == "random" else torch.arange(batch)
    torch.manual_seed(5)
    before = layer(x)
    torch.manual_seed(5)
    moved = (layer(x2) - before).abs().amax(dim=-1)  # [B, S]
    slot = int((rows == example).nonzero())
    group = rows[slot // g * g : slot // g * g + g]  # the permuted group holding the example
    allowed = torch.zeros(batch, seq_len, dtype=torch.bool)
    allowed[group, position] = True
    assert moved[~allowed].max() <= 1e-14
    assert (moved[allowed] > 1e-8).all()


def test_random_grouping_gradcheck():
    layer = make_layer(d=3, e=2, h=3, g=2, seed=13, grouping="random", separate_emit_controller=True)
    names = [name for name, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters())
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)

    def fn(x, *tensors):
        torch.manual_seed(0)  # the same permutation at every evaluation
        return torch.func.functional_call(layer, dict(zip(names, tensors, strict=True)), (x,))

    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


# ----------------------------------------------------------------------------------------------- temperature freeze


def test_temperature_freeze_holds_a_learnable_temperature_for_n_steps():
    layer = make_layer(seed=14, learnable_temperature="per_expert", temperature_freeze_steps=3)
    initial = layer.log_temperature.detach().clone()
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.05)
    x = torch.randn(8, 2, 6, dtype=torch.float64)
    target = torch.randn(8, 2, 6, dtype=torch.float64)
    for step in range(6):
        layer.on_train_step(step, 6)
        frozen = step < 3
        assert layer.log_temperature.requires_grad != frozen
        controller = layer.controller.detach().clone()
        out = layer(x)
        if frozen:  # the plain-loop reference at the initial temperature
            assert_close(out, reference_mot(x, *weights_of(layer), 4, initial.exp()))
        ((out - target) ** 2).sum().backward()
        assert (layer.log_temperature.grad is None) == frozen
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        assert torch.equal(layer.log_temperature.detach(), initial) == frozen
        assert not torch.equal(layer.controller.detach(), controller)  # everything else trains from step 0
    assert len(optimizer.state[layer.log_temperature]) > 0  # AdamW state exists only since the thaw
    assert int(optimizer.state[layer.log_temperature]["step"]) == 3


def test_temperature_freeze_settings():
    assert not make_layer(learnable_temperature="scalar").may_leave_parameters_unused()
    assert make_layer(learnable_temperature="scalar", temperature_freeze_steps=2).may_leave_parameters_unused()
    assert make_layer(routing="uniform").may_leave_parameters_unused()
    layer = make_layer(learnable_temperature="scalar")
    layer.on_train_step(0, 4)
    assert layer.log_temperature.requires_grad  # no freeze: nothing changes


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"temperature_freeze_steps": 3}, "temperature_freeze_steps=3 needs a learnable temperature"),
        ({"temperature_freeze_steps": -1, "learnable_temperature": "scalar"}, "non-negative integer, got -1"),
        ({"grouping": "shuffled"}, "grouping='shuffled' is not supported; allowed values: consecutive, random"),
    ],
)
def test_invalid_option_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixtureOfTokens(4, n_experts=2, expert_size=3, group_size=2, **kwargs)
    config_names = {"grouping": "mot_grouping", "learnable_temperature": "mot_learnable_temperature"}
    with pytest.raises(ValueError, match=message.replace("grouping=", "mot_grouping=")):
        ModelConfig(ffn="mot", **{config_names.get(k, k): v for k, v in kwargs.items()})


# ----------------------------------------------------------------------------------------------- in a model


def options_config(**overrides) -> ModelConfig:
    """The tiny trainer model (MoT in block 1) with every option on: emit controller, random grouping, a learnable
    temperature frozen for 2 steps."""
    fields = dict(
        group_size=2, mot_separate_emit_controller=True, mot_grouping="random", mot_learnable_temperature="scalar",
        temperature_freeze_steps=2,
    )  # fmt: skip
    return tiny_model_config(**{**fields, **overrides})


def test_model_config_wires_the_options_and_the_step_hook():
    model = Transformer(options_config())
    (layer,) = mot_layers_of(model)
    assert layer.emit_controller is not None and layer.grouping == "random" and layer.temperature_freeze_steps == 2
    assert "blocks.1.ffn.emit_controller" in model.state_dict()
    model.on_train_step(0, 4)
    assert not layer.log_temperature.requires_grad
    model.on_train_step(2, 4)
    assert layer.log_temperature.requires_grad
    defaults = Transformer(options_config(mot_separate_emit_controller=False, mot_grouping="consecutive"))
    (plain,) = mot_layers_of(defaults)
    assert plain.emit_controller is None and plain.grouping == "consecutive"


@pytest.mark.parametrize("target", ["token-choice", "expert-choice"])
def test_conversion_leaves_out_tensors_the_target_has_no_use_for(target):
    config = options_config()
    model = Transformer(config)
    converted_config = convert_config(config, target)
    weights = convert_weights(model.state_dict(), config, target)
    assert not [name for name in weights if "emit_controller" in name or "temperature" in name]
    converted = Transformer(converted_config)
    load_weights_into(converted, weights)  # every name fits
    torch.testing.assert_close(converted.blocks[1].ffn.router, model.blocks[1].ffn.controller, atol=0, rtol=0)


def test_the_trainer_reports_every_step_to_the_layers(tmp_path, monkeypatch, cache_dir):
    """A 3-step run with temperature_freeze_steps=2: the loop calls the hook before steps 0, 1, 2; the temperature
    stays bit-identical through the two frozen steps and moves in the third."""
    from mixture_of_tokens.checkpoint import load_model
    from mixture_of_tokens.training.loop import train

    corpus = write_corpus(tmp_path / "corpus", n_documents=10)
    seen: list[tuple[int, torch.Tensor]] = []
    hook = MixtureOfTokens.on_train_step

    def spy(self, step, steps):
        assert steps == 3
        seen.append((step, self.log_temperature.detach().clone()))
        hook(self, step, steps)

    monkeypatch.setattr(MixtureOfTokens, "on_train_step", spy)
    train_config = tiny_train_config(
        f"text:{corpus}", tmp_path / "run", steps=3, lr=0.05, warmup_steps=0, eval_every=3, threads=1
    )
    train(options_config(), train_config, run_name="freeze", progress=False)
    assert [step for step, _ in seen] == [0, 1, 2]
    assert torch.equal(seen[0][1], seen[1][1]) and torch.equal(seen[1][1], seen[2][1])
    trained, _, _ = load_model(tmp_path / "run")
    assert not torch.equal(trained.blocks[1].ffn.log_temperature.detach(), seen[2][1])


def _ddp_worker(rank: int, world_size: int, port: int, results) -> None:
    import torch.distributed as dist

    from mixture_of_tokens.runtime.distributed import DistributedContext, wrap_model

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        torch.manual_seed(0)
        model = Transformer(options_config())
        wrapped = wrap_model(model, DistributedContext(rank, world_size, rank), "ddp", torch.device("cpu"))
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
        temperatures = []
        for step in range(4):
            model.on_train_step(step, 4)
            ids = torch.randint(300, (4, 8), generator=torch.Generator().manual_seed(10 * step + rank))
            wrapped(ids, ids).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            temperatures.append(float(model.blocks[1].ffn.log_temperature))
        results[rank] = temperatures
    finally:
        dist.destroy_process_group()


def test_data_parallel_wrapper_is_told_about_unused_parameters():
    """The model answers for its layers (`wrap_model` passes it to DDP's find_unused_parameters)."""
    assert Transformer(options_config()).may_leave_parameters_unused()
    assert not Transformer(options_config(temperature_freeze_steps=0)).may_leave_parameters_unused()
    assert not Transformer(options_config(ffn="dense", temperature_freeze_steps=0)).may_leave_parameters_unused()


@pytest.mark.slow
def test_temperature_freeze_under_ddp():
    """DDP finds the frozen temperature without gradient (find_unused_parameters, asked of the layers) instead of
    waiting for it; both ranks keep it fixed for two steps, then train it identically."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.start_processes(_ddp_worker, args=(2, port, results), nprocs=2, join=True, start_method="fork")
    first, second = results[0], results[1]
    assert first == second
    assert first[0] == first[1] == 0.0  # log tau of tau = 1, untouched by the two frozen steps
    assert first[2] != 0.0 and first[3] != first[2]
