"""A real full disk, on a small tmpfs (skipped where mounting one is not permitted): a checkpoint, a metrics line,
the final weights and the data cache that do not fit each stop with one sentence (what could not be written where,
why, the free space, what is kept), leave no `.tmp-*` behind and leave everything saved before as it was. The
wording of `write_failed` and `os_errors` is checked on /dev/full, which needs no privileges."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from cli_runs import error_lines, run_mot, train_argv, tree_digest
from corpus import write_corpus

from mixture_of_tokens.checkpoint import manifest_problem, save_weights
from mixture_of_tokens.files import WriteFailed, is_disk_full, os_errors, write_failed
from mixture_of_tokens.training import checkpointing, log
from mixture_of_tokens.training.state import list_checkpoints

DEV_FULL = Path("/dev/full")
EVERY_2_STEPS = ("--steps", "6", "--checkpoint-every", "2", "--keep-checkpoints", "1")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """An 8 MB tmpfs mounted on tmp_path/disk, unmounted after the test."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command to make a small filesystem")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({mounted.stderr.strip() or mounted.returncode})")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def fill(disk: Path, *, leave: int) -> Path:
    """A file that takes all but `leave` bytes of the disk's free space."""
    filler = disk / "filler"
    with filler.open("ab") as handle:
        handle.write(b"\0" * max(shutil.disk_usage(disk).free - leave, 0))
    return filler


def temporary_names(directory: Path) -> list[str]:
    return [str(path) for path in directory.rglob("*") if ".tmp-" in path.name]


def the_error(err: str) -> str:
    """The one `mot` error line after the progress output (there is no traceback)."""
    assert "Traceback" not in err
    (line,) = [line for line in error_lines(err) if line.startswith("mot ")]
    return line


@pytest.fixture
def corpus(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return write_corpus(tmp_path / "corpus", n_documents=20)


def fill_after_save(monkeypatch: pytest.MonkeyPatch, disk: Path, *, at_step: int, leave: int) -> None:
    """Fill the disk right after the checkpoint of `at_step` is written (after the run's own disk pre-check)."""
    save = checkpointing.Checkpointer.save

    def save_then_fill(self, step: int):
        path = save(self, step)
        if step == at_step:
            fill(disk, leave=leave)
        return path

    monkeypatch.setattr(checkpointing.Checkpointer, "save", save_then_fill)


def test_a_checkpoint_that_does_not_fit_stops_with_one_sentence_naming_the_last_good_one(
    small_disk, corpus, capsys, monkeypatch
) -> None:
    run = small_disk / "run"
    fill_after_save(monkeypatch, small_disk, at_step=2, leave=64 << 10)  # room for metrics lines, not a checkpoint
    status, _, err = run_mot(train_argv(f"text:{corpus}", *EVERY_2_STEPS, "--out-dir", str(run)), capsys)
    line = the_error(err)
    assert status == 1
    assert f"writing the step-4 checkpoint into {run / 'checkpoints'} failed (No space left on device" in line
    assert f"the last good checkpoint is {run / 'checkpoints' / 'step-0000002'}" in line
    assert f"`mot train --resume {run}`" in line
    assert [c.name for c in list_checkpoints(run)] == ["step-0000002"] and not temporary_names(run)
    assert manifest_problem(run / "checkpoints" / "step-0000002") is None


def test_a_metrics_line_that_does_not_fit_is_cut_off_and_one_sentence(small_disk, corpus, capsys, monkeypatch) -> None:
    run = small_disk / "run"
    write = log.RunLog.write

    def write_then_fill(self, record, latest_eval) -> None:
        write(self, record, latest_eval)
        if record["step"] == 2:
            fill(small_disk, leave=0)  # the next lines fill what is left of the file's last page, then fail

    monkeypatch.setattr(log.RunLog, "write", write_then_fill)
    status, _, err = run_mot(train_argv(f"text:{corpus}", "--steps", "30", "--out-dir", str(run)), capsys)
    line = the_error(err)
    failed = re.search(r"writing the step-(\d+) metrics into (\S+) failed \(No space left on device", line)
    assert status == 1 and failed is not None, line
    assert failed.group(2) == str(run / "metrics.jsonl")
    assert "no checkpoint was written yet: free some space and start again with --force." in line
    text = (run / "metrics.jsonl").read_text()  # whole lines only, up to the step before the one that failed
    steps = [json.loads(record)["step"] for record in text.splitlines()]
    assert text.endswith("\n") and steps == list(range(1, int(failed.group(1))))
    assert not temporary_names(run)


def test_final_weights_that_do_not_fit_are_one_sentence(small_disk, corpus, capsys, monkeypatch) -> None:
    run = small_disk / "run"
    fill_after_save(monkeypatch, small_disk, at_step=4, leave=16 << 10)  # the step-4 checkpoint is the last
    status, _, err = run_mot(train_argv(f"text:{corpus}", "--steps", "4", "--out-dir", str(run)), capsys)
    line = the_error(err)
    assert status == 1
    assert f"writing the final weights and summary.json into {run} failed (No space left on device" in line
    assert f"the step-4 checkpoint {run / 'checkpoints' / 'step-0000004'} holds the same weights" in line
    assert not (run / "model.safetensors").exists() and not temporary_names(run)
    assert manifest_problem(run / "checkpoints" / "step-0000004") is None


def test_a_data_cache_that_does_not_fit_is_one_sentence(small_disk, corpus, capsys, monkeypatch) -> None:
    cache = small_disk / "cache"
    monkeypatch.setenv("MOT_CACHE_DIR", str(cache))
    cache.mkdir()
    (cache / "kept.txt").write_text("saved before")
    fill(small_disk, leave=0)
    status, _, err = run_mot(train_argv(f"text:{corpus}", "--steps", "2", "--out-dir", "run"), capsys)
    line = the_error(err)
    assert status == 1
    assert line.startswith("mot train: error: writing the tokenizer and token files into") and str(cache) in line
    assert "(No space left on device, 0.0 MB free there)" in line and "MOT_CACHE_DIR" in line
    assert not temporary_names(cache) and (cache / "kept.txt").read_text() == "saved before"
    assert not Path("run").exists()


def test_a_token_file_that_does_not_fit_leaves_the_tokenizer_and_no_partial_file(
    small_disk, corpus, capsys, monkeypatch
) -> None:
    cache = small_disk / "cache"
    monkeypatch.setenv("MOT_CACHE_DIR", str(cache))
    status, _, _ = run_mot(["data", "prepare", "--source", f"text:{corpus}", "--vocab-size", "300"], capsys)
    assert status == 0
    prepared = tree_digest(cache)
    (train_bin,) = cache.rglob("train.bin")
    train_bin.unlink()  # rebuilt on the next run, with the tokenizer and eval.bin reused
    fill(small_disk, leave=0)
    status, _, err = run_mot(train_argv(f"text:{corpus}", "--steps", "2", "--out-dir", "run"), capsys)
    assert status == 1 and "writing the tokenizer and token files into" in the_error(err)
    assert not temporary_names(cache)
    left = tree_digest(cache)
    assert {k: v for k, v in prepared.items() if not k.endswith("train.bin")} == left


def test_write_failed_words_a_real_enospc_with_the_free_space(tmp_path: Path) -> None:
    if not DEV_FULL.exists():
        pytest.skip("/dev/full is Linux's")
    with pytest.raises(OSError) as raised, DEV_FULL.open("wb", buffering=0) as handle:
        handle.write(b"x")
    assert is_disk_full(raised.value)
    error = write_failed("the notes", tmp_path, raised.value, "nothing else was touched.")
    assert isinstance(error, WriteFailed) and isinstance(error, OSError)
    message = str(error)
    assert message.startswith(f"writing the notes into {tmp_path} failed (No space left on device, ")
    assert message.endswith(" free there); nothing else was touched.") and "\n" not in message


def test_os_errors_turns_torch_and_safetensors_failures_into_the_os_error(tmp_path: Path) -> None:
    if not DEV_FULL.exists():
        pytest.skip("/dev/full is Linux's")
    with pytest.raises(OSError) as raised, DEV_FULL.open("wb") as handle, os_errors(DEV_FULL):
        torch.save({"weights": torch.zeros(1000)}, handle)
    assert is_disk_full(raised.value)
    target = tmp_path / "model.safetensors"
    with pytest.raises(OSError) as raised:
        with os_errors(target):
            raise type("SafetensorError", (Exception,), {})("Error while serializing: I/O error: (os error 28)")
    assert raised.value.errno == 28 and raised.value.filename == str(target)
    save_weights({"w": torch.zeros(4)}, target)  # the real writer still writes
    assert target.is_file() and not temporary_names(tmp_path)
