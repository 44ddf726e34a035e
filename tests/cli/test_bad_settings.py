"""Every setting is checked before any data or compute: one bad value for every field of ModelConfig and
TrainConfig gives a non-zero exit, exactly one line on stderr naming the setting, no traceback, no data read and
no directory created. Settings that only fail together (init-from shape changes, a start that fails in its data)
leave nothing behind either."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from cli_runs import error_lines, run_mot, train_argv
from corpus import write_corpus
from helpers import make_checkpoint

from mixture_of_tokens.config import ModelConfig, TrainConfig
from mixture_of_tokens.training import loop

BAD_VALUES: dict[str, list[str]] = {
    # ModelConfig
    "vocab_size": ["--vocab-size", "0"],
    "max_seq_len": ["--max-seq-len", "0"],
    "d_model": ["--d-model", "-32"],
    "n_blocks": ["--n-blocks", "0"],
    "n_heads": ["--n-heads", "3"],  # does not divide d_model 32
    "d_ff": ["--d-ff", "0"],
    "objective": ["--objective", "sideways"],
    "ffn": ["--ffn", "conv"],
    "ffn_blocks": ["--ffn-blocks", "9"],
    "group_size": ["--group-size", "3"],  # does not divide the batch of 8
    "n_experts": ["--n-experts", "0"],
    "expert_size": ["--expert-size", "0"],
    "mot_temperature": ["--mot-temperature", "0"],
    "mot_temperature_schedule": ["--mot-temperature-schedule", "linear"],
    "mot_temperature_final": ["--mot-temperature-final", "0.5"],  # a final tau without a schedule
    "mot_temperature_anneal_steps": ["--mot-temperature-anneal-steps", "-1"],
    "mot_learnable_temperature": ["--mot-learnable-temperature", "sometimes"],
    "mot_routing": ["--mot-routing", "argmax"],
    "mot_discrete_rule": ["--mot-discrete-rule", "fair"],
    "mot_emit": ["--mot-emit", "tokens"],
    "mot_separate_emit_controller": ["--mot-separate-emit-controller=maybe"],
    "mot_grouping": ["--mot-grouping", "alphabetical"],
    "mot_group_axis": ["--mot-group-axis", "diagonal"],
    "mot_temperature_freeze_steps": ["--mot-temperature-freeze-steps", "-1"],
    "tc_top_k": ["--tc-top-k", "9"],  # more than the 4 experts
    "tc_capacity_factor": ["--ffn", "token_choice", "--tc-capacity-factor", "0.001"],  # 0 slots for 256 tokens
    "tc_drop_rule": ["--tc-drop-rule", "random"],
    "tc_scope": ["--tc-scope", "sequence"],
    "tc_load_balance_weight": ["--tc-load-balance-weight", "-1"],
    "tc_z_loss_weight": ["--tc-z-loss-weight", "-0.5"],
    "load_balance_reduce": ["--load-balance-reduce", "max"],
    "ec_tokens_per_expert": ["--ec-tokens-per-expert", "0"],
    "expert_dispatch": ["--expert-dispatch", "scatter"],
    "mot_compute": ["--mot-compute", "fused"],
    "tie_embeddings": ["--tie-embeddings=maybe"],
    "init_scale": ["--init-scale", "0"],
    "final_norm": ["--final-norm=maybe"],
    "embedding_init": ["--embedding-init", "zeros"],
    "positions": ["--positions", "alibi"],
    "rope_base": ["--positions", "rope", "--rope-base", "0"],
    "norm": ["--norm", "batchnorm"],
    "norm_eps": ["--norm-eps", "-1e-6"],
    "ffn_activation": ["--ffn-activation", "gelu"],
    "n_kv_heads": ["--n-kv-heads", "3"],
    "qk_norm": ["--qk-norm=maybe"],
    "dense_bias": ["--dense-bias=maybe"],
    "tc_norm_topk_prob": ["--tc-norm-topk-prob=maybe"],
    # TrainConfig
    "steps": ["--steps", "0"],
    "batch_size": ["--batch-size", "0"],
    "lr": ["--lr", "-1"],
    "min_lr_ratio": ["--min-lr-ratio", "2"],
    "warmup_steps": ["--warmup-steps", "-1"],
    "lr_schedule_offset": ["--lr-schedule-offset", "-1"],
    "weight_decay": ["--weight-decay", "-1"],
    "weight_decay_params": ["--weight-decay-params", "some"],
    "beta1": ["--beta1", "1.5"],
    "beta2": ["--beta2", "1"],
    "grad_clip": ["--grad-clip", "-1"],
    "eval_every": ["--eval-every", "0"],
    "eval_batches": ["--eval-batches", "0"],
    "log_every": ["--log-every", "0"],
    "seed": ["--seed", "-1"],
    "data": ["--data", "nope:x"],
    "tokenizer": ["--tokenizer", "gpt3"],
    "text_column": ["--text-column", "body"],  # the run's text: source reads its text itself
    "device": ["--device", "tpu"],
    "out_dir": ["--out-dir", "a-file"],  # an existing file
    "threads": ["--threads", "-1"],
    "precision": ["--precision", "fp8"],
    "grad_accum_steps": ["--grad-accum-steps", "3"],  # 8 sequences do not split into 3 micro-batches
    "parallel": ["--parallel", "tp"],
    "checkpoint_every": ["--checkpoint-every", "-1"],
    "keep_checkpoints": ["--keep-checkpoints", "0"],
    "compile": ["--compile=maybe"],
    "deterministic": ["--deterministic=maybe"],
    "tensorboard": ["--tensorboard=maybe"],
    "collapse_share": ["--collapse-share", "2"],
    "collapse_patience": ["--collapse-patience", "0"],
    "switch_to": ["--switch-to", "dense"],
    "switch_at": ["--switch-to", "token-choice", "--switch-at", "0"],  # not a step in 1..steps-1
    "eval_also": ["--eval-also", "discrete-mot"],
}
FIELDS = [f.name for cls in (ModelConfig, TrainConfig) for f in dataclasses.fields(cls)]


class DataRead(BaseException):
    """Raised if a run reaches its data: a BaseException, so no error handler turns it into a message."""


@pytest.fixture
def clean_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A corpus outside an empty working directory, a cache that does not exist, and data preparation that fails
    the test if reached."""
    corpus = write_corpus(tmp_path / "corpus", n_documents=4)
    workdir, cache = tmp_path / "work", tmp_path / "cache"
    workdir.mkdir()
    (workdir / "a-file").write_text("not a directory")
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("MOT_CACHE_DIR", str(cache))

    def no_data(*args, **kwargs):
        raise DataRead("the run read its data before failing")

    monkeypatch.setattr(loop, "prepare_data", no_data)
    return {"source": f"text:{corpus}", "workdir": workdir, "cache": cache}


def _assert_refused_before_anything(status: int, err: str, start: dict, *, names: tuple[str, ...]) -> None:
    lines = error_lines(err)
    assert status == 2, err
    assert len(lines) == 1 and lines[0].startswith("mot") and "Traceback" not in err, err
    assert any(name in lines[0] for name in names), lines[0]
    assert sorted(p.name for p in start["workdir"].iterdir()) == ["a-file"]  # no run directory
    assert not start["cache"].exists()  # no data read


def test_every_config_field_has_a_bad_value_row() -> None:
    missing = [name for name in FIELDS if name not in BAD_VALUES]
    assert not missing, f"add a bad value for the new config fields {missing} to BAD_VALUES"


@pytest.mark.parametrize("field", FIELDS)
def test_a_bad_value_of_every_setting_fails_before_any_data(field: str, clean_start: dict, capsys) -> None:
    if field not in BAD_VALUES:
        pytest.fail(f"no bad value for config field {field!r}; add one to BAD_VALUES")
    flag = "--" + field.replace("_", "-")
    argv = train_argv(clean_start["source"], "--steps", "4", *BAD_VALUES[field])
    status, _, err = run_mot(argv, capsys)
    _assert_refused_before_anything(status, err, clean_start, names=(field, flag, field.replace("_", " ")))


def test_init_from_with_a_shape_changing_override_fails_before_any_data(tmp_path, clean_start, monkeypatch, capsys):
    monkeypatch.setenv("MOT_CACHE_DIR", str(tmp_path / "checkpoint-cache"))
    checkpoint = make_checkpoint(tmp_path / "source")
    monkeypatch.setenv("MOT_CACHE_DIR", str(clean_start["cache"]))
    for override in (["--d-model", "32"], ["--n-experts", "8"], ["--tie-embeddings"]):
        status, _, err = run_mot(["train", "--init-from", str(checkpoint), "--steps", "2", *override], capsys)
        _assert_refused_before_anything(status, err, clean_start, names=("change the weights",))


def test_a_start_that_fails_in_its_data_leaves_no_run_directory(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MOT_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "empty-corpus").mkdir()
    (tmp_path / "empty-corpus" / "blank.txt").write_text("   \n")
    status, _, err = run_mot(train_argv(f"text:{tmp_path / 'empty-corpus'}", "--steps", "2"), capsys)
    assert status == 2 and "no usable text" in err
    assert not (tmp_path / "runs").exists()
