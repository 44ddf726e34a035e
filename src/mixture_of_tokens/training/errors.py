"""Why a started run stops: each is one sentence for the user (the CLI prints it without a traceback and exits
with status 1), raised after the run has made sure nothing bad reached its directory."""

from __future__ import annotations


class TrainingStopped(RuntimeError):
    """A run stopped on purpose; the message says why, at which step, and what is safe on disk."""


class NonFiniteError(TrainingStopped, FloatingPointError):
    """A loss or gradient norm was NaN or infinite; nothing from that step on was written."""


class CheckpointWriteError(TrainingStopped, OSError):
    """Writing a checkpoint or the final files failed (e.g. a full disk); the partial write was removed."""
