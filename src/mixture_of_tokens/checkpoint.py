"""Checkpoint directories: everything needed to rebuild a model and its tokenizer.

A checkpoint directory holds
    config.json        {"model": ModelConfig fields, "train": TrainConfig fields, "tokenizer": {...}, ...}
    model.safetensors  the weights
    tokenizer.json     the trained BPE (when the tokenizer is one)
A finished run directory is itself a checkpoint directory (its final weights).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model as load_safetensors_model
from safetensors.torch import save_model as save_safetensors_model

from .config import ModelConfig, TrainConfig
from .data import BPETokenizer, Tokenizer
from .model import Transformer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


def write_json_atomic(path: Path, payload: Any) -> None:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_text(json.dumps(payload, indent=2, default=str))
    temp.replace(path)


def tokenizer_spec(tokenizer: Tokenizer, directory: Path) -> dict[str, Any]:
    """Save what is needed to rebuild `tokenizer` into `directory`; return its description for config.json."""
    if isinstance(tokenizer, BPETokenizer):
        tokenizer.save(directory / TOKENIZER_FILE)
        return {"kind": "bpe", "file": TOKENIZER_FILE, "fingerprint": tokenizer.fingerprint()}
    return {"kind": tokenizer.name, "fingerprint": tokenizer.fingerprint()}


def save_checkpoint(
    directory: Path,
    model: Transformer,
    model_config: ModelConfig,
    train_config: TrainConfig,
    tokenizer: Tokenizer,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write config, weights and tokenizer into `directory` (each file written under a temp name, then renamed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    temp_weights = directory / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
    save_safetensors_model(model, str(temp_weights))
    temp_weights.replace(directory / WEIGHTS_FILE)
    config = {
        "model": dataclasses.asdict(model_config),
        "train": dataclasses.asdict(train_config),
        "tokenizer": tokenizer_spec(tokenizer, directory),
        **(extra or {}),
    }
    write_json_atomic(directory / CONFIG_FILE, config)
    return directory


def read_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a checkpoint directory: it has no {CONFIG_FILE}.")
    return json.loads(path.read_text())


def load_model(directory: Path, device: str | torch.device = "cpu") -> tuple[Transformer, ModelConfig, TrainConfig]:
    """Rebuild the model of a checkpoint (or finished run) directory, in eval mode."""
    directory = Path(directory)
    config = read_config(directory)
    model_config = ModelConfig(**config["model"])
    train_config = TrainConfig(**config["train"])
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{directory} is not a checkpoint directory: it has no {WEIGHTS_FILE}.")
    model = Transformer(model_config)
    load_safetensors_model(model, str(weights), device=str(device))
    return model.to(device).eval(), model_config, train_config


def load_tokenizer(directory: Path) -> Tokenizer:
    """The tokenizer a checkpoint was trained with."""
    spec = read_config(directory).get("tokenizer", {})
    if spec.get("kind") == "bpe":
        return BPETokenizer.load(Path(directory) / spec["file"])
    raise ValueError(f"checkpoint {directory} names tokenizer kind {spec.get('kind')!r}; supported: bpe.")
