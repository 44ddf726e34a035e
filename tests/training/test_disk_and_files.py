"""Disk and files: the disk pre-check counts every checkpoint kept plus the one being written, a failed write is
one sentence with the partial write removed, final weights carry a sha256 manifest checked on load, a finished
run can always be resumed, resume refuses changed data, and --tensorboard without the package fails first."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest
from cli_runs import error_lines, run_mot, train_argv, tree_digest
from corpus import write_corpus
from helpers import make_checkpoint

from mixture_of_tokens.checkpoint import load_model, manifest_problem
from mixture_of_tokens.training import run_directory
from mixture_of_tokens.training import state as training_state
from mixture_of_tokens.training.state import list_checkpoints


@pytest.fixture
def corpus(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A corpus of this test's own (some tests edit it) and a working directory for relative run paths."""
    monkeypatch.chdir(tmp_path)
    return write_corpus(tmp_path / "corpus", n_documents=20)


def _train(corpus: Path, capsys, *flags: str) -> tuple[int, str, str]:
    return run_mot(train_argv(f"text:{corpus}", *flags), capsys)


def _disk_with_free(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    usage = shutil._ntuple_diskusage(10**12, 10**12 - free, free)
    monkeypatch.setattr(run_directory.shutil, "disk_usage", lambda path: usage)


def test_disk_pre_check_counts_the_kept_checkpoints_and_the_one_being_written(corpus, capsys, monkeypatch) -> None:
    flags = ("--steps", "4", "--checkpoint-every", "1", "--keep-checkpoints", "3")
    assert _train(corpus, capsys, *flags, "--out-dir", "measured")[0] == 0
    on_disk = sum(p.stat().st_size for p in Path("measured").rglob("*") if p.is_file())
    _disk_with_free(monkeypatch, int(0.9 * on_disk))  # less than the run really wrote
    status, _, err = _train(corpus, capsys, *flags, "--out-dir", "refused")
    assert status == 2 and len(error_lines(err)) == 1 and "MB free but the run needs about" in err
    assert not Path("refused").exists()


def test_a_full_disk_during_a_checkpoint_is_one_sentence_and_leaves_no_partial_write(
    corpus, capsys, monkeypatch
) -> None:
    real_save = training_state.torch.save
    calls = {"n": 0}

    def fill_the_disk(obj, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(training_state.torch, "save", fill_the_disk)
    status, _, err = _train(corpus, capsys, "--steps", "6", "--checkpoint-every", "2", "--out-dir", "full")
    assert status == 1 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert (
        "step-4 checkpoint" in last and "No space left on device" in last and "earlier checkpoints are intact" in last
    )
    checkpoints = Path("full") / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-0000002"]  # no .tmp-* directory left
    assert manifest_problem(checkpoints / "step-0000002") is None


def test_flipped_bytes_in_final_weights_are_one_clear_error(corpus, capsys) -> None:
    assert _train(corpus, capsys, "--steps", "2", "--out-dir", "run")[0] == 0
    load_model(Path("run"))  # intact: loads
    weights = Path("run") / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # a byte inside the last tensor: safetensors alone would load it silently
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its recorded sha256"):
        load_model(Path("run"))
    status, _, err = run_mot(["eval", "--checkpoint", "run", "--device", "cpu"], capsys)
    assert status == 2 and len(error_lines(err)) == 1 and "sha256" in err


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_config(directory: Path, **model_fields) -> None:
    path = directory / "config.json"
    payload = json.loads(path.read_text())
    payload["model"].update(model_fields)
    path.write_text(json.dumps(payload, indent=2))


def test_init_from_checks_the_weights_as_every_other_load(corpus, capsys) -> None:
    assert _train(corpus, capsys, "--steps", "2", "--out-dir", "run")[0] == 0
    _flip_a_byte(Path("run") / "model.safetensors")
    status, _, err = run_mot(["train", "--init-from", "run", "--steps", "2", "--out-dir", "next"], capsys)
    assert status == 2 and len(error_lines(err)) == 1 and "model.safetensors does not match its recorded sha256" in err
    assert not Path("next").exists()


def test_a_hand_edited_config_is_refused_by_every_load(corpus, capsys) -> None:
    assert _train(corpus, capsys, "--steps", "2", "--out-dir", "run")[0] == 0
    (checkpoint,) = list_checkpoints(Path("run"))
    for directory in (Path("run"), checkpoint):
        _edit_config(directory, mot_temperature=0.25)
    with pytest.raises(ValueError, match=r"run/config.json .*sha256"):
        load_model(Path("run"))
    for argv in (
        ["eval", "--checkpoint", "run", "--device", "cpu"],
        ["train", "--init-from", "run", "--steps", "2", "--out-dir", "next"],
        ["train", "--resume", str(checkpoint), "--steps", "4"],
        ["train", "--resume", "run", "--steps", "4"],
        ["convert", "--checkpoint", "run", "--to", "token-choice", "--out", "converted"],
    ):
        status, _, err = run_mot(argv, capsys)
        assert status == 2 and len(error_lines(err)) == 1 and "config.json" in err and "sha256" in err, (argv, err)
    assert not Path("next").exists() and not Path("converted").exists()


def test_a_directory_without_a_config_digest_still_loads(corpus, capsys) -> None:
    """Run directories written before config.json was in the manifest: no record, no check."""
    assert _train(corpus, capsys, "--steps", "2", "--out-dir", "run")[0] == 0
    manifest = Path("run") / "checkpoint.json"
    record = json.loads(manifest.read_text())
    record["sha256"].pop("config.json", None)
    manifest.write_text(json.dumps(record))
    _edit_config(Path("run"), mot_temperature=0.25)
    assert load_model(Path("run"))[1].mot_temperature == 0.25


BAD_CONFIGS = {
    "empty": ("", "is empty"),
    "invalid JSON": ('{"model": {"d_model": 16,', "is not valid JSON"),
    "unknown key": (None, "names an unknown model setting 'not_a_setting'"),
    "a transformers config": (
        json.dumps({"model_type": "mixture_of_tokens", "architectures": ["MoTForCausalLM"], "vocab_size": 320}),
        "is a Hugging Face transformers config",
    ),
}


@pytest.mark.parametrize("kind", BAD_CONFIGS)
def test_a_bad_config_json_is_one_sentence_naming_the_file(kind, tmp_path, cache_dir, capsys) -> None:
    checkpoint = make_checkpoint(tmp_path / "made")
    (checkpoint / "checkpoint.json").unlink()  # no sha256 record: the file is read as it is
    text, message = BAD_CONFIGS[kind]
    if text is None:
        _edit_config(checkpoint, not_a_setting=1)
    else:
        (checkpoint / "config.json").write_text(text)
    commands = [
        ["eval", "--checkpoint", str(checkpoint), "--device", "cpu"],
        ["audit", str(checkpoint)],
        ["convert", "--checkpoint", str(checkpoint), "--to", "token-choice", "--out", "converted"],
        ["train", "--init-from", str(checkpoint), "--steps", "2", "--out-dir", "next"],
    ]
    if importlib.util.find_spec("transformers") is not None:
        commands.append(["export", "--checkpoint", str(checkpoint), "--to", "hf", "--out", "exported"])
    for argv in commands:
        status, _, err = run_mot(argv, capsys)
        assert status == 2 and len(error_lines(err)) == 1 and "Traceback" not in err, (argv, err)
        assert f"{checkpoint / 'config.json'} {message}" in err, (argv, err)
    assert not any(Path(name).exists() for name in ("converted", "next", "exported"))


def test_a_finished_run_without_periodic_checkpoints_can_be_extended(corpus, capsys) -> None:
    assert _train(corpus, capsys, "--steps", "3", "--checkpoint-every", "0", "--out-dir", "run")[0] == 0
    assert [c.name for c in list_checkpoints(Path("run"))] == ["step-0000003"]
    assert run_mot(["train", "--resume", "run", "--steps", "5"], capsys)[0] == 0
    assert [c.name for c in list_checkpoints(Path("run"))] == ["step-0000003", "step-0000005"]


def test_resume_refuses_changed_data_before_retraining_the_tokenizer(corpus, cache_dir, capsys) -> None:
    assert _train(corpus, capsys, "--steps", "2", "--checkpoint-every", "2", "--out-dir", "run")[0] == 0
    with (corpus / "doc000.txt").open("a") as handle:
        handle.write(" A new sentence changes the byte-pair merges.")
    before = tree_digest(Path("run")), tree_digest(cache_dir)
    status, _, err = run_mot(["train", "--resume", "run", "--steps", "4"], capsys)
    assert status == 2 and len(error_lines(err)) == 1 and "changed since checkpoint" in err
    assert (tree_digest(Path("run")), tree_digest(cache_dir)) == before  # no BPE retrained, nothing written

    status, _, err = run_mot(["train", "--resume", "run", "--steps", "4", "--tokenizer", "gpt2"], capsys)
    assert status == 2 and len(error_lines(err)) == 1 and "data and tokenizer cannot change" in err


def test_init_from_refuses_a_tokenizer_that_would_change_under_the_weights(corpus, cache_dir, capsys) -> None:
    assert _train(corpus, capsys, "--steps", "2", "--out-dir", "run")[0] == 0
    other = write_corpus(corpus.parent / "other", n_documents=20, seed=1)
    init_from = ["train", "--init-from", "run", "--steps", "2", "--out-dir", "next"]
    before = tree_digest(cache_dir)
    status, _, err = run_mot([*init_from, "--data", f"text:{other}"], capsys)
    assert status == 2 and len(error_lines(err)) == 1 and "would change the tokenizer under the loaded weights" in err
    assert tree_digest(cache_dir) == before  # refused before any BPE is trained

    with (corpus / "doc000.txt").open("a") as handle:
        handle.write(" A new sentence changes the byte-pair merges.")
    status, _, err = run_mot(["train", "--resume", "run", "--steps", "4"], capsys)
    assert status == 2 and "changed since checkpoint" in err and "--init-from" not in err  # no advice that fails
    status, _, err = run_mot(init_from, capsys)  # the same source, edited: found once its BPE is trained
    last = err.strip().splitlines()[-1]  # after the progress of preparing the data
    assert status == 2 and "Traceback" not in err
    assert last.startswith("mot train: error:") and "ids would mean other words to the loaded weights" in last
    assert not Path("next").exists()


def test_tensorboard_without_the_package_fails_before_data_and_metrics(corpus, cache_dir, capsys, monkeypatch) -> None:
    assert _train(corpus, capsys, "--steps", "2", "--checkpoint-every", "2", "--out-dir", "run")[0] == 0
    before = tree_digest(Path("run"))
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed
    shutil.rmtree(cache_dir)
    for argv in (
        train_argv(f"text:{corpus}", "--steps", "2", "--tensorboard", "--out-dir", "fresh"),
        ["train", "--resume", "run", "--steps", "4", "--tensorboard"],
    ):
        status, _, err = run_mot(argv, capsys)
        assert status == 2 and len(error_lines(err)) == 1 and "pip install 'mixture-of-tokens[tensorboard]'" in err
    assert tree_digest(Path("run")) == before  # metrics.jsonl untouched
    assert not cache_dir.exists() and not Path("fresh").exists()
