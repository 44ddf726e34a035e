"""Files this package writes get the mode of any new file (0o666 less the umask: 0644 under umask 022), also where
a library creates them 0600 (safetensors writes through a temporary file readable by its owner only). Exports are
checked in test_export_hf.py and test_export_native.py; this file checks the helper and training run directories."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from mixture_of_tokens.files import usual_file_mode


@pytest.fixture
def umask_022() -> Iterator[int]:
    """The usual umask for the test, the process's own put back afterwards."""
    previous = os.umask(0o022)
    try:
        yield 0o022
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_usual_file_mode_gives_a_safetensors_file_the_mode_of_a_new_file(tmp_path, umask_022) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    assert _mode(path) == 0o600  # what safetensors leaves: the reason for the helper
    usual_file_mode(path)
    assert _mode(path) == 0o644
    os.umask(0o027)  # a stricter umask is respected, as open() respects it
    usual_file_mode(path)
    assert _mode(path) == 0o640
    assert os.umask(0o022) == 0o027  # reading the umask left it as it was


def test_a_training_run_directory_and_its_checkpoints_have_the_usual_modes(trainer_factory, umask_022) -> None:
    trainer = trainer_factory(steps=2, checkpoint_every=1)
    trainer.run()
    modes = {
        str(path.relative_to(trainer.out_dir)): _mode(path) for path in trainer.out_dir.rglob("*") if path.is_file()
    }
    assert "model.safetensors" in modes and any(name.startswith("checkpoints/") for name in modes), modes
    assert {name: mode for name, mode in modes.items() if mode != 0o644} == {}
