"""Loading a checkpoint and its text for evaluation or generation, with one-sentence errors for bad input."""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import load_model, load_tokenizer, read_config
from ..config import ModelConfig, TrainConfig
from ..data import Tokenizer, prepare_data
from ..files import write_json_atomic
from ..model import Transformer, set_inference_routing
from ..runtime.devices import resolve_device
from ..spelling import setting

__all__ = ["LoadedCheckpoint", "check_results_destination", "load_checkpoint", "load_texts", "write_results"]


@dataclass
class LoadedCheckpoint:
    directory: Path
    model: Transformer
    model_config: ModelConfig
    train_config: TrainConfig
    tokenizer: Tokenizer
    device: torch.device


def load_checkpoint(directory: Path | str, device: str = "auto", dtype: torch.dtype | None = None) -> LoadedCheckpoint:
    """Model (eval mode), configs and tokenizer of a checkpoint directory; a clear error when it is not one."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"checkpoint {directory} does not exist (expected a run or checkpoint directory).")
    torch_device = resolve_device(device)
    read_config(directory)  # the not-a-checkpoint error comes first
    try:
        model, model_config, train_config = load_model(directory, device=torch_device)
        tokenizer = load_tokenizer(directory)
    except (FileNotFoundError, ValueError):
        raise
    except (TypeError, KeyError, RuntimeError, json.JSONDecodeError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(
            f"checkpoint {directory} is incompatible with this version of mixture-of-tokens ({reason})."
        ) from None
    if dtype is not None:
        model = model.to(dtype)
    set_inference_routing(model)
    return LoadedCheckpoint(directory, model, model_config, train_config, tokenizer, torch_device)


def load_texts(loaded: LoadedCheckpoint, *, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(train tokens, held-out tokens) of the checkpoint's data source, encoded with the checkpoint's tokenizer."""
    data = prepare_data(
        loaded.train_config.data,
        vocab_size=loaded.model_config.vocab_size,
        progress=progress,
        tokenizer=loaded.train_config.tokenizer,
        text_column=loaded.train_config.text_column,
    )
    if data.tokenizer.fingerprint() != loaded.tokenizer.fingerprint():
        raise ValueError(
            f"the cached data for source {loaded.train_config.data!r} was encoded with another tokenizer than "
            f"checkpoint {loaded.directory}; evaluate on the machine and data cache it was trained with."
        )
    return data.train_tokens, data.eval_tokens


def results_path(directory: Path, out: Path | None = None) -> Path:
    """Where results go: `out`, else eval-<timestamp>.json next to the checkpoint."""
    return Path(out) if out is not None else Path(directory) / f"eval-{time.strftime('%Y%m%d-%H%M%S')}.json"


def check_results_destination(directory: Path, out: Path | None = None) -> None:
    """Fail with one sentence, before any scoring, when the results file could not be written there."""
    path = results_path(directory, out)
    if path.is_dir():
        raise ValueError(f"{setting('out', path)} is a directory; give the path of a .json file to write.")
    ancestor = path.parent.absolute()
    while not ancestor.exists():
        ancestor = ancestor.parent
    try:
        if not ancestor.is_dir():
            raise NotADirectoryError(20, "Not a directory")
        with tempfile.NamedTemporaryFile(dir=ancestor, prefix=".mot-write-probe-"):
            pass
    except OSError as error:
        raise ValueError(
            f"{setting('out', path)} cannot be written ({ancestor}: {error.strerror or error}); choose another "
            f"{setting('out')}."
        ) from None


def write_results(directory: Path, payload: dict[str, Any], out: Path | None = None) -> Path:
    """Write results as JSON next to the checkpoint (eval-<timestamp>.json) unless a path is given."""
    path = results_path(directory, out)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, payload)
    return path
