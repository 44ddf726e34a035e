"""Training checkpoints: a directory per checkpoint under RUN_DIR/checkpoints/step-NNNNNNN/.

Each holds what `checkpoint.py` writes for a model (config.json, model.safetensors, tokenizer) plus
    trainer_state.pt   optimizer state, data-sampler position, RNG states, step, eval losses so far
    metrics.jsonl      the run's metrics up to this step
    checkpoint.json    step and the sha256 of every file above, written last
A checkpoint is written into a temporary directory and renamed into place, so a crash mid-write leaves no
half-checkpoint; a corrupt or truncated one is detected by its hashes and skipped for the previous good one.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    read_weights,
    save_weights,
    tokenizer_spec,
    write_json_atomic,
)
from ..files import sha256_file

CHECKPOINTS_DIR = "checkpoints"
STATE_FILE = "trainer_state.pt"
METRICS_FILE = "metrics.jsonl"
MANIFEST_FILE = "checkpoint.json"


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


def step_directory_name(step: int) -> str:
    return f"step-{step:07d}"


def save_training_checkpoint(
    run_dir: Path,
    state: TrainingState,
    *,
    config: dict[str, Any],
    tokenizer,
    tied_names: tuple[str, ...] = (),
    keep: int = 2,
) -> Path:
    """Write a checkpoint atomically and delete all but the newest `keep`; returns its directory."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / step_directory_name(state.step)
    temp = root / f".tmp-{final.name}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir()
    save_weights(state.model_state, temp / WEIGHTS_FILE, tied_names=tied_names)
    torch.save(
        {
            "step": state.step,
            "optimizer": state.optimizer_state,
            "sampler": state.sampler_state,
            "rng": state.rng_state,
            "eval_losses": state.eval_losses,
        },
        temp / STATE_FILE,
    )
    write_json_atomic(temp / CONFIG_FILE, {**config, "tokenizer": tokenizer_spec(tokenizer, temp)})
    metrics = Path(run_dir) / METRICS_FILE
    if metrics.exists():
        shutil.copyfile(metrics, temp / METRICS_FILE)
    files = sorted(p.name for p in temp.iterdir() if p.is_file())
    write_json_atomic(temp / MANIFEST_FILE, {"step": state.step, "sha256": {n: sha256_file(temp / n) for n in files}})
    if final.exists():  # re-saving a step after a resume: replace the old copy
        shutil.rmtree(final)
    temp.rename(final)
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint directories of a run, oldest first (temporary directories excluded)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def checkpoint_problem(directory: Path) -> str | None:
    """None for a complete checkpoint, else one sentence saying what is wrong with it."""
    manifest_path = directory / MANIFEST_FILE
    if not manifest_path.is_file():
        return f"{directory} has no {MANIFEST_FILE} (an incomplete checkpoint)"
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError:
        return f"{directory}/{MANIFEST_FILE} is not valid JSON"
    for name, expected in manifest.get("sha256", {}).items():
        path = directory / name
        if not path.is_file():
            return f"{path} is missing"
        if sha256_file(path) != expected:
            return f"{path} does not match its recorded sha256 (truncated or corrupt)"
    return None


def resolve_resume_checkpoint(path: Path) -> tuple[Path, list[str]]:
    """The checkpoint to resume from: `path` itself if it is one, else the newest good checkpoint of the run at
    `path`. Bad checkpoints passed over are reported as warnings; none usable is one clear error."""
    path = Path(path)
    if (path / MANIFEST_FILE).exists() or path.name.startswith("step-"):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, []
        older = [c for c in list_checkpoints(path.parent.parent) if c.name < path.name]
        hint = f"; the previous checkpoint is {older[-1]}" if older else ""
        raise ValueError(f"cannot resume: {problem}{hint}.")
    candidates = list_checkpoints(path)
    if not candidates:
        raise ValueError(f"cannot resume: {path} has no checkpoints (expected {path}/{CHECKPOINTS_DIR}/step-*).")
    warnings = []
    for candidate in reversed(candidates):
        problem = checkpoint_problem(candidate)
        if problem is None:
            return candidate, warnings
        warnings.append(f"skipping {candidate.name}: {problem}")
    raise ValueError(f"cannot resume: no usable checkpoint in {path} ({'; '.join(warnings)}).")


def load_training_checkpoint(directory: Path) -> tuple[dict[str, Any], TrainingState]:
    """(config.json contents, training state) of a verified checkpoint directory."""
    config = json.loads((directory / CONFIG_FILE).read_text())
    payload = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False)
    state = TrainingState(
        step=int(payload["step"]),
        model_state=read_weights(directory / WEIGHTS_FILE),
        optimizer_state=payload["optimizer"],
        sampler_state=payload["sampler"],
        rng_state=payload["rng"],
        eval_losses={int(k): float(v) for k, v in payload["eval_losses"].items()},
    )
    return config, state
