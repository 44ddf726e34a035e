"""One training at a time in a run directory: a second `mot train` (fresh, --force or --resume), `mot convert` or
`mot export` into a directory another process trains in is refused with one sentence before any work, the first
finishes cleanly, and a lock left by a killed process never blocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_runs import TINY_TRAIN_FLAGS, error_lines, run_mot, train_argv, tree_digest
from helpers import make_checkpoint, tiny_model_config, tiny_train_config

from mixture_of_tokens.checkpoint import manifest_problem
from mixture_of_tokens.training.loop import Trainer
from mixture_of_tokens.training.plan import plan_run
from mixture_of_tokens.training.run_lock import LOCK_FILE, RunDirectoryInUse, RunLock, training_pid
from mixture_of_tokens.training.state import list_checkpoints

HOLDER = (
    "import sys; from pathlib import Path; from mixture_of_tokens.training.run_lock import RunLock; "
    "lock = RunLock(); lock.acquire(Path(sys.argv[1])); print('locked', flush=True); sys.stdin.read()"
)
"""Another process holding a run directory's lock until its stdin closes (as a training would)."""


@contextmanager
def held_by_another_process(directory: Path) -> Iterator[subprocess.Popen]:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)


def _training_process(flags: list[str], cache: Path) -> subprocess.Popen:
    """`mot train FLAGS` in its own process."""
    env = {**os.environ, "MOT_CACHE_DIR": str(cache)}
    command = [sys.executable, "-m", "mixture_of_tokens.cli", "train", *flags]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _in_use(err: str, pid: int) -> bool:
    lines = error_lines(err)
    return len(lines) == 1 and f"is in use by another training (pid {pid})" in lines[0] and "Traceback" not in err


def test_a_training_into_a_locked_directory_is_refused_before_any_data(corpus, tmp_path, monkeypatch, capsys) -> None:
    run_dir, fresh_cache = tmp_path / "run", tmp_path / "fresh-cache"
    monkeypatch.setenv("MOT_CACHE_DIR", str(fresh_cache))
    argv = train_argv(corpus["source"], "--steps", "2", "--out-dir", str(run_dir))
    with held_by_another_process(run_dir) as holder:
        status, _, err = run_mot(argv, capsys)
        assert status == 2 and _in_use(err, holder.pid)
        assert not fresh_cache.exists()  # refused before the tokenizer or token files
        assert [p.name for p in run_dir.iterdir()] == [LOCK_FILE]
    assert run_mot(argv, capsys)[0] == 0  # released: the same command now trains
    assert not (run_dir / LOCK_FILE).exists() and (run_dir / "summary.json").exists()


def test_the_trainer_takes_the_lock_itself_after_planning(corpus, tmp_path) -> None:
    config = tiny_train_config(corpus["source"], tmp_path / "run", steps=2)
    plan = plan_run(tiny_model_config(), config)  # planned while the directory was free
    with held_by_another_process(tmp_path / "run") as holder:
        with pytest.raises(RunDirectoryInUse, match=f"pid {holder.pid}"):
            Trainer.from_plan(plan, data=corpus["data"], progress=False)
    trainer = Trainer.from_plan(plan, data=corpus["data"], progress=False)
    assert training_pid(tmp_path / "run") == str(os.getpid())  # held from setup to the end of the run
    trainer.run()
    assert training_pid(tmp_path / "run") is None and not (tmp_path / "run" / LOCK_FILE).exists()


def test_a_failed_setup_releases_the_lock_and_leaves_no_directory(corpus, tmp_path, monkeypatch) -> None:
    def fail(self, plan):
        assert training_pid(plan.run_dir) == str(os.getpid())
        raise KeyboardInterrupt  # e.g. Ctrl-C while the model is built

    monkeypatch.setattr(Trainer, "_build_model", fail)
    with pytest.raises(KeyboardInterrupt):
        Trainer(tiny_model_config(), tiny_train_config(corpus["source"], tmp_path / "run"), data=corpus["data"])
    assert not (tmp_path / "run").exists()


def test_a_lock_left_by_a_killed_process_does_not_block(tmp_path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert holder.stdout.readline().strip() == b"locked"
    assert training_pid(tmp_path / "run") == str(holder.pid)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    assert (tmp_path / "run" / LOCK_FILE).exists()  # the file stays, the lock went with the process
    assert training_pid(tmp_path / "run") is None
    with RunLock() as lock:
        lock.acquire(tmp_path / "run")
        assert training_pid(tmp_path / "run") == str(os.getpid())


def test_two_real_trainings_into_one_directory(corpus, module_cache_dir, tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    flags = [*TINY_TRAIN_FLAGS, "--data", corpus["source"], "--steps", "60", "--checkpoint-every", "20",
             "--threads", "1", "--out-dir", str(run_dir)]  # fmt: skip
    first = _training_process(flags, module_cache_dir)
    deadline = time.time() + 120
    while training_pid(run_dir) is None and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    status, _, err = run_mot(["train", *flags], capsys)  # the second, while the first trains
    _, first_err = first.communicate(timeout=240)
    assert first.returncode == 0, first_err
    assert status == 2 and _in_use(err, first.pid)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 61))
    assert all(manifest_problem(c) is None for c in list_checkpoints(run_dir))
    assert json.loads((run_dir / "summary.json").read_text())["final_eval_loss"] is not None


def test_two_trainings_started_at_once(corpus, module_cache_dir, tmp_path) -> None:
    """The race of the report: both plan while the directory is empty; one trains, the other is refused."""
    run_dir = tmp_path / "run"
    flags = [*TINY_TRAIN_FLAGS, "--data", corpus["source"], "--steps", "30", "--checkpoint-every", "10",
             "--threads", "1", "--out-dir", str(run_dir)]  # fmt: skip
    both = [_training_process(flags, module_cache_dir) for _ in range(2)]
    errs = [p.communicate(timeout=240)[1] for p in both]
    results = sorted((p.returncode, err) for p, err in zip(both, errs, strict=True))
    (ok, _), (refused, err) = results
    assert (ok, refused) == (0, 2), results
    assert len(error_lines(err)) == 1 and ("is in use by another training" in err or "already holds a run" in err)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 31))
    assert all(manifest_problem(c) is None for c in list_checkpoints(run_dir))


def test_force_resume_convert_and_export_into_a_locked_run_are_refused(corpus, tmp_path, capsys) -> None:
    run_dir = tmp_path / "run"
    argv = train_argv(corpus["source"], "--steps", "2", "--out-dir", str(run_dir))
    assert run_mot(argv, capsys)[0] == 0
    source = make_checkpoint(tmp_path)
    with held_by_another_process(run_dir) as holder:
        before = tree_digest(tmp_path)
        for command in (
            [*argv, "--force"],
            ["train", "--resume", str(run_dir), "--steps", "4"],
            ["convert", "--checkpoint", str(source), "--to", "token-choice", "--out", str(run_dir), "--force"],
            ["export", "--checkpoint", str(source), "--to", "hf", "--out", str(run_dir), "--force"],
        ):
            if command[0] == "export":
                pytest.importorskip("transformers")
            status, _, err = run_mot(command, capsys)
            assert status == 2 and _in_use(err, holder.pid), (command[0], err)
            assert tree_digest(tmp_path) == before  # nothing moved, written or deleted
