"""An annealed MoT temperature (`mot_temperature_schedule` cosine | geometric): the schedule's shape, the layer at a
scheduled tau against the float64 plain-loop reference, one sentence per bad setting (ModelConfig and layer), a
run that resumes bit for bit mid-anneal and logs its tau, and a trained model that loads, converts and exports at
the final tau."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import (
    assert_close,
    gradcheck_layer,
    mot_layers_of,
    random_float64_layer,
    tiny_model_config,
    tiny_train_config,
)
from reference import reference_mot

from mixture_of_tokens import load_model
from mixture_of_tokens.checkpoint import WEIGHTS_FILE, read_config, read_weights
from mixture_of_tokens.config import ModelConfig
from mixture_of_tokens.layers import MixtureOfTokens
from mixture_of_tokens.layers.conversion import convert_config
from mixture_of_tokens.layers.mot_options import scheduled_temperature
from mixture_of_tokens.model import Transformer
from mixture_of_tokens.training import guards, loop
from mixture_of_tokens.training.loop import train
from mixture_of_tokens.training.metrics import read_metrics
from mixture_of_tokens.training.plan import plan_run

TAU0, TAU1 = 2.0, 0.25
SCHEDULES = ["cosine", "geometric"]


def tau_at(step: int, schedule: str, *, anneal_steps: int = 0, run_steps: int = 11, initial=TAU0, final=TAU1):
    return scheduled_temperature(
        step, schedule=schedule, initial=initial, final=final, anneal_steps=anneal_steps, run_steps=run_steps
    )


# ----------------------------------------------------------------------------------------------- the schedule


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("initial,final", [(TAU0, TAU1), (0.7, 0.3), (0.5, 3.0)])
def test_schedule_runs_from_tau0_to_tau1_monotonically_and_stays(schedule, initial, final):
    taus = [tau_at(step, schedule, run_steps=11, initial=initial, final=final) for step in range(15)]
    assert taus[0] == initial and taus[10] == final  # exactly: step 0 and step T - 1
    assert all(tau == final for tau in taus[10:])
    steps = list(zip(taus[:10], taus[1:11], strict=True))
    assert all((b < a) if final < initial else (b > a) for a, b in steps)


def test_midpoints_are_the_mean_and_the_geometric_mean():
    assert tau_at(5, "cosine", run_steps=11) == pytest.approx((TAU0 + TAU1) / 2, rel=1e-14)
    assert tau_at(5, "geometric", run_steps=11) == pytest.approx(math.sqrt(TAU0 * TAU1), rel=1e-14)
    assert tau_at(3, "constant", run_steps=11) == TAU0


@pytest.mark.parametrize("schedule", SCHEDULES)
def test_anneal_steps_zero_is_the_whole_run_and_a_shorter_anneal_then_holds(schedule):
    for step in range(12):
        assert tau_at(step, schedule, anneal_steps=0, run_steps=11) == tau_at(
            step, schedule, anneal_steps=11, run_steps=1000
        )
    assert tau_at(3, schedule, anneal_steps=4, run_steps=100) == TAU1
    assert tau_at(1, schedule, anneal_steps=4, run_steps=100) == tau_at(1, schedule, anneal_steps=0, run_steps=4)
    assert tau_at(0, schedule, run_steps=1) == TAU0 and tau_at(1, schedule, run_steps=1) == TAU1


# ----------------------------------------------------------------------------------------------- the layer


def scheduled_layer(schedule="cosine", *, d=6, e=4, h=5, g=4, seed=0, **kwargs) -> MixtureOfTokens:
    """A float64 layer with random weights and logits of a few units, tau annealed from 2 to 0.25."""
    fields = dict(temperature=TAU0, temperature_schedule=schedule, final_temperature=TAU1, **kwargs)
    return random_float64_layer(
        MixtureOfTokens, d, n_experts=e, expert_size=h, group_size=g, seed=seed, router_std=3.0, **fields
    )


@pytest.mark.parametrize("emit", ["group", "experts"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_layer_at_a_scheduled_tau_matches_the_reference(schedule, emit):
    layer = scheduled_layer(schedule, seed=1, emit=emit)
    assert layer.fixed_temperature == TAU1  # built at the tau a trained model ends with
    layer.on_train_step(3, 8)
    tau = tau_at(3, schedule, run_steps=8)
    assert layer.fixed_temperature == tau and TAU1 < tau < TAU0
    x = torch.randn(8, 3, 6, dtype=torch.float64)
    weights = (layer.controller.detach(), layer.w1.detach(), layer.w2.detach())
    out = layer(x)
    assert_close(out, reference_mot(x, *weights, 4, tau, "softmax", emit), tol=1e-12)
    assert (out - reference_mot(x, *weights, 4, TAU1, "softmax", emit)).abs().max() > 1e-6  # tau matters here
    assert float(layer.stats["temperature_mean"]) == pytest.approx(tau, rel=1e-6)


def test_gradcheck_at_a_scheduled_tau():
    layer = scheduled_layer("geometric", d=3, e=2, h=3, g=2, seed=2)
    layer.on_train_step(2, 6)
    assert gradcheck_layer(layer, torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True))


def test_a_shorter_anneal_holds_tau1_and_the_model_passes_the_run_length():
    layer = scheduled_layer("geometric", anneal_steps=4)
    for step, expected in ((0, TAU0), (3, TAU1), (50, TAU1)):
        layer.on_train_step(step, 100)
        assert layer.fixed_temperature == expected
    model = Transformer(tiny_model_config(mot_temperature=TAU0, mot_temperature_schedule="cosine",
                                          mot_temperature_final=TAU1))  # fmt: skip
    (block,) = mot_layers_of(model)
    assert (block.temperature_schedule, block.final_temperature, block.anneal_steps) == ("cosine", TAU1, 0)
    model.on_train_step(4, 9)
    assert block.fixed_temperature == tau_at(4, "cosine", run_steps=9) == pytest.approx((TAU0 + TAU1) / 2)
    assert "temperature_schedule=cosine (2.0 -> 0.25 over all steps)" in repr(block)
    assert "temperature_schedule" not in repr(MixtureOfTokens(4, n_experts=2, expert_size=3, group_size=2))


def test_a_constant_temperature_is_untouched_by_the_hook():
    layer = random_float64_layer(MixtureOfTokens, 6, n_experts=4, expert_size=5, group_size=4, temperature=0.7)
    layer.on_train_step(5, 10)
    assert layer.fixed_temperature == 0.7
    layer(torch.randn(8, 2, 6, dtype=torch.float64))
    assert "temperature_mean" not in layer.stats


# ----------------------------------------------------------------------------------------------- refusals

SCHEDULED = {"temperature_schedule": "cosine", "final_temperature": 0.5}
REFUSALS = [  # layer keyword arguments, the setting the sentence must name (the layer's spelling)
    ({"temperature_schedule": "linear"}, "temperature_schedule", "allowed values: constant, cosine, geometric"),
    ({**SCHEDULED, "routing": "uniform"}, "routing", "allowed value is constant"),
    ({**SCHEDULED, "routing": "discrete"}, "routing", "allowed value is constant"),
    ({**SCHEDULED, "learnable_temperature": "scalar"}, "learnable_temperature", "none"),
    ({**SCHEDULED, "learnable_temperature": "per_expert"}, "learnable_temperature", "none"),
    ({**SCHEDULED, "final_temperature": 0.0}, "final_temperature", "positive finite"),
    ({**SCHEDULED, "final_temperature": -1.0}, "final_temperature", "positive finite"),
    ({**SCHEDULED, "final_temperature": math.inf}, "final_temperature", "positive finite"),
    ({**SCHEDULED, "final_temperature": math.nan}, "final_temperature", "positive finite"),
    ({"final_temperature": 0.5}, "final_temperature", "needs a schedule"),
    ({**SCHEDULED, "anneal_steps": -1}, "anneal_steps", "non-negative integer"),
    ({**SCHEDULED, "anneal_steps": 2.5}, "anneal_steps", "non-negative integer"),
]
CONFIG_NAMES = {
    "temperature_schedule": "mot_temperature_schedule",
    "final_temperature": "mot_temperature_final",
    "anneal_steps": "mot_temperature_anneal_steps",
    "routing": "mot_routing",
    "learnable_temperature": "mot_learnable_temperature",
}


@pytest.mark.parametrize("kwargs,setting,allowed", REFUSALS)
def test_bad_schedule_settings_are_one_sentence_from_the_layer_and_the_config(kwargs, setting, allowed):
    with pytest.raises(ValueError, match=allowed) as layer_error:
        MixtureOfTokens(4, n_experts=2, expert_size=3, group_size=2, **kwargs)
    assert setting in str(layer_error.value) and "mot_" not in str(layer_error.value)
    with pytest.raises(ValueError, match=allowed) as config_error:
        ModelConfig(ffn="mot", **{CONFIG_NAMES[name]: value for name, value in kwargs.items()})
    assert CONFIG_NAMES[setting] in str(config_error.value)


# ----------------------------------------------------------------------------------------------- in a run

RUN_SCHEDULE = dict(mot_temperature=TAU0, mot_temperature_schedule="geometric", mot_temperature_final=TAU1)
TEMPERATURE_KEY = "routing.block1.temperature_mean"


def scheduled_run(corpus: dict, out_dir, **overrides):
    """8 steps of the tiny model, tau annealed geometrically from 2 to 0.25, checkpoints every 4 steps."""
    fields = dict(steps=8, checkpoint_every=4, deterministic=True, **overrides)
    config = tiny_train_config(corpus["source"], out_dir, **fields)
    return train(tiny_model_config(**RUN_SCHEDULE), config, run_name=out_dir.name, data=corpus["data"], progress=False)


def logged(run_dir) -> list[tuple[int, float, float]]:
    return [(r["step"], r["loss"], r[TEMPERATURE_KEY]) for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]


@pytest.fixture(scope="module")
def finished_run(corpus, tmp_path_factory):
    """An uninterrupted scheduled run."""
    run_dir = tmp_path_factory.mktemp("schedule") / "reference"
    scheduled_run(corpus, run_dir)
    return run_dir


def test_interrupted_mid_anneal_and_resumed_is_bit_identical(corpus, finished_run, tmp_path, monkeypatch):
    steps_seen: list[int] = []
    original_is_set, original_step = guards.InterruptFlag.is_set, loop.OptimizerStep.__call__

    def count(self, step, batch):
        steps_seen.append(step)
        return original_step(self, step, batch)

    monkeypatch.setattr(guards.InterruptFlag, "is_set", lambda self: original_is_set(self) or len(steps_seen) >= 4)
    monkeypatch.setattr(loop.OptimizerStep, "__call__", count)
    assert scheduled_run(corpus, tmp_path / "killed").stopped_early
    monkeypatch.setattr(guards.InterruptFlag, "is_set", original_is_set)
    train(None, None, data=corpus["data"], progress=False, resume_from=tmp_path / "killed")
    assert steps_seen == list(range(8))  # 0-3, then resumed at 4
    assert logged(tmp_path / "killed") == logged(finished_run)  # every step's loss and tau, bit for bit
    resumed = read_weights(tmp_path / "killed" / WEIGHTS_FILE)
    reference = read_weights(finished_run / WEIGHTS_FILE)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[name], reference[name]) for name in reference)


def test_the_run_records_the_schedule_and_logs_tau_moving_to_tau1(finished_run):
    model_config = read_config(finished_run)["model"]
    assert {name: model_config[name] for name in RUN_SCHEDULE} == RUN_SCHEDULE
    assert model_config["mot_temperature_anneal_steps"] == 0
    records = logged(finished_run)
    assert [step for step, _, _ in records] == list(range(1, 9))
    taus = [tau for _, _, tau in records]  # record at step s: the step s - 1 just taken
    assert taus == pytest.approx([tau_at(s, "geometric", run_steps=8) for s in range(8)], rel=1e-6)
    assert taus[0] == pytest.approx(TAU0) and taus[-1] == pytest.approx(TAU1)
    assert all(b < a for a, b in zip(taus, taus[1:], strict=False))


def test_a_finished_run_loads_converts_and_exports_at_tau1(finished_run, tmp_path):
    model = load_model(finished_run)
    (layer,) = mot_layers_of(model)
    assert layer.fixed_temperature == TAU1 and layer.temperature_schedule == "geometric"
    discrete = convert_config(model.config, "discrete-mot")  # argmax routing: the schedule is dropped
    assert (discrete.mot_routing, discrete.mot_temperature_schedule, discrete.mot_temperature) == (
        "discrete", "constant", TAU1,
    )  # fmt: skip

    pytest.importorskip("transformers", reason="transformers is in the test extra: pip install -e '.[test]'")
    from mixture_of_tokens.export.hf import export_hf

    result = export_hf(finished_run, tmp_path / "hf")  # checks the exported logits against load_model's
    assert result.max_abs_diff <= 1e-5
    exported = read_config(tmp_path / "hf")
    assert exported["mot_temperature"] == TAU1


def test_an_anneal_longer_than_the_run_is_refused_before_any_data(corpus, tmp_path):
    config = tiny_train_config(corpus["source"], tmp_path / "long", steps=8)
    with pytest.raises(ValueError, match=r"mot_temperature_anneal_steps=9 is longer than the run's steps=8.*0 .* to 8"):
        train(tiny_model_config(**RUN_SCHEDULE, mot_temperature_anneal_steps=9), config, progress=False)
    assert not (tmp_path / "long").exists()


def test_resuming_a_whole_run_anneal_with_other_steps_is_refused(finished_run, tmp_path):
    """The schedule spans the run's steps: a longer resumed run would move tau back up mid-run."""
    with pytest.raises(ValueError, match=r"steps=12 differs from the resumed run's 8: .*resume with steps=8"):
        plan_run(resume_from=finished_run / "checkpoints" / "step-0000004", train_overrides={"steps": 12})
