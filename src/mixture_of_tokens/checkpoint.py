"""Checkpoint directories: everything needed to rebuild a model and its tokenizer.

A checkpoint directory holds
    config.json        {"model": ModelConfig fields, "train": TrainConfig fields, "tokenizer": {...}, ...}
    model.safetensors  the weights
    tokenizer.json     the trained BPE (when the tokenizer is one)
    checkpoint.json    the sha256 of the weights, tokenizer and config files (training checkpoints: of every file,
                       plus the step and the run id), written last and checked on load
A finished run directory is itself a checkpoint directory (its final weights). `read_config` and `write_config`
are the only reader and writer of config.json (`read_config` checks its sha256 wherever checkpoint.json records
one, so an edited setting never silently changes what a checkpoint computes); `write_manifest` and
`manifest_problem` the only writer and checker of checkpoint.json. Directories written before config.json was
recorded load without that check.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .config import ModelConfig, TrainConfig
from .config_renames import renamed_settings
from .data import BPETokenizer, GPT2Tokenizer, Tokenizer, load_gpt2
from .files import atomic_path, os_errors, sha256_file, temporary_path, usual_file_mode, write_json_atomic
from .model import Transformer
from .spelling import setting, uses_flags

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "checkpoint.json"


def save_weights(state_dict: dict[str, torch.Tensor], path: Path, *, tied_names: tuple[str, ...] = ()) -> None:
    """safetensors file of a (full, CPU) state dict, written under a temp name then renamed. Names in
    `tied_names` (weights tied to another entry, e.g. a tied output head) are not stored twice. A failed write (a
    full disk) is the OSError behind it, the temp file removed."""
    tensors = {name: t.detach().cpu().contiguous() for name, t in state_dict.items() if name not in tied_names}
    with atomic_path(path) as temp, os_errors(path):
        save_file(tensors, str(temp))
        usual_file_mode(temp)  # safetensors creates its file 0600


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


def config_payload(model_config: ModelConfig, train_config: TrainConfig, **extra: Any) -> dict[str, Any]:
    """The contents of config.json: both configs as plain fields, plus anything else the writer records."""
    return {"model": dataclasses.asdict(model_config), "train": dataclasses.asdict(train_config), **extra}


def write_config(directory: Path, payload: dict[str, Any]) -> None:
    """Write config.json into `directory` (under a temp name, then renamed)."""
    write_json_atomic(Path(directory) / CONFIG_FILE, payload)


class ConfigFileError(ValueError):
    """A config.json this package cannot read as a checkpoint's settings; the message names the file and what is
    wrong with it (the command line prints it as one sentence)."""


class SavedConfig(dict):
    """The contents of a config.json, remembering the file they were read from (named by `saved_configs`)."""

    path: Path | None = None


def read_config(directory: Path) -> SavedConfig:
    """The contents of a checkpoint's config.json. A missing file is FileNotFoundError; an edited (sha256), empty or
    non-JSON file is one ConfigFileError naming it. What it holds (a checkpoint's settings, not a transformers
    config) is checked by `saved_configs`, so reports can still read the files of runs written by older versions."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a checkpoint directory: it has no {CONFIG_FILE}.")
    recorded = (read_manifest(directory) or {}).get("sha256", {}).get(CONFIG_FILE)
    if recorded is not None and sha256_file(path) != recorded:
        raise ConfigFileError(
            f"{path} does not match its recorded sha256 in {MANIFEST_FILE} (edited, truncated or corrupt); a "
            "checkpoint's settings are those its weights were saved with: restore the file (a setting that keeps "
            f"every weight's shape can be changed for a new run started with {setting('init_from', command='train')})."
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigFileError(f"{path} cannot be read ({error}); it is truncated or corrupt.") from None
    if not text.strip():
        raise ConfigFileError(f"{path} is empty; a checkpoint's config.json holds its model and training settings.")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigFileError(f"{path} is not valid JSON ({error}); it is truncated or corrupt.") from None
    if not isinstance(payload, dict):
        raise ConfigFileError(f"{path} is not a checkpoint config (a JSON object of settings).")
    config = SavedConfig(payload)
    config.path = path
    return config


def saved_configs(payload: dict[str, Any]) -> tuple[ModelConfig, TrainConfig]:
    """The model and training configs recorded in a config.json payload; a transformers config.json, an unknown or
    an invalid setting is one ConfigFileError naming the file (when the payload came from `read_config`)."""
    where = str(getattr(payload, "path", None) or CONFIG_FILE)
    if "model" not in payload and ("model_type" in payload or "architectures" in payload):
        raise ConfigFileError(
            f"{where} is a Hugging Face transformers config (a `mot export` directory or another model), not a "
            "mixture-of-tokens checkpoint; pass the run or checkpoint directory it was exported from (transformers "
            "loads this one with from_pretrained)."
        )
    if "model" not in payload:
        raise ConfigFileError(f'{where} has no "model" settings; it is not a mixture-of-tokens checkpoint config.')
    built = []
    for key, config_class in (("model", ModelConfig), ("train", TrainConfig)):
        fields = payload.get(key, {})
        if not isinstance(fields, dict):
            raise ConfigFileError(f"{where} has {key} settings that are not a JSON object.")
        fields = renamed_settings(fields)
        known = {field.name for field in dataclasses.fields(config_class)}
        unknown = sorted(set(fields) - known)
        if unknown:
            known_settings = "`mot train --help`" if uses_flags() else f"{config_class.__name__}'s fields"
            raise ConfigFileError(
                f"{where} names an unknown {key} setting {unknown[0]!r} (it was edited, or written by another version "
                f"of mixture-of-tokens); {known_settings} lists the known settings."
            )
        try:
            built.append(config_class(**fields))
        except (TypeError, ValueError) as error:
            raise ConfigFileError(f"{where} holds an invalid {key} setting: {error}") from None
    return built[0], built[1]


def write_manifest(directory: Path, names: list[str] | None = None, **fields: Any) -> None:
    """Record the sha256 of `names` (default: every file in `directory`) and `fields` in checkpoint.json, last."""
    directory = Path(directory)
    if names is None:
        names = sorted(p.name for p in directory.iterdir() if p.is_file() and p.name != MANIFEST_FILE)
    digests = {name: sha256_file(directory / name) for name in names}
    write_json_atomic(directory / MANIFEST_FILE, {**fields, "sha256": digests})


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """checkpoint.json of a directory, or None when it has none or it is not valid JSON."""
    try:
        manifest = json.loads((Path(directory) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return manifest if isinstance(manifest, dict) else None


def manifest_problem(directory: Path) -> str | None:
    """None when every file checkpoint.json names is present with its recorded sha256, else what is wrong."""
    directory = Path(directory)
    if not (directory / MANIFEST_FILE).is_file():
        return f"{directory} has no {MANIFEST_FILE} (an incomplete checkpoint)"
    manifest = read_manifest(directory)
    if manifest is None:
        return f"{directory}/{MANIFEST_FILE} is not valid JSON"
    for name, expected in manifest.get("sha256", {}).items():
        path = directory / name
        if not path.is_file():
            return f"{path} is missing"
        if sha256_file(path) != expected:
            return f"{path} does not match its recorded sha256 (edited, truncated or corrupt)"
    return None


def write_model_files(
    directory: Path,
    state_dict: dict[str, torch.Tensor],
    payload: dict[str, Any],
    tokenizer: Tokenizer,
    *,
    tied_names: tuple[str, ...] = (),
) -> list[str]:
    """Weights, tokenizer and config.json into an existing `directory`; returns the names of the weight, tokenizer
    and config files (what a manifest must cover)."""
    directory = Path(directory)
    save_weights(state_dict, directory / WEIGHTS_FILE, tied_names=tied_names)
    spec = tokenizer_spec(tokenizer, directory)
    write_config(directory, {**payload, "tokenizer": spec})
    return [WEIGHTS_FILE, *([spec["file"]] if "file" in spec else []), CONFIG_FILE]


def save_checkpoint(
    directory: Path,
    model: Transformer,
    model_config: ModelConfig,
    train_config: TrainConfig,
    tokenizer: Tokenizer,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write config, weights, tokenizer and the manifest of the weights into `directory`.

    They are written into a hidden staging directory beside them, then renamed into place (the manifest last), so a
    failed write (a full disk) leaves the files already in `directory` as they were and the staging directory removed.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    staging = temporary_path(directory / "checkpoint")
    try:
        staging.mkdir()
        payload = config_payload(model_config, train_config, **(extra or {}))
        tied_names = tied_parameter_names(model)
        names = write_model_files(staging, model.state_dict(), payload, tokenizer, tied_names=tied_names)
        write_manifest(staging, names, run_id=payload.get("run_id"))
        (directory / MANIFEST_FILE).unlink(missing_ok=True)  # no stale manifest while the new files move in
        for name in [*names, MANIFEST_FILE]:
            (staging / name).replace(directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def check_weights_integrity(directory: Path) -> None:
    """Fail with one sentence when a checkpoint has no weights file or its manifest does not match its files
    (directories written before manifests existed have none and are not checked). Every load of weights asks it:
    load_model, --init-from, conversion."""
    directory = Path(directory)
    if not (directory / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{directory} is not a checkpoint directory: it has no {WEIGHTS_FILE}.")
    if (directory / MANIFEST_FILE).exists():
        problem = manifest_problem(directory)
        if problem is not None:
            raise ValueError(f"checkpoint {directory} is damaged: {problem}.")


def load_model(directory: Path, device: str | torch.device = "cpu") -> tuple[Transformer, ModelConfig, TrainConfig]:
    """Rebuild the model of a checkpoint (or finished run) directory, in eval mode."""
    directory = Path(directory)
    model_config, train_config = saved_configs(read_config(directory))
    check_weights_integrity(directory)
    model = Transformer(model_config)
    load_weights_into(model, read_weights(directory / WEIGHTS_FILE))
    return model.to(device).eval(), model_config, train_config


def load_tokenizer(directory: Path) -> Tokenizer:
    """The tokenizer a checkpoint was trained with."""
    spec = read_config(directory).get("tokenizer", {})
    if spec.get("kind") == "bpe":
        return BPETokenizer.load(Path(directory) / spec["file"])
    if spec.get("kind") == "gpt2":
        return load_gpt2()
    raise ValueError(f"checkpoint {directory} names tokenizer kind {spec.get('kind')!r}; supported: bpe, gpt2.")
