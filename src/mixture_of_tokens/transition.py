"""Transition tuning (docs/method.md §3): turn a trained MoT checkpoint into a sparse one that needs no batch.

Every MoT layer becomes a Token Choice layer that reuses the MoT tensors unchanged — router := controller,
experts := experts — with top-1 routing, capacity factor 1.25 and load-balancing weight 0.01 by default; the same
logits are now normalised over experts instead of over the group, which is why the loss spikes at the switch
before training recovers it. Alternatives to compare: Expert Choice (router and experts reused the same way) and
discrete MoT (argmax routing over the group, no retraining).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

from .checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    check_weights_integrity,
    read_config,
    read_weights,
    save_weights,
    saved_configs,
    write_config,
    write_manifest,
)
from .config import ModelConfig
from .layers.conversion import ROUTING_FIELDS, TARGETS, convert_config, convert_weights
from .training.run_directory import new_output_directory


def convert_checkpoint(
    source: Path,
    out: Path,
    target: str,
    *,
    force: bool = False,
    **routing: object,
) -> Path:
    """Write the converted checkpoint to `out` (a new or empty directory; with `force` an existing one is moved
    aside to OUT.old-<timestamp>, never deleted or mixed with); returns `out`.

    All checks run before anything is written; the files are written under a temporary name beside `out` and
    renamed into place; the new config records where it came from.
    """
    source, out = Path(source), Path(out)
    saved = read_config(source)
    model_config = saved_configs(saved)[0]
    converted_config = convert_config(model_config, target, **routing)
    with new_output_directory(out, source, force=force):
        check_weights_integrity(source)
        weights = convert_weights(read_weights(source / WEIGHTS_FILE), model_config, target)
        partial = out.parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        try:
            _write_converted(partial, source, saved, weights, converted_config, target)
            partial.rename(out)  # replaces an existing empty directory
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return out


def _write_converted(
    directory: Path,
    source: Path,
    saved: dict[str, Any],
    weights: dict[str, Any],
    converted_config: ModelConfig,
    target: str,
) -> None:
    save_weights(weights, directory / WEIGHTS_FILE)
    tokenizer: dict[str, Any] = saved.get("tokenizer", {})
    if "file" in tokenizer:
        shutil.copyfile(source / tokenizer["file"], directory / tokenizer["file"])
    payload = {
        **saved,
        "model": dataclasses.asdict(converted_config),
        "converted_from": {
            "checkpoint": str(source.resolve()),
            "target": target,
            "source_model": saved["model"],
            "source_run": saved.get("run"),
            "source_steps": saved.get("train", {}).get("steps"),
        },
    }
    write_config(directory, payload)
    write_manifest(directory, [WEIGHTS_FILE, *([tokenizer["file"]] if "file" in tokenizer else []), CONFIG_FILE])


__all__ = ["ROUTING_FIELDS", "TARGETS", "convert_checkpoint", "convert_config", "convert_weights"]
