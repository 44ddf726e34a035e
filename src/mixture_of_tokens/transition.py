"""Transition tuning (docs/method.md §3): turn a trained MoT checkpoint into a sparse one that needs no batch.

Every MoT layer becomes a Token Choice layer that reuses the MoT tensors unchanged — router := controller,
experts := experts — with top-1 routing, capacity factor 1.25 and load-balancing weight 0.01 by default; the same
logits are now normalised over experts instead of over the group, which is why the loss spikes at the switch
before training recovers it. Alternatives to compare: Expert Choice (router and experts reused the same way) and
discrete MoT (argmax routing over the group, no retraining).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

from .checkpoint import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    check_weights_integrity,
    read_config,
    read_weights,
    save_weights,
    write_config,
    write_manifest,
)
from .config import ModelConfig
from .layers.conversion import ROUTING_FIELDS, TARGETS, convert_config, convert_weights


def convert_checkpoint(
    source: Path,
    out: Path,
    target: str,
    *,
    force: bool = False,
    **routing: object,
) -> Path:
    """Write the converted checkpoint to `out` (a new directory unless `force`); returns `out`.

    All checks run before anything is written; the new config records where it came from.
    """
    source, out = Path(source), Path(out)
    saved = read_config(source)
    model_config = ModelConfig(**saved["model"])
    converted_config = convert_config(model_config, target, **routing)
    if out.exists() and any(out.iterdir()) and not force:
        raise FileExistsError(f"--out {out} already exists and is not empty; pass --force to overwrite it.")
    if out.resolve() == source.resolve():
        raise ValueError("--out must differ from --checkpoint: the source checkpoint is never overwritten.")
    check_weights_integrity(source)
    weights = convert_weights(read_weights(source / WEIGHTS_FILE), model_config, target)

    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST_FILE).unlink(missing_ok=True)  # no stale manifest while the new files are written
    save_weights(weights, out / WEIGHTS_FILE)
    tokenizer: dict[str, Any] = saved.get("tokenizer", {})
    if "file" in tokenizer:
        shutil.copyfile(source / tokenizer["file"], out / tokenizer["file"])
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
    write_config(out, payload)
    write_manifest(out, [WEIGHTS_FILE, *([tokenizer["file"]] if "file" in tokenizer else [])])
    return out


__all__ = ["ROUTING_FIELDS", "TARGETS", "convert_checkpoint", "convert_config", "convert_weights"]
