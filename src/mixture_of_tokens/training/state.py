"""Training checkpoints: a directory per checkpoint under RUN_DIR/checkpoints/step-NNNNNNN/.

Each holds what `checkpoint.py` writes for a model (config.json, model.safetensors, tokenizer) plus
    trainer_state.pt   optimizer state, data-sampler position, RNG states, step, eval losses so far
    metrics.jsonl      the run's metrics up to this step
    checkpoint.json    the step, the run id and the sha256 of every file above, written last
A checkpoint is written into a temporary directory and renamed into place, so a crash or a full disk mid-write
leaves no half-checkpoint (the temporary directory is removed); a corrupt or truncated one is detected by its
hashes and skipped for the previous good one. Rotation and resume only consider checkpoints of one run id, so
runs that share a directory's history (a resumed branch) never delete or continue each other's checkpoints.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import (
    WEIGHTS_FILE,
    manifest_problem,
    read_config,
    read_manifest,
    read_weights,
    write_manifest,
    write_model_files,
)
from ..data import Tokenizer
from ..files import os_errors
from .run_files import CHECKPOINTS_DIR, METRICS_FILE

STATE_FILE = "trainer_state.pt"
_STEP_PREFIX = "step-"


@dataclass
class TrainingState:
    """What a resumed run needs besides its configs."""

    step: int
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    sampler_state: dict[str, Any]
    rng_state: dict[str, Any]
    eval_losses: dict[int, float] = field(default_factory=dict)


def capture_rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def step_directory_name(step: int, run_id: str | None = None) -> str:
    """`step-0000040`, or `step-0000040-<run id>` when another run's checkpoint already has the plain name."""
    return f"{_STEP_PREFIX}{step:07d}" + (f"-{run_id[:8]}" if run_id else "")


def checkpoint_step(directory: Path) -> int:
    """The step in a checkpoint directory's name."""
    return int(Path(directory).name[len(_STEP_PREFIX) :].split("-")[0])


def checkpoint_run_id(directory: Path) -> str | None:
    """The run id in a checkpoint's manifest (None for checkpoints written before run ids existed)."""
    manifest = read_manifest(directory) or {}
    return manifest.get("run_id")


def is_training_checkpoint(path: Path) -> bool:
    return Path(path).name.startswith(_STEP_PREFIX) or (Path(path) / STATE_FILE).exists()


def list_checkpoints(run_dir: Path, run_id: str | None = None) -> list[Path]:
    """Checkpoint directories of a run directory, oldest first (temporary directories excluded); only those of
    `run_id` when it is given."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_STEP_PREFIX)]
    if run_id is not None:
        found = [p for p in found if checkpoint_run_id(p) == run_id]
    return sorted(found, key=lambda p: (checkpoint_step(p), p.name))


def save_training_checkpoint(
    run_dir: Path,
    state: TrainingState,
    *,
    config: dict[str, Any],
    tokenizer: Tokenizer,
    run_id: str,
    tied_names: tuple[str, ...] = (),
    keep: int = 2,
) -> Path:
    """Write a checkpoint atomically, then delete all but this run's newest `keep`; returns its directory.

    A failed write (e.g. a full disk) removes the temporary directory and raises the OSError behind it (the trainer
    words it: `Checkpointer.write_failed`); the earlier checkpoints are untouched.
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    final = root / step_directory_name(state.step)
    if final.exists() and checkpoint_run_id(final) != run_id:  # another run's checkpoint of the same step
        final = root / step_directory_name(state.step, run_id)
    temp = root / f".tmp-{final.name}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temp, ignore_errors=True)
        temp.mkdir()
        _write_checkpoint_files(temp, Path(run_dir), state, config, tokenizer, tied_names)
        write_manifest(temp, step=state.step, run_id=run_id)
        if final.exists():  # this run re-saving a step (after a resume): replace its own old copy
            shutil.rmtree(final)
        temp.rename(final)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir, run_id)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_checkpoint_files(
    directory: Path,
    run_dir: Path,
    state: TrainingState,
    config: dict[str, Any],
    tokenizer: Tokenizer,
    tied_names: tuple[str, ...],
) -> None:
    write_model_files(directory, state.model_state, config, tokenizer, tied_names=tied_names)
    trainer_state = {
        "step": state.step,
        "optimizer": state.optimizer_state,
        "sampler": state.sampler_state,
        "rng": state.rng_state,
        "eval_losses": state.eval_losses,
    }
    with (directory / STATE_FILE).open("wb") as handle, os_errors(directory / STATE_FILE):
        torch.save(trainer_state, handle)  # into a Python file: a full disk is an OSError, not a bare RuntimeError
    metrics = run_dir / METRICS_FILE
    if metrics.exists():
        shutil.copyfile(metrics, directory / METRICS_FILE)


def _current_run_id(run_dir: Path) -> tuple[str | None, str | None]:
    """(the run id the run directory's config.json names, the checkpoint name it branched from)."""
    try:
        saved = read_config(run_dir)
    except (FileNotFoundError, ValueError):
        return None, None
    return saved.get("run_id"), (saved.get("branched_from") or {}).get("checkpoint")


def resolve_resume_checkpoint(path: Path) -> tuple[Path, list[str]]:
    """The checkpoint to resume from: `path` itself if it is one, else the newest good checkpoint of the run at
    `path` (the run id its config.json names). Bad checkpoints passed over are reported as warnings; none usable
    is one clear error."""
    path = Path(path)
    if is_training_checkpoint(path):
        problem = manifest_problem(path)
        if problem is None:
            return path, []
        older = [c for c in list_checkpoints(path.parent.parent) if checkpoint_step(c) < checkpoint_step(path)]
        hint = f"; the previous checkpoint is {older[-1]}" if older else ""
        raise ValueError(f"cannot resume: {problem}{hint}.")
    run_id, branched_from = _current_run_id(path)
    candidates = list_checkpoints(path, run_id)
    if not candidates and branched_from and (path / CHECKPOINTS_DIR / branched_from).is_dir():
        candidates = [path / CHECKPOINTS_DIR / branched_from]  # a branch killed before its first checkpoint
    if not candidates and run_id is None:
        candidates = list_checkpoints(path)
    if not candidates:
        raise ValueError(
            f"cannot resume: {path} has no checkpoints of its run (expected {path}/{CHECKPOINTS_DIR}/step-*)."
        )
    warnings = []
    for candidate in reversed(candidates):
        problem = manifest_problem(candidate)
        if problem is None:
            return candidate, warnings
        warnings.append(f"skipping {candidate.name}: {problem}")
    raise ValueError(f"cannot resume: no usable checkpoint in {path} ({'; '.join(warnings)}).")


def load_training_state(directory: Path) -> TrainingState:
    """The training state of a verified checkpoint directory (its configs: `checkpoint.read_config`)."""
    payload = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False)
    return TrainingState(
        step=int(payload["step"]),
        model_state=read_weights(directory / WEIGHTS_FILE),
        optimizer_state=payload["optimizer"],
        sampler_state=payload["sampler"],
        rng_state=payload["rng"],
        eval_losses={int(k): float(v) for k, v in payload["eval_losses"].items()},
    )
