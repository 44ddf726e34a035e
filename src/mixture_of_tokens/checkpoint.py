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
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig, TrainConfig
from .data import BPETokenizer, GPT2Tokenizer, Tokenizer, load_gpt2
from .files import atomic_path, write_json_atomic
from .model import Transformer

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"


def save_weights(state_dict: dict[str, torch.Tensor], path: Path, *, tied_names: tuple[str, ...] = ()) -> None:
    """safetensors file of a (full, CPU) state dict, written under a temp name then renamed. Names in
    `tied_names` (weights tied to another entry, e.g. a tied output head) are not stored twice."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in state_dict.items() if name not in tied_names}
    with atomic_path(path) as temp:
        save_file(tensors, str(temp))


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a safetensors file; a truncated or corrupt file is one clear error."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"weights file {path} cannot be read ({error}); it is truncated or corrupt.") from None


def tied_parameter_names(model: Transformer) -> tuple[str, ...]:
    return ("head.weight",) if model.config.tie_embeddings else ()


def load_weights_into(model: Transformer, weights: dict[str, torch.Tensor]) -> None:
    """Load a full state dict (tied weights may be absent) into a plain model; every other name must match."""
    weights = dict(weights)
    if model.config.tie_embeddings and "head.weight" not in weights and "token_embedding.weight" in weights:
        weights["head.weight"] = weights["token_embedding.weight"]
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint weights do not fit the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}."
        )


def tokenizer_spec(tokenizer: Tokenizer, directory: Path) -> dict[str, Any]:
    """Save what is needed to rebuild `tokenizer` into `directory`; return its description for config.json."""
    if isinstance(tokenizer, BPETokenizer):
        tokenizer.save(directory / TOKENIZER_FILE)
        return {"kind": "bpe", "file": TOKENIZER_FILE, "fingerprint": tokenizer.fingerprint()}
    if isinstance(tokenizer, GPT2Tokenizer):  # nothing to save: the ranks file ships with the package
        return {"kind": "gpt2", "fingerprint": tokenizer.fingerprint()}
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
    save_weights(model.state_dict(), directory / WEIGHTS_FILE, tied_names=tied_parameter_names(model))
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
    load_weights_into(model, read_weights(weights))
    return model.to(device).eval(), model_config, train_config


def load_tokenizer(directory: Path) -> Tokenizer:
    """The tokenizer a checkpoint was trained with."""
    spec = read_config(directory).get("tokenizer", {})
    if spec.get("kind") == "bpe":
        return BPETokenizer.load(Path(directory) / spec["file"])
    if spec.get("kind") == "gpt2":
        return load_gpt2()
    raise ValueError(f"checkpoint {directory} names tokenizer kind {spec.get('kind')!r}; supported: bpe, gpt2.")
