"""The run directory is owned by one run: checked before any data (nothing created), claimed after setup.

A new run never writes into a directory that holds another run: it is refused with one sentence, or with
`force` the old run is moved aside whole to a sibling NAME.old-<timestamp>. A run resumed from an older
checkpoint (a branch) moves the abandoned timeline's later checkpoints and final files aside into
RUN_DIR/superseded/<run id>-after-step-N/, so nothing is deleted and nothing is mixed. The disk pre-check
counts the checkpoints kept, the one being written, the final weights and the copy of metrics.jsonl each checkpoint
holds. The training that owns the directory
holds its lock (`run_lock`) for the whole run, so a second training into it is refused before any data.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..checkpoint import CONFIG_FILE, MANIFEST_FILE, TOKENIZER_FILE, WEIGHTS_FILE, write_config
from ..counting import count_model
from ..files import existing_ancestor, free_space, human_bytes, write_failed
from ..model import Transformer
from ..spelling import setting
from .run_files import CHECKPOINTS_DIR, METRICS_FILE, SUMMARY_FILE
from .run_lock import LOCK_FILE, RunLock, check_not_in_use
from .state import checkpoint_run_id, checkpoint_step, list_checkpoints

if TYPE_CHECKING:
    from .plan import RunPlan

SUPERSEDED_DIR = "superseded"
RUN_MARKERS = (CONFIG_FILE, METRICS_FILE, CHECKPOINTS_DIR, SUMMARY_FILE, WEIGHTS_FILE)
FINAL_FILES = (WEIGHTS_FILE, TOKENIZER_FILE, MANIFEST_FILE, SUMMARY_FILE)


def holds_run(directory: Path) -> bool:
    """True when `directory` has any file a training run writes."""
    return any((Path(directory) / marker).exists() for marker in RUN_MARKERS)


def has_files(directory: Path) -> bool:
    """True when `directory` holds anything besides a run lock file."""
    return any(path.name != LOCK_FILE for path in Path(directory).iterdir())


def check_run_directory(plan: RunPlan, *, locked: bool = False) -> None:
    """Fail with one sentence, before any data, when the run cannot own its directory (another training holds
    it, unless `locked`: this process does) or the disk is too small."""
    run_dir = plan.run_dir
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"out_dir={str(run_dir)!r} is a file, not a directory; choose another out_dir.")
    if run_dir.is_dir() and not locked:
        check_not_in_use(run_dir, lock_hint())
    if plan.resume is None and run_dir.is_dir() and has_files(run_dir):
        if not holds_run(run_dir):
            raise FileExistsError(
                f"out_dir={str(run_dir)!r} is not empty and holds no run; a run needs a new or empty directory."
            )
        if not plan.force:
            raise FileExistsError(
                f"{run_dir} already holds a run; continue it with {setting('resume_from', run_dir, command='train')}, "
                f"choose another {setting('out_dir')} or {setting('run_name')}, or pass {setting('force', True)} to "
                f"move it aside to {aside_name(run_dir)}."
            )
    _check_writable(run_dir)
    _check_free_space(plan)


def lock_hint() -> str:
    return f"wait for it to finish, or choose another {setting('out_dir')} or {setting('run_name')}."


def lock_run_directory(plan: RunPlan) -> RunLock:
    """Lock the run directory for the whole run (refused with one sentence while another training holds it), then
    check it again: another run may have written into it between the plan and the lock."""
    lock = RunLock(lock_hint())
    lock.acquire(plan.run_dir)
    try:
        check_run_directory(plan, locked=True)
        if plan.resume is not None:
            _check_resume_point_unchanged(plan)
    except BaseException:
        lock.release()
        raise
    return lock


def _check_resume_point_unchanged(plan: RunPlan) -> None:
    assert plan.resume is not None
    run_id = checkpoint_run_id(plan.resume.checkpoint)
    later = any(checkpoint_step(c) > plan.resume.step for c in list_checkpoints(plan.run_dir, run_id))
    if not plan.resume.checkpoint.is_dir() or later != plan.resume.branch:
        raise ValueError(
            f"{plan.run_dir} changed while this run was starting (another training wrote into it); resume it the "
            "same way again."
        )


def aside_name(run_dir: Path) -> str:
    return f"{run_dir.name}.old-<timestamp>"


def _check_writable(run_dir: Path) -> None:
    """A probe file in the run directory or its nearest existing ancestor (created and removed at once)."""
    ancestor = existing_ancestor(run_dir)
    if not ancestor.is_dir():
        raise ValueError(f"out_dir={str(run_dir)!r} is not writable ({ancestor} is a file); choose another out_dir.")
    try:
        with tempfile.NamedTemporaryFile(dir=ancestor, prefix=".mot-write-probe-"):
            pass
    except OSError as error:
        reason = error.strerror or error
        raise ValueError(f"out_dir={str(run_dir)!r} is not writable ({reason}); choose another out_dir.") from None


def checkpoints_written(steps: int, start_step: int, checkpoint_every: int) -> int:
    """How many checkpoints a run writes: one every `checkpoint_every` steps and always one at the end."""
    periodic = steps // checkpoint_every - start_step // checkpoint_every if checkpoint_every else 0
    return periodic + (0 if checkpoint_every and steps % checkpoint_every == 0 else 1)


METRICS_RECORD_BYTES = 512
METRICS_BLOCK_BYTES = 512
"""An upper bound on one metrics.jsonl line: the losses, rate and throughput, plus per block its routing statistics
and auxiliary losses (a routed block of the paper's MoT writes about 330 bytes)."""


def metrics_bytes(plan: RunPlan) -> int:
    """An upper bound on metrics.jsonl at the end of the run: a line at every log, eval and checkpoint step."""
    config = plan.train_config
    every = (config.log_every, config.eval_every, config.checkpoint_every)
    lines = sum(config.steps // n for n in every if n)
    return (lines + 2) * (METRICS_RECORD_BYTES + METRICS_BLOCK_BYTES * plan.model_config.n_blocks)


def bytes_needed(plan: RunPlan) -> int:
    """Checkpoints on disk at the worst moment (the kept ones plus the one being written, each with its copy of
    metrics.jsonl), the final weights and the run's own metrics.jsonl."""
    with torch.device("meta"):
        parameters = count_model(Transformer(plan.model_config)).total_params
    weights = parameters * plan.precision.state_bytes
    config = plan.train_config
    written = checkpoints_written(config.steps, plan.start_step, config.checkpoint_every)
    at_once = min(config.keep_checkpoints + 1, written)
    checkpoint = 3 * weights + metrics_bytes(plan)  # weights, AdamW's two moments and the metrics so far
    return at_once * checkpoint + weights + metrics_bytes(plan)


def _check_free_space(plan: RunPlan) -> None:
    needed, free = bytes_needed(plan), free_space(plan.run_dir)
    if free < needed:
        config = plan.train_config
        raise ValueError(
            f"out_dir={str(plan.run_dir)!r} has {human_bytes(free)} free but the run needs about "
            f"{human_bytes(needed)} ({config.keep_checkpoints} kept checkpoint(s), the one being written, the final "
            "weights and a copy of metrics.jsonl in each checkpoint); free some space, lower keep_checkpoints, or "
            "choose another out_dir."
        )


def claim_run_directory(plan: RunPlan, payload: dict[str, Any], lock: RunLock | None = None) -> list[str]:
    """Make the directory the run's own, once setup succeeded: move an old run (force) or an abandoned timeline
    (branch) aside, create it, and record the run's config and id in config.json; returns what was moved. `lock`
    (the run's lock) follows the run directory when an old run is moved aside."""
    run_dir, notes = plan.run_dir, []
    if plan.resume is None and plan.force and run_dir.is_dir() and holds_run(run_dir):
        moved = move_aside(run_dir)
        if lock is not None:
            lock.move_to(run_dir, moved_to=moved)
        notes.append(f"moved the run that was in {run_dir} aside to {moved}")
    if plan.resume is not None and plan.resume.branch:
        moved = move_superseded_aside(plan)
        notes.append(f"resuming from step {plan.start_step} starts a new branch; the later files moved to {moved}")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"out_dir={str(run_dir)!r} cannot be created ({error.strerror or error}).") from None
    if plan.resume is None or plan.resume.branch or not (run_dir / CONFIG_FILE).exists():
        try:
            write_config(run_dir, payload)
        except OSError as error:
            kept = "nothing else was written and any config.json there is unchanged: free some space and start again"
            raise write_failed(f"the run's {CONFIG_FILE}", run_dir, error, kept) from None
    return notes


@contextlib.contextmanager
def new_output_directory(out: Path, source: Path, *, force: bool) -> Iterator[Path | None]:
    """The destination of a command that writes a new directory from a checkpoint (`mot convert`, `mot export`).

    Refused with one sentence: an `out` that is the source or holds it, one a training holds, and an existing
    non-empty one without `force`. With `force` an existing `out` is moved aside (`move_aside`, never deleted);
    the context yields where it went (None: nothing was there) and puts it back if the body fails and leaves
    nothing at `out`.
    """
    out, source = Path(out), Path(source)
    out_resolved, source_resolved = out.resolve(), source.resolve()
    if out_resolved == source_resolved or out_resolved in source_resolved.parents:
        raise ValueError(
            f"{setting('out', out)} is the checkpoint {source} or holds it; the source is never overwritten or "
            f"moved: choose another {setting('out')}."
        )
    if out.is_dir():
        check_not_in_use(out, f"wait for it to finish, or choose another {setting('out')}.")
    moved = None
    if out.exists() and (not out.is_dir() or has_files(out)):
        if not force:
            raise FileExistsError(
                f"{setting('out', out)} already exists; choose another directory or pass {setting('force', True)} to "
                f"move it aside to {aside_name(out)}."
            )
        moved = move_aside(out)
    try:
        yield moved
    except BaseException:
        if moved is not None and not out.exists():
            moved.rename(out)
        raise


def move_aside(path: Path) -> Path:
    """Rename `path` (a run, or any directory or file a command would replace) to a free sibling
    NAME.old-<timestamp>, in one rename: nothing is deleted; returns the new path."""
    moved = _free_sibling(Path(path))
    Path(path).rename(moved)
    return moved


def _free_sibling(run_dir: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    index = 1
    while candidate.exists():
        index += 1
        candidate = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{index}")
    return candidate


def move_superseded_aside(plan: RunPlan) -> Path:
    """A branch: the old run's checkpoints after the resume step and the run directory's final files go to
    RUN_DIR/superseded/<old run id>-after-step-N/ (metrics.jsonl is copied: the branch keeps its first part)."""
    assert plan.resume is not None
    run_dir, step = plan.run_dir, plan.resume.step
    old_id = plan.resume.saved.get("run_id") or "unknown"
    target = run_dir / SUPERSEDED_DIR / f"{old_id[:8]}-after-step-{step}-{time.strftime('%Y%m%d-%H%M%S')}"
    (target / CHECKPOINTS_DIR).mkdir(parents=True, exist_ok=True)
    for checkpoint in list_checkpoints(run_dir, plan.resume.saved.get("run_id")):
        if checkpoint_step(checkpoint) > step:
            checkpoint.rename(target / CHECKPOINTS_DIR / checkpoint.name)
    for name in (*FINAL_FILES, CONFIG_FILE):
        if (run_dir / name).exists():
            (run_dir / name).rename(target / name)
    if (run_dir / METRICS_FILE).exists():
        shutil.copyfile(run_dir / METRICS_FILE, target / METRICS_FILE)
    return target
