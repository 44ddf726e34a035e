"""Consistent setting names: a ModelConfig field read by one feed-forward kind carries its prefix (`mot_`, `tc_`,
`ec_`), and the old names of renamed settings keep working wherever a setting is given: the constructor and
`dataclasses.replace`, attribute reads, `mot train` flags, a run's config.json and a `--config` file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cli_runs import planned_train

from mixture_of_tokens.checkpoint import saved_configs
from mixture_of_tokens.config import ModelConfig, TrainConfig, field_help
from mixture_of_tokens.config_renames import RENAMED_SETTINGS, old_names, renamed_settings
from mixture_of_tokens.experiments.runner import RunSpec, config_difference

KIND_PREFIXES = {"MoT": "mot_", "Token Choice": "tc_", "Expert Choice": "ec_"}
"""How a field's help names the one kind that reads it -> the prefix its name carries."""

OLD_TOKEN_CHOICE = {"top_k": 2, "capacity_factor": 2.0, "load_balance_weight": 0.02, "z_loss_weight": 0.001}
NEW_TOKEN_CHOICE = {"tc_top_k": 2, "tc_capacity_factor": 2.0, "tc_load_balance_weight": 0.02, "tc_z_loss_weight": 0.001}


def misnamed_fields(helps: dict[str, str]) -> dict[str, str]:
    """{field: the prefix it should carry} for each field whose help names one kind but whose name lacks its
    prefix, or whose name carries a kind's prefix that its help does not name."""
    wrong = {}
    for name, text in helps.items():
        kinds = [prefix for kind, prefix in KIND_PREFIXES.items() if text.startswith(kind)]
        carried = [prefix for prefix in KIND_PREFIXES.values() if name.startswith(prefix)]
        if kinds != carried:
            wrong[name] = kinds[0] if kinds else "(none)"
    return wrong


def test_every_kind_specific_setting_carries_its_kind_prefix() -> None:
    helps = field_help(ModelConfig)
    assert misnamed_fields(helps) == {}
    assert misnamed_fields({**helps, "top_k": helps["tc_top_k"]}) == {"top_k": "tc_"}  # the check can fail
    assert misnamed_fields({"mot_width": "model width"}) == {"mot_width": "(none)"}


def test_each_old_name_is_gone_and_its_new_name_a_field() -> None:
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    assert all(old not in names and new in names for old, (new, _) in RENAMED_SETTINGS.items())
    assert old_names("tc_top_k") == ("top_k",) and old_names("mot_compute") == ()  # mot_recompute changed its values


def test_old_names_build_and_read_the_same_config() -> None:
    old = ModelConfig(ffn="token_choice", temperature_freeze_steps=0, **OLD_TOKEN_CHOICE)
    assert old == ModelConfig(ffn="token_choice", mot_temperature_freeze_steps=0, **NEW_TOKEN_CHOICE)
    assert (old.top_k, old.capacity_factor, old.z_loss_weight) == (2, 2.0, 0.001)
    assert dataclasses.replace(old, top_k=3).tc_top_k == 3  # replace passes every field and the old-named change
    assert ModelConfig(mot_recompute=True).mot_compute == "recompute"
    with pytest.raises(ValueError, match=r"tc_top_k must be an integer in 1\.\.n_experts=8, got 9"):
        ModelConfig(ffn="token_choice", top_k=9)  # the refusal names the current setting


def test_renamed_settings_leaves_current_names_alone() -> None:
    assert renamed_settings({"tc_top_k": 2, "lr": 1e-3}) == {"tc_top_k": 2, "lr": 1e-3}
    assert renamed_settings({"top_k": 2}) == {"tc_top_k": 2}


def test_old_flags_give_the_same_run_as_the_new_ones() -> None:
    base = ["train", "--preset", "tiny-token-choice", "--dry-run"]
    old = planned_train([*base, "--top-k", "2", "--capacity-factor", "2.0", "--z-loss-weight", "0.001"])
    new = planned_train([*base, "--tc-top-k", "2", "--tc-capacity-factor", "2.0", "--tc-z-loss-weight", "0.001"])
    assert old.model_config == new.model_config
    assert (new.model_config.tc_top_k, new.model_config.tc_capacity_factor) == (2, 2.0)


def test_an_old_config_json_loads_under_the_new_names() -> None:
    payload = {"model": {"ffn": "token_choice", "mot_recompute": False, **OLD_TOKEN_CHOICE}, "train": {"lr": 1e-3}}
    model_config, train_config = saved_configs(json.loads(json.dumps(payload)))
    assert model_config == ModelConfig(ffn="token_choice", mot_compute="plain", **NEW_TOKEN_CHOICE)
    assert train_config.lr == 1e-3


def test_a_config_file_with_old_names_gives_the_same_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "old.toml").write_text('preset = "tiny-token-choice"\n[model]\ntop_k = 2\ncapacity_factor = 2.0\n')
    (tmp_path / "new.toml").write_text(
        'preset = "tiny-token-choice"\n[model]\ntc_top_k = 2\ntc_capacity_factor = 2.0\n'
    )
    old = planned_train(["train", "--config", "old.toml", "--dry-run"])
    new = planned_train(["train", "--config", "new.toml", "--dry-run"])
    assert old.model_config == new.model_config and new.model_config.tc_top_k == 2


def test_a_suite_run_saved_under_old_names_is_compared_setting_by_setting() -> None:
    """The suite runner reuses a finished run only when its config.json holds the run's settings; one saved before
    the rename is read under the current names, so a different k is still caught."""
    model = ModelConfig(ffn="token_choice", tc_top_k=1)
    spec = RunSpec("token-choice", 1e-3, 0, model, TrainConfig(lr=1e-3))
    saved = {"model": {**dataclasses.asdict(model), "top_k": 2}, "train": dataclasses.asdict(spec.train)}
    del saved["model"]["tc_top_k"]
    assert config_difference(spec, saved) == "model.tc_top_k = 2 there, 1 in the suite"
    saved["model"]["top_k"] = 1
    assert config_difference(spec, saved) is None
