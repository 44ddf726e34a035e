"""Guards around a training run: Ctrl-C as a clean stop, and the peak FLOP rates that turn tokens/s into model
FLOPs utilisation (MFU). The run directory's checks live in run_directory.py, the non-finite guard in step.py."""

from __future__ import annotations

import signal
import threading

import torch

from ..runtime.precision import Precision

# Dense bf16 tensor-core peaks (FLOP/s) of common accelerators, by a substring of the device name.
_BF16_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 125e12, "4090": 165e12}


def peak_flops_per_second(device: torch.device, precision: Precision) -> float | None:
    """Peak of one device for MFU; None where unknown (CPUs, unlisted GPUs, fp32)."""
    if device.type != "cuda" or not precision.uses_bf16:
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in _BF16_PEAKS.items() if key in name), None)


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
