"""A training run resolved once, before any data or compute: its configs (fresh, resumed, or started from a
checkpoint's weights), its name, its run directory and run id, its device and precision, and every check of its
settings.

`plan_run` is the only place that reads a checkpoint's config to decide what a run is; the trainer takes the
plan as it is. A run writes only into `plan.run_dir`: the directory given to `--resume`, `--out-dir`, or
runs/NAME, never a path read from a saved config.
"""

from __future__ import annotations

import dataclasses
import os
import re
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import check_weights_integrity, read_config, read_manifest, saved_configs
from ..config import ModelConfig, TrainConfig
from ..data.prepare import check_data_settings
from ..data.sources import source_fingerprint
from ..extras import require
from ..layers import check_training_batch
from ..model import Transformer
from ..runtime import distributed as dist_utils
from ..runtime.devices import resolve_device
from ..runtime.precision import Precision, resolve_precision
from ..spelling import setting, uses_flags
from .run_directory import check_run_directory
from .state import (
    checkpoint_run_id,
    checkpoint_step,
    is_training_checkpoint,
    list_checkpoints,
    resolve_resume_checkpoint,
)
from .switch import check_switch

RUNS_ROOT = Path("runs")
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class ResumePoint:
    """The checkpoint a resumed run continues from."""

    checkpoint: Path
    step: int
    saved: dict[str, Any]
    """The checkpoint's config.json."""
    branch: bool
    """True when the run has newer checkpoints than this one: the resumed run is a new branch (a new run id) and
    the abandoned timeline's later files are moved aside, never deleted."""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunPlan:
    """Everything decided about a run before any data is read."""

    model_config: ModelConfig
    train_config: TrainConfig
    name: str
    run_dir: Path
    run_id: str
    resume: ResumePoint | None = None
    init_from: Path | None = None
    force: bool = False
    """Move a run already in `run_dir` aside (to a sibling NAME.old-<timestamp>) instead of refusing."""

    @property
    def start_step(self) -> int:
        return self.resume.step if self.resume else 0

    @cached_property
    def device(self) -> torch.device:
        """The run's device, resolved once from `train_config.device` (auto: CUDA when present); under torchrun each
        process trains on its own rank's device of this type."""
        return resolve_device(self.train_config.device)

    @cached_property
    def precision(self) -> Precision:
        """The run's precision, resolved once (auto: bf16-mixed on CUDA, fp32 elsewhere)."""
        return resolve_precision(self.train_config.precision, self.device)


def new_run_id() -> str:
    return uuid.uuid4().hex


def plan_run(
    model_config: ModelConfig | None = None,
    train_config: TrainConfig | None = None,
    *,
    name: str | None = None,
    resume_from: Path | None = None,
    init_from: Path | None = None,
    model_overrides: dict[str, Any] | None = None,
    train_overrides: dict[str, Any] | None = None,
    force: bool = False,
    check_directory: bool = True,
) -> RunPlan:
    """Resolve a run and check every setting; reads only a checkpoint's small files and writes nothing.
    `check_directory=False` (a dry run) skips the run directory and disk checks.

    Fresh: `model_config` and `train_config` as given. Resume: the checkpoint's configs with `train_overrides`
    (or `train_config` when given); model settings cannot change. Init-from: the checkpoint's model config with
    `model_overrides` that keep every weight's shape, and `train_config` (default: the checkpoint's training
    settings with `train_overrides`, never its out_dir).
    """
    if resume_from is not None and init_from is not None:
        raise ValueError(
            f"{setting('resume_from')} and {setting('init_from')} exclude each other: resume continues a run, "
            "init-from starts one."
        )
    if name:
        check_run_name(name)
    model_overrides, train_overrides = dict(model_overrides or {}), dict(train_overrides or {})
    if resume_from is not None:
        plan = _plan_resume(Path(resume_from), train_config, name, model_overrides, train_overrides, force)
    elif init_from is not None:
        plan = _plan_init_from(Path(init_from), model_config, train_config, name, model_overrides, train_overrides)
        plan = dataclasses.replace(plan, force=force)
    else:
        if model_config is None or train_config is None:
            raise ValueError(
                "--preset is required (or --resume DIR / --init-from DIR); see `mot presets`."
                if uses_flags()
                else "model_config and train_config are required for a new run (or resume_from / init_from); a "
                "preset's are get_preset(NAME).model and get_preset(NAME).train (names: mixture_of_tokens.PRESETS)."
            )
        name = name or "run"
        run_dir = Path(train_config.out_dir) if train_config.out_dir else RUNS_ROOT / name
        train_config = dataclasses.replace(train_config, out_dir=str(run_dir))
        plan = RunPlan(model_config, train_config, name, run_dir, new_run_id(), force=force)
    world_size = int(os.environ.get("WORLD_SIZE", "1")) if dist_utils.launched_by_torchrun() else 1
    check_run_settings(plan.model_config, plan.train_config, world_size)
    if check_directory and os.environ.get("RANK", "0") == "0":  # one process owns the run directory
        check_run_directory(plan)
    return plan


def check_run_name(name: str) -> None:
    if not RUN_NAME.fullmatch(name):
        raise ValueError(
            f"{setting('run_name', name)} is not a valid run name; allowed: 1 to 100 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it names one directory under runs/)."
        )


def check_run_settings(model_config: ModelConfig, train_config: TrainConfig, world_size: int = 1) -> None:
    """Everything that can be wrong with the settings together, checked before any data or compute (each field
    on its own is checked by its config class)."""
    micro = dist_utils.micro_batch_size(
        train_config.batch_size, dist_utils.DistributedContext(world_size=world_size), train_config.grad_accum_steps
    )
    try:
        check_training_batch(model_config, micro)
    except ValueError as error:
        where = (
            f"the per-rank micro-batch batch_size / (ranks x grad_accum_steps) = {micro}"
            if micro != train_config.batch_size
            else f"batch_size={micro}"
        )
        raise ValueError(f"with {where}: {error}") from None
    resolve_device(train_config.device)
    if model_config.mot_temperature_anneal_steps > train_config.steps:
        raise ValueError(
            f"mot_temperature_anneal_steps={model_config.mot_temperature_anneal_steps} is longer than the run's "
            f"steps={train_config.steps}: the run would end before tau reaches mot_temperature_final; allowed values: "
            f"0 (the whole run) to {train_config.steps}."
        )
    check_switch(model_config, train_config, world_size=world_size, parallel=train_config.parallel)
    check_data_settings(train_config.data, train_config.tokenizer, text_column=train_config.text_column)
    if train_config.tensorboard:
        require("tensorboard", "tensorboard", purpose=setting("tensorboard", True))


def _plan_init_from(
    source: Path,
    model_config: ModelConfig | None,
    train_config: TrainConfig | None,
    name: str | None,
    model_overrides: dict[str, Any],
    train_overrides: dict[str, Any],
) -> RunPlan:
    saved_model, saved_train = saved_configs(read_config(source))
    check_weights_integrity(source)  # as every load does: flipped bytes never train silently
    model_config = model_config or dataclasses.replace(saved_model, **model_overrides)
    check_same_weight_shapes(saved_model, model_config, source)
    if train_config is None:  # the checkpoint's settings, but never its run directory
        train_config = dataclasses.replace(dataclasses.replace(saved_train, out_dir=""), **train_overrides)
    change = tokenizer_change(saved_train, train_config)
    if change is not None:
        raise ValueError(
            f"{setting('init_from', source)}: {change} would change the tokenizer under the loaded weights (its ids "
            "would mean other words to them); start from these weights on the data and tokenizer they were trained "
            f"with ({saved_train.data!r}, unchanged; {saved_train.tokenizer})."
        )
    name = name or check_default_name(f"{source.resolve().name}-continued")
    run_dir = Path(train_config.out_dir) if train_config.out_dir else RUNS_ROOT / name
    source_resolved, run_resolved = source.resolve(), run_dir.resolve()
    if source_resolved == run_resolved or run_resolved in source_resolved.parents:
        raise ValueError(
            f"the run directory {run_dir} holds the {setting('init_from')} checkpoint {source}; a new run never "
            f"writes into its source: choose another {setting('out_dir')} or {setting('run_name')}."
        )
    train_config = dataclasses.replace(train_config, out_dir=str(run_dir))
    return RunPlan(model_config, train_config, name, run_dir, new_run_id(), init_from=source)


def check_default_name(name: str) -> str:
    """A default run name made from a directory name, reduced to the allowed characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip("._-")[:100]
    return cleaned or "run"


def _weight_shapes(config: ModelConfig) -> dict[str, str]:
    """Every weight a model of `config` loads, with its shape, or 'shared' for a tied copy of another."""
    with torch.device("meta"):
        model = Transformer(config)
    own = {name for name, _ in model.named_parameters()}  # a tied weight is listed once, under its first name
    tied = {name for name, _ in model.named_parameters(remove_duplicate=False)} - own
    return {name: "shared" if name in tied else str(tuple(v.shape)) for name, v in model.state_dict().items()}


def check_same_weight_shapes(saved: ModelConfig, wanted: ModelConfig, source: Path) -> None:
    """--init-from loads every weight as it is: settings that add, drop, reshape or tie a weight are refused."""
    before, after = _weight_shapes(saved), _weight_shapes(wanted)
    if before == after:
        return
    first = sorted(name for name in before.keys() | after.keys() if before.get(name) != after.get(name))[0]
    fields = [f.name for f in dataclasses.fields(ModelConfig) if getattr(saved, f.name) != getattr(wanted, f.name)]
    raise ValueError(
        f"{setting('init_from', source)}: the model settings {', '.join(fields)} change the weights it holds "
        f"({first}: {before.get(first, 'absent')} -> {after.get(first, 'absent')}); allowed with "
        f"{setting('init_from')} are settings that keep every weight's shape (routing, temperatures, capacities, "
        "loss weights)."
    )


def _plan_resume(
    path: Path,
    train_config: TrainConfig | None,
    name: str | None,
    model_overrides: dict[str, Any],
    train_overrides: dict[str, Any],
    force: bool,
) -> RunPlan:
    if model_overrides:
        names = ", ".join(model_overrides)
        raise ValueError(
            f"{setting('resume_from')} continues the saved model; model settings cannot be changed ({names})."
        )
    if force:
        raise ValueError(
            f"{setting('force', True)} applies to new runs only: a resumed run continues the directory it resumes."
        )
    checkpoint, warnings = resolve_resume_checkpoint(path)
    run_dir = checkpoint.parent.parent if is_training_checkpoint(path) else path
    saved = read_config(checkpoint)
    model_config, saved_train = saved_configs(saved)
    asked_out = train_overrides.get("out_dir") or (train_config.out_dir if train_config else "")
    if asked_out and Path(asked_out).resolve() != run_dir.resolve():
        raise ValueError(
            f"out_dir={asked_out!r} differs from the resumed run directory {run_dir}: a resumed run writes into the "
            f"directory it resumes; to start a new run from this checkpoint's weights use "
            f"{setting('init_from', checkpoint)}."
        )
    train_config = train_config or dataclasses.replace(saved_train, **train_overrides)
    train_config = dataclasses.replace(train_config, out_dir=str(run_dir))
    step = int((read_manifest(checkpoint) or {}).get("step", checkpoint_step(checkpoint)))
    if train_config.steps <= step:
        raise ValueError(
            f"steps={train_config.steps} is at or below the checkpoint's step {step}: steps is the run's total, so "
            f"a resumed run needs steps > {step} (e.g. {setting('steps', 2 * step)})."
        )
    if has_whole_run_anneal(model_config) and train_config.steps != saved_train.steps:
        raise ValueError(
            f"steps={train_config.steps} differs from the resumed run's {saved_train.steps}: its MoT temperature "
            "anneals over the run's steps (mot_temperature_anneal_steps=0), so another length would move tau mid-run; "
            f"resume with {setting('steps', saved_train.steps)}."
        )
    _check_same_data(saved, saved_train, train_config, checkpoint)
    run_id = checkpoint_run_id(checkpoint)
    branch = any(checkpoint_step(c) > step for c in list_checkpoints(run_dir, run_id))
    resume = ResumePoint(checkpoint, step, saved, branch=branch, warnings=tuple(warnings))
    name = name or check_default_name(run_dir.resolve().name)
    plan_id = new_run_id() if branch or run_id is None else run_id
    return RunPlan(model_config, train_config, name, run_dir, plan_id, resume=resume)


def has_whole_run_anneal(model_config: ModelConfig) -> bool:
    """An MoT temperature scheduled over the run's own steps: the run's length is part of the schedule."""
    return model_config.mot_temperature_schedule != "constant" and model_config.mot_temperature_anneal_steps == 0


def tokenizer_change(saved_train: TrainConfig, train_config: TrainConfig) -> str | None:
    """The setting that would make the tokenizer prepared for `train_config` another than the one a checkpoint was
    trained with (a BPE is trained on its data; GPT-2's is the same for any text), or None. Edited text under the
    same source is caught once the tokenizer is prepared (`check_resumed_tokenizer`)."""
    if train_config.tokenizer != saved_train.tokenizer:
        return f"{setting('tokenizer', train_config.tokenizer)} (the checkpoint's is {saved_train.tokenizer})"
    if train_config.tokenizer == "bpe" and train_config.data != saved_train.data:
        return (
            f"the data {train_config.data!r} (a BPE is trained on its data; the checkpoint's is {saved_train.data!r})"
        )
    return None


def _check_same_data(saved: dict[str, Any], saved_train: TrainConfig, train_config: TrainConfig, where: Path) -> None:
    """A resumed run must read the same text with the same tokenizer (else its token ids mean other words). A new
    run from these weights (--init-from) is suggested only where it keeps the tokenizer."""
    if (train_config.data, train_config.tokenizer) != (saved_train.data, saved_train.tokenizer):
        keeps = tokenizer_change(saved_train, train_config) is None
        advice = (
            f"start a new run with {setting('init_from', where)}"
            if keeps
            else "a new run from these weights needs them too"
        )
        raise ValueError(
            f"{setting('resume_from')} continues on the checkpoint's data {saved_train.data!r} with tokenizer "
            f"{saved_train.tokenizer!r}; data and tokenizer cannot change ({advice})."
        )
    recorded = saved.get("data_fingerprint")
    if recorded is not None and recorded != source_fingerprint(train_config.data):
        new_run = f"start a new run with {setting('init_from', where)}"
        advice = "restore the data" if train_config.tokenizer == "bpe" else new_run
        raise ValueError(
            f"the data of {train_config.data!r} changed since checkpoint {where} was written (files added, removed "
            f"or edited), so its tokenizer and token ids would no longer match; {advice}."
        )


def check_resumed_tokenizer(plan: RunPlan, fingerprint: str) -> None:
    """After data preparation: the tokenizer must be the one the resumed (or --init-from) checkpoint was trained
    with, else the loaded weights would read other words."""
    if plan.resume is not None:
        source, saved = plan.resume.checkpoint, plan.resume.saved
    elif plan.init_from is not None:
        source, saved = plan.init_from, read_config(plan.init_from)
    else:
        return
    recorded = saved.get("tokenizer", {}).get("fingerprint")
    if recorded is not None and recorded != fingerprint:
        raise ValueError(
            f"the tokenizer prepared for {plan.train_config.data!r} differs from the one checkpoint {source} was "
            f"trained with (fingerprint {fingerprint[:12]} vs {recorded[:12]}), so its ids would mean other words to "
            "the loaded weights; train on the data it was trained with, unchanged."
        )
