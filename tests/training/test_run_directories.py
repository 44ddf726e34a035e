"""A run writes only into its own directory: --resume DIR writes into DIR, a new run never replaces another,
--force moves the old run aside, resuming an older checkpoint branches without deleting anything, checkpoints
carry a run id that rotation and resume respect, and `mot convert`'s next command is safe to paste."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from cli_runs import error_lines, run_mot, train_argv, tree_digest
from corpus import write_corpus

from mixture_of_tokens.checkpoint import read_config, read_manifest
from mixture_of_tokens.training.state import (
    TrainingState,
    checkpoint_run_id,
    list_checkpoints,
    resolve_resume_checkpoint,
    save_training_checkpoint,
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, module_cache_dir: Path) -> str:
    return f"text:{write_corpus(tmp_path_factory.mktemp('corpus') / 'docs', n_documents=20)}"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _train(corpus: str, capsys, *flags: str) -> tuple[int, str, str]:
    return run_mot(train_argv(corpus, *flags), capsys)


def _resume(target: str, steps: int, capsys, *flags: str) -> tuple[int, str, str]:
    return run_mot(["train", "--resume", target, "--steps", str(steps), *flags], capsys)


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def test_resume_writes_into_the_directory_it_is_given_never_the_saved_one(corpus, workdir, capsys) -> None:
    assert _train(corpus, capsys, "--steps", "4", "--checkpoint-every", "2", "--out-dir", "A")[0] == 0
    shutil.copytree(workdir / "A", workdir / "A2")
    before = tree_digest(workdir / "A")
    assert _resume("A2", 6, capsys)[0] == 0
    assert tree_digest(workdir / "A") == before  # the original run is untouched
    assert _summary(workdir / "A2")["resumed_from_step"] == 4
    assert max(r["step"] for r in map(json.loads, (workdir / "A2" / "metrics.jsonl").read_text().splitlines())) == 6

    (workdir / "A2").rename(workdir / "B_moved")
    assert _resume("B_moved", 8, capsys)[0] == 0
    assert not (workdir / "A2").exists()  # never recreated from a path in the saved config
    assert _summary(workdir / "B_moved")["resumed_from_step"] == 6


def test_a_new_run_never_replaces_another_and_force_moves_it_aside(corpus, workdir, capsys) -> None:
    assert _train(corpus, capsys, "--steps", "2", "--name", "first")[0] == 0
    before = tree_digest(workdir / "runs" / "first")
    status, _, err = _train(corpus, capsys, "--steps", "3", "--name", "first")
    assert status == 2 and len(error_lines(err)) == 1 and "Traceback" not in err
    assert "already holds a run" in err and "--force" in err
    assert tree_digest(workdir / "runs" / "first") == before

    assert _train(corpus, capsys, "--steps", "3", "--name", "first", "--force")[0] == 0
    (aside,) = (workdir / "runs").glob("first.old-*")
    assert tree_digest(aside) == before  # moved whole, not mixed with the new run
    assert _summary(workdir / "runs" / "first")["counts"] and len(list_checkpoints(workdir / "runs" / "first")) == 1


def test_a_non_empty_directory_without_a_run_is_refused(corpus, workdir, capsys) -> None:
    (workdir / "notes").mkdir()
    (workdir / "notes" / "todo.txt").write_text("precious")
    status, _, err = _train(corpus, capsys, "--steps", "2", "--out-dir", "notes", "--force")
    assert status == 2 and "holds no run" in err
    assert [p.name for p in (workdir / "notes").iterdir()] == ["todo.txt"]


def test_every_checkpoint_and_the_run_carry_the_run_id(corpus, workdir, capsys) -> None:
    assert _train(corpus, capsys, "--steps", "4", "--checkpoint-every", "2", "--keep-checkpoints", "5")[0] == 0
    run_dir = workdir / "runs" / "tiny-mot"
    run_id = read_config(run_dir)["run_id"]
    assert len(run_id) == 32 and _summary(run_dir)["run_id"] == run_id
    checkpoints = list_checkpoints(run_dir)
    assert [c.name for c in checkpoints] == ["step-0000002", "step-0000004"]
    assert all(read_manifest(c)["run_id"] == run_id == read_config(c)["run_id"] for c in checkpoints)


def test_resuming_an_older_checkpoint_branches_and_deletes_nothing(corpus, workdir, capsys) -> None:
    flags = ("--checkpoint-every", "2", "--keep-checkpoints", "2", "--out-dir", "R")
    assert _train(corpus, capsys, "--steps", "6", *flags)[0] == 0
    run_dir = workdir / "R"
    old_id = read_config(run_dir)["run_id"]
    old_files = tree_digest(run_dir / "checkpoints")
    assert sorted(old_files) and [c.name for c in list_checkpoints(run_dir)] == ["step-0000004", "step-0000006"]

    assert _resume("R/checkpoints/step-0000004", 8, capsys)[0] == 0
    new_id = read_config(run_dir)["run_id"]
    assert new_id != old_id and read_config(run_dir)["branched_from"]["step"] == 4
    # the checkpoint resumed from stays; the abandoned step-6 checkpoint and final files were moved, not deleted
    assert checkpoint_run_id(run_dir / "checkpoints" / "step-0000004") == old_id
    (superseded,) = (run_dir / "superseded").iterdir()
    assert tree_digest(superseded / "checkpoints" / "step-0000006") == {
        name.removeprefix("step-0000006/"): digest for name, digest in old_files.items() if "step-0000006" in name
    }
    assert (superseded / "model.safetensors").is_file() and (superseded / "summary.json").is_file()
    assert [c.name for c in list_checkpoints(run_dir, new_id)] == ["step-0000006", "step-0000008"]
    assert resolve_resume_checkpoint(run_dir)[0].name == "step-0000008"  # the branch is the run now


def test_resume_with_steps_at_or_below_the_checkpoint_is_refused(corpus, workdir, capsys) -> None:
    assert _train(corpus, capsys, "--steps", "4", "--checkpoint-every", "2", "--out-dir", "S")[0] == 0
    before = tree_digest(workdir / "S")
    for steps in (4, 2):
        status, _, err = _resume("S", steps, capsys)
        assert status == 2 and len(error_lines(err)) == 1 and "steps > 4" in err
    assert tree_digest(workdir / "S") == before


def test_resume_refuses_another_out_dir(corpus, workdir, capsys) -> None:
    assert _train(corpus, capsys, "--steps", "2", "--checkpoint-every", "2", "--out-dir", "T")[0] == 0
    status, _, err = _resume("T", 4, capsys, "--out-dir", "elsewhere")
    assert status == 2 and "--init-from" in err and not (workdir / "elsewhere").exists()


def test_resume_refuses_init_from_and_a_preset(corpus, workdir, capsys) -> None:
    assert _train(corpus, capsys, "--steps", "2", "--out-dir", "P")[0] == 0
    before = tree_digest(workdir / "P")
    for flags, message in (
        (("--init-from", "P"), "--resume and --init-from exclude each other"),
        (("--preset", "tiny-mot"), "--preset does not apply to --resume"),
    ):
        status, _, err = _resume("P", 4, capsys, *flags)
        assert status == 2 and len(error_lines(err)) == 1 and message in err, err
    assert tree_digest(workdir / "P") == before


def test_bad_run_names_are_refused_before_anything(corpus, workdir, capsys) -> None:
    for name in ("../../x", "a/b", ".hidden", "x" * 101):
        status, _, err = _train(corpus, capsys, "--steps", "2", "--name", name)
        assert status == 2 and len(error_lines(err)) == 1 and "--name" in err
    assert list(workdir.iterdir()) == []


def test_convert_prints_a_next_command_that_never_trains_into_the_source(corpus, workdir, capsys) -> None:
    assert _train(corpus, capsys, "--steps", "2", "--out-dir", "X")[0] == 0
    source_before = tree_digest(workdir / "X")
    status, out, _ = run_mot(["convert", "--checkpoint", "X", "--to", "token-choice", "--out", "X-tc"], capsys)
    assert status == 0
    command = out.split("continue training with: mot ")[1].split()
    assert "--name" in command or "--out-dir" in command
    argv = [word if word != "N" else "4" for word in command]
    assert run_mot([*argv, "--device", "cpu", "--eval-batches", "1"], capsys)[0] == 0
    assert tree_digest(workdir / "X") == source_before
    (continued,) = [p for p in (workdir / "runs").iterdir()]
    assert read_config(continued)["model"]["ffn"] == "token_choice" and _summary(continued)["final_eval_loss"]


def test_export_never_deletes_the_run_it_exports_from_and_moves_an_old_export_aside(corpus, workdir, capsys) -> None:
    pytest.importorskip("transformers")
    assert _train(corpus, capsys, "--steps", "2", "--out-dir", "E")[0] == 0
    before = tree_digest(workdir / "E")
    (checkpoint,) = list_checkpoints(workdir / "E")
    for source in ("E", str(checkpoint)):  # the run itself, or a checkpoint inside it
        status, _, err = run_mot(["export", "--checkpoint", source, "--to", "hf", "--out", "E", "--force"], capsys)
        assert status == 2 and len(error_lines(err)) == 1 and "the source is never overwritten or moved" in err
    assert tree_digest(workdir / "E") == before

    (workdir / "hf").mkdir()
    (workdir / "hf" / "notes.txt").write_text("precious")
    assert run_mot(["export", "--checkpoint", "E", "--to", "hf", "--out", "hf", "--force"], capsys)[0] == 0
    (aside,) = workdir.glob("hf.old-*")
    assert (aside / "notes.txt").read_text() == "precious" and (workdir / "hf" / "modeling_mot.py").is_file()


def test_convert_force_moves_an_existing_run_aside_instead_of_mixing_with_it(corpus, workdir, capsys) -> None:
    assert _train(corpus, capsys, "--steps", "2", "--out-dir", "M")[0] == 0
    assert _train(corpus, capsys, "--steps", "2", "--out-dir", "old", "--seed", "1")[0] == 0
    old_run = tree_digest(workdir / "old")
    argv = ["convert", "--checkpoint", "M", "--to", "token-choice", "--out", "old", "--force"]
    assert run_mot(argv, capsys)[0] == 0
    (aside,) = workdir.glob("old.old-*")
    assert tree_digest(aside) == old_run  # moved whole
    assert sorted(p.name for p in (workdir / "old").iterdir()) == [
        "checkpoint.json", "config.json", "model.safetensors", "tokenizer.json",
    ]  # fmt: skip
    status, _, err = _resume("old", 4, capsys)  # nothing of the old run to go back to
    assert status == 2 and "has no checkpoints" in err
    (checkpoint,) = list_checkpoints(workdir / "M")
    before = tree_digest(workdir / "M")
    status, _, err = run_mot(["convert", "--checkpoint", str(checkpoint), "--to", "token-choice", "--out", "M",
                              "--force"], capsys)  # fmt: skip
    assert status == 2 and "the source is never overwritten or moved" in err
    assert tree_digest(workdir / "M") == before


def _state(step: int) -> TrainingState:
    weights = {"w": torch.full((2,), float(step))}
    return TrainingState(step, weights, {}, {}, {"torch": torch.get_rng_state()})


def test_rotation_and_resume_only_consider_the_runs_own_checkpoints(tmp_path: Path, monkeypatch) -> None:
    from mixture_of_tokens import checkpoint

    monkeypatch.setattr(checkpoint, "tokenizer_spec", lambda tokenizer, directory: {"kind": "none"})
    first, second = "a" * 32, "b" * 32
    for run_id, step in ((first, 10), (second, 2), (second, 4)):
        config = {"model": {}, "run_id": run_id}
        save_training_checkpoint(tmp_path, _state(step), config=config, tokenizer=None, run_id=run_id, keep=1)
    # rotation (keep=1) deleted the second run's step 2 only; the first run's step 10 stays
    assert [(c.name, checkpoint_run_id(c)) for c in list_checkpoints(tmp_path)] == [
        ("step-0000004", second),
        ("step-0000010", first),
    ]
    (tmp_path / "config.json").write_text(json.dumps({"model": {}, "run_id": second}))
    assert resolve_resume_checkpoint(tmp_path)[0].name == "step-0000004"  # not the other run's higher step
