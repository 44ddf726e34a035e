"""The staged suite planner (`experiments/planner.py`) on fabricated outcomes: which runs it wants, in which
order, as runs finish — the sweep and its widening past an edge, an arm at another's rate, an arm at the best
setting of others, an alias that resolves to the best arm and re-checks it at its neighbouring rates, further
seeds at the chosen rate, diverged runs passed over — and the suite checks that refuse a forward reference."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from mixture_of_tokens.counting import count_model
from mixture_of_tokens.experiments.catalog import get_suite
from mixture_of_tokens.experiments.planner import expected_runs, plan_suite, run_name
from mixture_of_tokens.experiments.runner import IGNORED_TRAIN_FIELDS, arm_spec
from mixture_of_tokens.experiments.suites import Arm, Size, Suite, check_suite, mot_arm
from mixture_of_tokens.model import Transformer
from mixture_of_tokens.presets import get_preset

SIZE = Size("t", 32, 2, 2, 32, 8, 8, lrs=(1e-3, 2e-3, 4e-3), seeds=2, widen=2)
DIVERGED = object()


class Disk:
    """Fabricated finished runs: run name -> final eval loss (DIVERGED: recorded as diverged)."""

    def __init__(self) -> None:
        self.losses: dict[str, object] = {}

    def __call__(self, arm: Arm, lr: float, seed: int) -> tuple[bool, float | None]:
        name = run_name(arm.name, lr, seed)
        if name not in self.losses:
            return False, None
        loss = self.losses[name]
        return True, None if loss is DIVERGED else loss  # type: ignore[return-value]

    def finish(self, plan, losses: dict[str, object]) -> None:
        wanted = {run_name(r.arm.name, r.lr, r.seed) for r in plan.runs}
        assert set(losses) <= wanted, sorted(set(losses) - wanted)
        self.losses.update(losses)


def names(plan) -> list[str]:
    return [run_name(r.arm.name, r.lr, r.seed) for r in plan.runs]


def test_a_sweep_then_seeds_at_the_chosen_rate() -> None:
    suite = Suite("s", "", (Arm("dense", "dense"),), ())
    disk = Disk()
    plan = plan_suite(suite, SIZE, disk)
    assert names(plan) == ["dense-lr0.001-s0", "dense-lr0.002-s0", "dense-lr0.004-s0"] and not plan.complete
    disk.finish(plan, {"dense-lr0.001-s0": 3.0, "dense-lr0.002-s0": 2.5, "dense-lr0.004-s0": 2.7})
    plan = plan_suite(suite, SIZE, disk)
    assert names(plan)[3:] == ["dense-lr0.002-s1"] and plan.complete
    assert plan.arms["dense"].chosen == 2e-3


def test_a_best_rate_at_an_edge_widens_the_sweep_at_most_widen_times() -> None:
    suite = Suite("s", "", (Arm("dense", "dense"),), ())
    disk = Disk()
    disk.finish(
        plan_suite(suite, SIZE, disk), {"dense-lr0.001-s0": 3.0, "dense-lr0.002-s0": 2.9, "dense-lr0.004-s0": 2.8}
    )
    plan = plan_suite(suite, SIZE, disk)
    assert names(plan)[-1] == "dense-lr0.008-s0" and not plan.arms["dense"].resolved
    disk.finish(plan, {"dense-lr0.008-s0": 2.7})
    plan = plan_suite(suite, SIZE, disk)
    assert names(plan)[-1] == "dense-lr0.016-s0"
    disk.finish(plan, {"dense-lr0.016-s0": 2.6})  # still at the edge, but widened twice: resolved
    plan = plan_suite(suite, SIZE, disk)
    assert plan.arms["dense"].resolved and plan.arms["dense"].chosen == 0.016
    assert names(plan)[-1] == "dense-lr0.016-s1"
    low = Disk()
    low.finish(
        plan_suite(suite, SIZE, low), {"dense-lr0.001-s0": 2.0, "dense-lr0.002-s0": 2.9, "dense-lr0.004-s0": 3.0}
    )
    assert names(plan_suite(suite, SIZE, low))[-1] == "dense-lr0.0005-s0"


def _staged() -> Suite:
    return Suite(
        "staged",
        "",
        (
            mot_arm("mot", "/2E", "MoT", seeds=1),
            mot_arm("mot-t0.1", "/2E", "MoT tau 0.1", model=(("mot_temperature", 0.1),), lr_from="mot", seeds=1),
            mot_arm("mot-t0.3", "/2E", "MoT tau 0.3", model=(("mot_temperature", 0.3),), lr_from="mot", seeds=1),
            Arm("setting", "best setting", "mot", best_of=("mot", "mot-t0.1", "mot-t0.3"), seeds=1),
            mot_arm("mot-4e", "/4E", "MoT /4E at the best setting", settings_from=("setting",), seeds=1),
            Arm("ec", "Expert Choice", "expert_choice", experts=2, settings_from=("setting",), seeds=1),
            Arm("best", "best", "mot", best_of=("mot", "mot-t0.1", "mot-t0.3", "mot-4e"), recheck=True, seeds=2),
        ),
        (),
    )


def test_stages_follow_the_rates_and_settings_they_depend_on() -> None:
    suite, disk = _staged(), Disk()
    size = Size("t", 32, 2, 2, 32, 8, 8, lrs=(1e-3, 2e-3, 4e-3), seeds=2)
    plan = plan_suite(suite, size, disk)
    assert names(plan) == ["mot-lr0.001-s0", "mot-lr0.002-s0", "mot-lr0.004-s0"]  # the rest waits for mot's rate
    disk.finish(plan, {"mot-lr0.001-s0": 3.0, "mot-lr0.002-s0": 2.8})
    assert len(plan_suite(suite, size, disk).runs) == 3  # one rate still running: nothing is decided yet
    disk.finish(plan, {"mot-lr0.004-s0": 2.9})
    plan = plan_suite(suite, size, disk)
    assert names(plan)[3:] == ["mot-t0.1-lr0.002-s0", "mot-t0.3-lr0.002-s0"]
    disk.finish(plan, {"mot-t0.1-lr0.002-s0": 2.6, "mot-t0.3-lr0.002-s0": 2.7})
    plan = plan_suite(suite, size, disk)
    assert plan.arms["setting"].winner == "mot-t0.1"
    assert names(plan)[5:] == ["mot-4e-lr0.002-s0", "ec-lr0.002-s0"]
    mot_4e = next(r.arm for r in plan.runs if r.arm.name == "mot-4e")
    assert dict(mot_4e.model) == {"mot_temperature": 0.1} and mot_4e.mot == "/4E"  # the winner's tau, its own size
    ec = next(r.arm for r in plan.runs if r.arm.name == "ec")
    assert ec.model == ()  # another kind takes only the rate
    disk.finish(plan, {"mot-4e-lr0.002-s0": 2.65, "ec-lr0.002-s0": DIVERGED})
    plan = plan_suite(suite, size, disk)
    # the best of all is re-checked at half and twice its rate, under its own name
    assert plan.arms["best"].winner == "mot-t0.1"
    assert names(plan)[7:] == ["mot-t0.1-lr0.001-s0", "mot-t0.1-lr0.004-s0"] and not plan.complete
    disk.finish(plan, {"mot-t0.1-lr0.001-s0": 2.55, "mot-t0.1-lr0.004-s0": 2.9})
    plan = plan_suite(suite, size, disk)
    assert plan.arms["best"].chosen == 1e-3 and plan.arms["mot-t0.1"].chosen == 2e-3
    assert names(plan)[9:] == ["mot-t0.1-lr0.001-s1"] and plan.complete
    assert len(set(names(plan))) == len(plan.runs)


def test_a_recheck_whose_best_rate_is_at_its_edge_is_widened_before_the_second_seed() -> None:
    suite, disk = _staged(), Disk()
    size = Size("t", 32, 2, 2, 32, 8, 8, lrs=(1e-3, 2e-3, 4e-3), seeds=2, widen=1)
    disk.finish(plan_suite(suite, size, disk), {"mot-lr0.001-s0": 3.0, "mot-lr0.002-s0": 2.8, "mot-lr0.004-s0": 2.9})
    disk.finish(plan_suite(suite, size, disk), {"mot-t0.1-lr0.002-s0": 2.6, "mot-t0.3-lr0.002-s0": 2.7})
    disk.finish(plan_suite(suite, size, disk), {"mot-4e-lr0.002-s0": 2.65, "ec-lr0.002-s0": 2.9})
    disk.finish(plan_suite(suite, size, disk), {"mot-t0.1-lr0.001-s0": 2.7, "mot-t0.1-lr0.004-s0": 2.5})
    plan = plan_suite(suite, size, disk)  # best at twice the winner's rate: the edge of the re-check
    assert names(plan)[-1] == "mot-t0.1-lr0.008-s0" and not plan.arms["best"].resolved
    assert "mot-t0.1-lr0.004-s1" not in names(plan)  # the second seed waits for the widened rate
    disk.finish(plan, {"mot-t0.1-lr0.008-s0": 2.55})
    plan = plan_suite(suite, size, disk)
    assert plan.arms["best"].resolved and plan.arms["best"].chosen == 4e-3
    assert names(plan)[-1] == "mot-t0.1-lr0.004-s1" and plan.complete


def test_an_arm_whose_sources_all_diverged_trains_nothing() -> None:
    suite, disk = _staged(), Disk()
    size = Size("t", 32, 2, 2, 32, 8, 8, lrs=(1e-3,), seeds=1)
    disk.finish(plan_suite(suite, size, disk), {"mot-lr0.001-s0": DIVERGED})
    plan = plan_suite(suite, size, disk)
    assert names(plan) == ["mot-lr0.001-s0"] and plan.complete
    assert all(p.chosen is None for p in plan.arms.values())


@pytest.mark.parametrize(
    ("arm", "message"),
    [
        (Arm("x", "x", lr_from="later"), "depends on arms that are not listed before it"),
        (Arm("x", "x", best_of=("dense",), lr_from="dense"), "exclude each other"),
        (Arm("x", "x", recheck=True), "recheck needs best_of"),
    ],
)
def test_a_suite_that_depends_on_a_later_arm_is_refused(arm: Arm, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_suite(Suite("s", "", (Arm("dense", "dense"), arm), ()))


def test_claims_capacity_starts_with_its_ten_sweeps() -> None:
    """Stage (a)'s three sweeps, stage (e)'s (the Llama-style block) and stage (f)'s (more and finer experts, and
    dense and Token Choice of their FLOPs), which wait for nothing."""
    suite = get_suite("claims-capacity")
    plan = plan_suite(suite, suite.size("capacity"), Disk())
    first = ["dense", "token-choice", "mot-8e", "llama-dense", "llama-mot-8e-4", "llama-token-choice", "mot-16e-4",
             "mot-32e-4", "dense-448", "token-choice-448"]  # fmt: skip
    assert list(dict.fromkeys(r.arm.name for r in plan.runs)) == first
    assert len(plan.runs) == 30 and not plan.complete


def test_stage_f_sizes_more_and_finer_experts_at_tau_one_tenth() -> None:
    suite = get_suite("claims-capacity")
    size = suite.size("capacity")
    for name, experts, group in (("mot-16e-4", 64, 16), ("mot-32e-4", 128, 32)):
        model = arm_spec(suite.arm(name), size, 4e-3, 0, Path("unused")).model
        assert (model.n_experts, model.group_size, model.expert_size) == (experts, group, size.base_model().d_ff // 4)
        assert model.mot_temperature == 0.1 and model.ffn_blocks == "all"
    mot, wide, control = (arm_spec(suite.arm(name), size, 4e-3, 0, Path("unused")).model
                          for name in ("mot-32e-4", "dense-448", "token-choice-448"))  # fmt: skip
    flops = {name: count_model(Transformer(model)).forward_flops_per_token
             for name, model in (("mot", mot), ("dense", wide), ("token-choice", control))}  # fmt: skip
    assert flops["dense"] == flops["mot"]  # FLOP-matched exactly
    assert abs(flops["token-choice"] / flops["mot"] - 1) < 0.005  # within its router's d x E per block
    assert (control.n_experts, control.expert_size) == (8, 448)


def test_an_arms_own_feed_forward_width_sizes_its_experts() -> None:
    suite = get_suite("claims-capacity")
    size = suite.size("capacity")
    dense, mot, control = (arm_spec(suite.arm(name), size, 4e-3, 0, Path("unused")).model
                           for name in ("llama-dense", "llama-mot-8e-4", "llama-token-choice"))  # fmt: skip
    assert dense.d_ff != size.base_model().d_ff
    assert (mot.n_experts, mot.expert_size) == (32, dense.d_ff // 4)
    assert (control.n_experts, control.expert_size) == (8, dense.d_ff)


NARROW_PRESET_ARMS = {
    "narrow-dense": "dense", "narrow-mot": "mot-8e-4", "narrow-mot-32e-4": "mot-32e-4", "narrow-mot-8e": "mot-8e",
    "narrow-token-choice": "token-choice",
    "narrow-expert-choice": "expert-choice", "narrow-llama-dense": "llama-dense", "narrow-llama-mot": "llama-mot-8e-4",
    "narrow-llama-token-choice": "llama-token-choice",
}  # fmt: skip
CAPACITY_RESULTS = REPO_ROOT / "docs" / "results" / "claims-capacity-cpu" / "results.json"


@pytest.mark.parametrize(("preset", "arm"), NARROW_PRESET_ARMS.items())
def test_the_narrow_presets_are_the_capacity_suites_models(preset: str, arm: str) -> None:
    """One answer for the capacity-bound shape: each narrow preset trains the suite's model on its budget, so a
    preset run (`mot demo`'s among them) is the suite's run of that model at the preset's rate, seed 0."""
    suite = get_suite("claims-capacity")
    size = suite.size("capacity")
    chosen = get_preset(preset)
    spec = arm_spec(suite.arm(arm), size, chosen.train.lr, 0, Path("unused"))
    wanted = spec.model
    if arm == "mot-8e-4":  # trained at the best /8E setting, which the suite found to be tau = 0.1 (mot-8e-t0.1)
        wanted = dataclasses.replace(wanted, mot_temperature=0.1)
    assert chosen.model == wanted
    compared = [f.name for f in dataclasses.fields(chosen.train) if f.name not in IGNORED_TRAIN_FIELDS]
    assert {name: getattr(chosen.train, name) for name in compared} == {
        name: getattr(spec.train, name) for name in compared
    }


def test_each_narrow_preset_trains_at_the_rate_the_capacity_suite_found_best() -> None:
    """The committed claims-capacity results name each model's best rate; a preset pair compares tuned models.
    narrow-mot's model is the suite's best MoT, re-checked at neighbouring rates under `mot-best`; a model whose
    sweep is still under way (a rate without a loss) is not checked yet."""
    measured = json.loads(CAPACITY_RESULTS.read_text())["models"]
    sources = {**NARROW_PRESET_ARMS, "narrow-mot": "mot-best"}
    checked = {
        preset: model
        for preset, model in sources.items()
        if model in measured and None not in measured[model]["sweep"].values()
    }
    assert {"narrow-dense", "narrow-mot", "narrow-mot-32e-4", "narrow-mot-8e", "narrow-token-choice"} <= set(checked)
    for preset, model in checked.items():
        assert get_preset(preset).train.lr == measured[model]["lr"], preset


def test_expected_runs_counts_what_the_plan_trains() -> None:
    smoke = get_suite("smoke")
    assert expected_runs(smoke, smoke.size("smoke")) == 42  # 14 models: 2 rates, then a second seed
    suite = get_suite("claims-capacity")
    # 3 swept arms x 3 rates + 3 second seeds; 7 sharper arms; 4 at the best setting; a re-check at 2 rates; a seed;
    # the Llama-style block's 3 swept arms x 3 rates; stage (f)'s 4 swept arms x 3 rates and a seed
    assert expected_runs(suite, suite.size("capacity")) == 9 + 3 + 7 + 4 + 2 + 1 + 9 + 12 + 1


def test_claims_capacity_widens_a_sweep_whose_best_rate_is_at_an_edge() -> None:
    suite = get_suite("claims-capacity")
    disk = Disk()
    disk.finish(plan_suite(suite, suite.size("capacity"), disk), {
        "dense-lr0.002-s0": 3.40, "dense-lr0.004-s0": 3.38, "dense-lr0.008-s0": 3.39,
        "token-choice-lr0.002-s0": 3.24, "token-choice-lr0.004-s0": 3.26, "token-choice-lr0.008-s0": 3.33,
        "mot-8e-lr0.002-s0": 3.47, "mot-8e-lr0.004-s0": 3.49, "mot-8e-lr0.008-s0": 3.53,
    })  # fmt: skip
    wanted = names(plan_suite(suite, suite.size("capacity"), disk))
    assert {"token-choice-lr0.001-s0", "mot-8e-lr0.001-s0", "dense-lr0.004-s1"} <= set(wanted)
    assert not any(name.startswith("mot-8e-t") for name in wanted)  # stage (b) waits for MoT's widened sweep
