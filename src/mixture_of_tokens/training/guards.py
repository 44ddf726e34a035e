"""Guards around a training run: output directory checks before any compute, Ctrl-C as a clean stop, and the
peak FLOP rates that turn tokens/s into model FLOPs utilisation (MFU)."""

from __future__ import annotations

import shutil
import signal
import threading
from pathlib import Path

import torch

from ..config import ModelConfig, TrainConfig
from ..runtime.precision import Precision

# Dense bf16 tensor-core peaks (FLOP/s) of common accelerators, by a substring of the device name.
_BF16_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "4090": 165e12}


def peak_flops_per_second(device: torch.device, precision: Precision) -> float | None:
    """Peak of one device for MFU; None where unknown (CPUs, unlisted GPUs, fp32)."""
    if device.type != "cuda" or not precision.uses_bf16:
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in _BF16_PEAKS.items() if key in name), None)


def checkpoint_bytes(parameter_count: int, precision: Precision) -> int:
    """Weights plus AdamW's two moments."""
    return parameter_count * precision.state_bytes * 3


def check_output_dir(out_dir: Path, model_config: ModelConfig, train_config: TrainConfig, precision: Precision) -> None:
    """Fail before training when the run directory cannot be written or the disk cannot hold a checkpoint."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-probe"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        reason = error.strerror or error
        raise ValueError(f"out_dir={str(out_dir)!r} is not writable ({reason}); choose another out_dir.") from None
    from ..counting import count_model
    from ..model import Transformer

    with torch.device("meta"):
        parameters = count_model(Transformer(model_config)).total_params
    needed = checkpoint_bytes(parameters, precision) * (2 if train_config.checkpoint_every else 1)
    free = shutil.disk_usage(out_dir).free
    if free < needed:
        raise ValueError(
            f"out_dir={str(out_dir)!r} has {free / 1e9:.2f} GB free but a checkpoint needs about "
            f"{needed / 1e9:.2f} GB; free some space or choose another out_dir."
        )


class InterruptFlag:
    """Within `with`, the first Ctrl-C only sets a flag (the loop finishes its step, checkpoints and stops);
    a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous = None

    def is_set(self) -> bool:
        return self._event.is_set()

    def _handle(self, signum, frame) -> None:
        if self._event.is_set():
            raise KeyboardInterrupt
        self._event.set()

    def __enter__(self) -> InterruptFlag:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
