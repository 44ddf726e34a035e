"""A refusal names a setting as its caller writes it: `train()` from Python names the argument (`force=True`,
`resume_from='runs/a'`), the `mot` command line names the flag (`--force`, `mot train --resume runs/a`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_runs import error_lines, run_mot, train_argv
from corpus import write_corpus
from helpers import make_checkpoint, tiny_model_config, tiny_train_config

from mixture_of_tokens import train
from mixture_of_tokens.spelling import command_line, setting
from mixture_of_tokens.training.errors import non_finite_message
from mixture_of_tokens.transition import convert_checkpoint


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, module_cache_dir: Path) -> str:
    return f"text:{write_corpus(tmp_path_factory.mktemp('corpus') / 'docs', n_documents=4)}"


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    """A directory holding a run (its config.json is enough for a new run to refuse it)."""
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    return run_dir


def test_setting_spells_arguments_in_python_and_flags_on_the_command_line() -> None:
    assert [setting("force", True), setting("resume_from", "runs/a"), setting("steps", 8)] == [
        "force=True",
        "resume_from='runs/a'",
        "steps=8",
    ]
    with command_line():
        assert [setting("force", True), setting("resume_from", Path("runs/a")), setting("steps", 8)] == [
            "--force",
            "--resume runs/a",
            "--steps 8",
        ]
        assert setting("resume_from", "runs/a", command="train") == "`mot train --resume runs/a`"
        assert [setting("run_name"), setting("out_dir"), setting("target", "x")] == ["--name", "--out-dir", "--to x"]
    assert setting("run_name") == "run_name"  # the command line's spelling ends with its block


def test_python_train_into_an_existing_run_names_force_true(corpus: str, old_run: Path) -> None:
    with pytest.raises(FileExistsError) as refused:
        train(tiny_model_config(), tiny_train_config(corpus, old_run), progress=False)
    message = str(refused.value)
    assert "pass force=True" in message and f"resume_from={str(old_run)!r}" in message
    assert "choose another out_dir or run_name" in message and "--" not in message


def test_mot_train_into_an_existing_run_names_the_flags(corpus: str, old_run: Path, capsys) -> None:
    status, _, err = run_mot(train_argv(corpus, "--out-dir", str(old_run)), capsys)
    assert status == 2 and len(error_lines(err)) == 1
    assert "pass --force" in err and f"`mot train --resume {old_run}`" in err and "--out-dir or --name" in err
    assert "force=True" not in err and "resume_from" not in err


def test_python_resume_refusals_name_the_arguments(corpus: str, old_run: Path) -> None:
    with pytest.raises(ValueError, match=r"^force=True applies to new runs only"):
        train(None, None, resume_from=old_run, force=True, progress=False)
    with pytest.raises(ValueError, match=r"^resume_from and init_from exclude each other"):
        train(None, None, resume_from=old_run, init_from=old_run, progress=False)
    with pytest.raises(ValueError, match=r"^model_config and train_config are required .*resume_from / init_from"):
        train(None, tiny_train_config(corpus), progress=False)
    with pytest.raises(ValueError, match=r"^run_name='a b' is not a valid run name"):
        train(tiny_model_config(), tiny_train_config(corpus), run_name="a b", progress=False)


def test_mot_train_resume_refusals_name_the_flags(old_run: Path, capsys) -> None:
    status, _, err = run_mot(["train", "--resume", str(old_run), "--force"], capsys)
    assert status == 2 and "error: --force applies to new runs only" in err
    status, _, err = run_mot(["train", "--resume", str(old_run), "--init-from", str(old_run)], capsys)
    assert status == 2 and "error: --resume and --init-from exclude each other" in err


def test_the_non_finite_stop_names_lr_as_the_caller_writes_it(tmp_path: Path) -> None:
    assert "a lower lr or a tighter grad_clip" in non_finite_message(5, None, None, 0)
    with command_line():
        assert "a lower --lr or a tighter --grad-clip" in non_finite_message(5, None, None, 0)


def test_python_convert_into_an_existing_directory_names_force_true(tmp_path: Path, cache_dir, capsys) -> None:
    source = make_checkpoint(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match=r"^out='.*' already exists; .*pass force=True"):
        convert_checkpoint(source, out, "token-choice")
    with pytest.raises(ValueError, match=r"^target='switch' is not a conversion target"):
        convert_checkpoint(source, tmp_path / "new", "switch")
    argv = ["convert", "--checkpoint", str(source), "--out", str(out), "--to", "token-choice"]
    status, _, err = run_mot(argv, capsys)
    assert status == 2 and f"--out {out} already exists" in err and "pass --force" in err
