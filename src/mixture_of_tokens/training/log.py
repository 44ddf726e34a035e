"""What a run reports: one metrics record per log step (losses, LR, gradient norm, throughput, MFU, routing
statistics) to metrics.jsonl and optionally TensorBoard, and a progress bar. Only the main process writes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..progress import progress_bar
from ..runtime import distributed as dist_utils
from .metrics import MetricsWriter
from .step import StepResult


class RunLog:
    """Metrics file, TensorBoard writer and progress bar of one run; `close()` when done."""

    def __init__(
        self,
        out_dir: Path,
        *,
        name: str,
        total_steps: int,
        start_step: int,
        tokens_per_step: int,
        peak_flops: float | None,
        train_flops_per_token: float,
        context: dist_utils.DistributedContext,
        progress: bool,
        tensorboard: bool,
    ) -> None:
        self.name, self.context = name, context
        self.tokens_per_step, self.peak_flops = tokens_per_step, peak_flops
        self.train_flops_per_token = train_flops_per_token
        self.progress = progress and context.is_main
        self.metrics = MetricsWriter(out_dir / "metrics.jsonl", append=start_step > 0) if context.is_main else None
        self.tensorboard = _tensorboard_writer(out_dir) if tensorboard and context.is_main else None
        self.bar = progress_bar(total_steps, name, initial=start_step, disable=not self.progress, dynamic_ncols=True)
        self._window_start, self._window_steps = time.perf_counter(), 0

    def say(self, message: str) -> None:
        if self.progress:
            self.bar.write(message)

    def count_step(self) -> None:
        self.bar.update(1)
        self._window_steps += 1

    def record(self, step: int, result: StepResult, routing_stats: dict[str, Any]) -> dict[str, Any]:
        """The metrics record of a log step (host syncs; collective under torchrun)."""
        now = time.perf_counter()
        tokens_per_second = self._window_steps * self.tokens_per_step / max(now - self._window_start, 1e-9)
        self._window_start, self._window_steps = now, 0
        device = result.loss.device
        record = {
            "step": step,
            "loss": dist_utils.all_reduce_mean(float(result.loss), self.context, device),
            "lm_loss": dist_utils.all_reduce_mean(float(result.lm_loss), self.context, device),
            "lr": result.lr,
            "grad_norm": float(result.grad_norm),
            "tokens": step * self.tokens_per_step,
            "tokens_per_s": tokens_per_second,
            **{f"aux.{k}": float(v) for k, v in result.aux.items()},
            **{f"routing.{k}": v for k, v in routing_stats.items()},
        }
        if self.peak_flops:
            record["mfu"] = self.train_flops_per_token * tokens_per_second / self.peak_flops
        return record

    def write(self, record: dict[str, Any], latest_eval: float | None) -> None:
        """Append the record to metrics.jsonl (and TensorBoard) and show it on the progress bar."""
        if self.metrics:
            self.metrics.write(record)
        if self.tensorboard:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, record["step"])
        if "loss" not in record:  # an event (e.g. an architecture switch): nothing for the progress bar
            return
        postfix = {"loss": f"{record['loss']:.3f}"}
        if "tokens_per_s" in record:
            postfix["tok/s"] = f"{record['tokens_per_s']:,.0f}"
        if "mfu" in record:
            postfix["mfu"] = f"{record['mfu']:.1%}"
        if latest_eval is not None:
            postfix["eval"] = f"{latest_eval:.3f}"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        self.bar.close()
        if self.metrics:
            self.metrics.close()
        if self.tensorboard:
            self.tensorboard.close()


def _tensorboard_writer(out_dir: Path):
    """The package's presence is checked with the settings (before any data); this only opens the writer."""
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(out_dir / "tensorboard"))
