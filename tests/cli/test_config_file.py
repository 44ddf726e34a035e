"""`--config FILE` for `mot train` and `mot compare`: TOML, YAML and JSON files (a run's own config.json too) give
the settings, flags on the command line win, the resolved run equals the one the same flags give, and a bad file
or an unknown key is one sentence before anything runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from cli_runs import parsed, planned_train, run_mot

from mixture_of_tokens.presets import get_preset

TOML = """preset = "tiny-mot"
steps = 12

[model]
group_size = 4
mot_temperature = 0.5

[train]
lr = 0.001
data = "packaged"
"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_toml_file_gives_the_settings_and_flags_win(in_tmp: Path) -> None:
    (in_tmp / "run.toml").write_text(TOML)
    from_file = planned_train(["train", "--config", "run.toml", "--lr", "0.002", "--dry-run"])
    flags = ["--preset", "tiny-mot", "--steps", "12", "--group-size", "4", "--mot-temperature", "0.5", "--lr", "0.002",
             "--data", "packaged", "--dry-run"]  # fmt: skip
    from_flags = planned_train(["train", *flags])
    assert from_file.model_config == from_flags.model_config and from_file.model_config.group_size == 4
    assert from_file.train_config == from_flags.train_config and from_file.train_config.lr == 0.002  # the flag won
    assert from_file.name == "tiny-mot"


def test_yaml_and_json_files_read_the_same(in_tmp: Path) -> None:
    settings = {"preset": "tiny-mot", "steps": 12, "model": {"group_size": 4}, "train": {"lr": 0.001}}
    (in_tmp / "run.yaml").write_text("preset: tiny-mot\nsteps: 12\nmodel:\n  group_size: 4\ntrain:\n  lr: 0.001\n")
    (in_tmp / "run.json").write_text(json.dumps(settings))
    yaml_plan = planned_train(["train", "--config", "run.yaml", "--dry-run"])
    json_plan = planned_train(["train", "--config", "run.json", "--dry-run"])
    assert yaml_plan.model_config == json_plan.model_config and yaml_plan.train_config == json_plan.train_config
    assert (json_plan.model_config.group_size, json_plan.train_config.lr, json_plan.train_config.steps) == (4, 1e-3, 12)


def test_a_runs_config_json_starts_a_new_run_with_its_settings(in_tmp: Path) -> None:
    preset = get_preset("tiny-mot")
    old = in_tmp / "runs" / "old"
    old.mkdir(parents=True)
    train = dataclasses.replace(preset.train, out_dir=str(old), steps=7)
    record = {"model": dataclasses.asdict(preset.model), "train": dataclasses.asdict(train), "run": "old",
              "run_id": "abc", "data_fingerprint": "f", "tokenizer": {"kind": "bpe"}}  # fmt: skip
    (old / "config.json").write_text(json.dumps(record))
    again = planned_train(["train", "--config", str(old / "config.json"), "--dry-run"])
    assert again.model_config == preset.model
    assert again.train_config.steps == 7 and again.train_config.out_dir != str(old)  # never the old run's directory
    assert again.name == "old-rerun"


def test_compare_takes_its_settings_from_a_file(in_tmp: Path) -> None:
    (in_tmp / "suite.toml").write_text('suite = "smoke"\nparallel = 2\nout = "somewhere"\n')
    args = parsed(["compare", "--config", "suite.toml", "--parallel", "1"])
    assert (args.suite, args.out, args.parallel) == ("smoke", "somewhere", 1)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("run.toml", 'preset = "tiny-mot"\nlearning_rate = 0.1\n', "learning_rate is not a setting of `mot train`"),
        ("run.toml", "preset = \n", "cannot be read as TOML"),
        ("run.ini", "[x]\n", "unknown file type .ini; allowed: .toml, .yaml, .yml, .json"),
        ("run.json", "[1, 2]", "must hold a table of settings, not list"),
        ("run.toml", '[model]\ngroup_size = "eight"\n', "--config run.toml: argument --group-size: invalid int"),
    ],
)
def test_a_bad_file_is_one_sentence_before_anything_runs(in_tmp, capsys, name, text, message) -> None:
    (in_tmp / name).write_text(text)
    status, _, err = run_mot(["train", "--config", name, "--preset", "tiny-mot"], capsys)
    assert status == 2 and message in err and "Traceback" not in err
    assert not (in_tmp / "runs").exists()


def test_a_missing_file_is_one_sentence(in_tmp, capsys) -> None:
    status, _, err = run_mot(["compare", "--config", "nope.toml"], capsys)
    assert status == 2 and "--config nope.toml: no such file." in err
