"""Why a started run stops: each is one sentence for the user (the CLI prints it without a traceback and exits
with status 1), raised after the run has made sure nothing bad reached its directory."""

from __future__ import annotations

from pathlib import Path

from ..files import WriteFailed
from ..spelling import setting


class TrainingStopped(RuntimeError):
    """A run stopped on purpose; the message says why, at which step, and what is safe on disk."""


class NonFiniteError(TrainingStopped, FloatingPointError):
    """A loss or gradient norm was NaN or infinite; nothing from that step on was written."""


class CheckpointWriteError(TrainingStopped, WriteFailed):
    """Writing a checkpoint, the metrics or the final files failed (e.g. a full disk); the partial write was removed
    and the message names the last good checkpoint."""


def non_finite_message(bad_step: int, last_good: Path | None, resumed_from: Path | None, start_step: int) -> str:
    """Why the run stopped and what to do: start again (no checkpoint yet), resume the last good checkpoint with
    safer settings, or, when that is the checkpoint this run resumed from, say that it fails again as it is (a
    resumed run replays the same batches and random state)."""
    stopped = (
        f"the loss or gradient norm was not finite at step {bad_step}, so training stopped before writing anything "
        "from that step on"
    )
    safer = f"a lower {setting('lr')} or a tighter {setting('grad_clip')}"
    if last_good is None:
        return f"{stopped}; the last good checkpoint is none (no checkpoint was written yet): start again with {safer}."
    if resumed_from is not None and Path(last_good) == Path(resumed_from):
        after = bad_step - start_step
        return (
            f"{stopped}; the last good checkpoint is {last_good}, the checkpoint this run resumed from, which failed "
            f"again {after} step{'s' if after != 1 else ''} after it: resumed as it is it fails the same way (the "
            f"same batches and random state), so resume it only with {safer}."
        )
    return f"{stopped}; the last good checkpoint is {last_good} (resume it with {safer})."
