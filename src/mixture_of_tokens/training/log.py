"""What a run reports: one metrics record per log step (losses, LR, gradient norm, throughput, MFU, routing
statistics) to metrics.jsonl and optionally TensorBoard, and a progress bar. Only the main process writes.

TensorBoard tags are grouped by what they measure (`tensorboard_tag`): `train/loss`, `train/lr`, `train/aux/...`,
`eval/loss`, `perf/tokens_per_s`, `routing/block1/entropy_mean`; the run's config.json is logged once as hparams
(`model/...`, `train/...`) and as text."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..checkpoint import CONFIG_FILE, read_config
from ..progress import progress_bar
from ..runtime import distributed as dist_utils
from .metrics import MetricsWriter
from .run_files import METRICS_FILE
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
        write_failed: Callable[[str, Path, OSError], Exception] | None = None,
    ) -> None:
        self.name, self.context = name, context
        self.write_failed = write_failed  # a failed metrics write (a full disk) as the sentence that stops the run
        self.tokens_per_step, self.peak_flops = tokens_per_step, peak_flops
        self.train_flops_per_token = train_flops_per_token
        self.progress = progress and context.is_main
        self.metrics = MetricsWriter(out_dir / METRICS_FILE, append=start_step > 0) if context.is_main else None
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
        """Append the record to metrics.jsonl (and TensorBoard) and show it on the progress bar; a failed append
        raises `write_failed`'s sentence."""
        if self.metrics:
            try:
                self.metrics.write(record)
            except OSError as error:
                if self.write_failed is None:
                    raise
                raise self.write_failed(f"the step-{record['step']} metrics", self.metrics.path, error) from None
        if self.tensorboard:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(tensorboard_tag(key), value, record["step"])
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


_PERF_KEYS = frozenset({"tokens_per_s", "mfu"})


def tensorboard_tag(key: str) -> str:
    """The TensorBoard tag of a metrics.jsonl key: `eval_loss` -> `eval/loss`, `routing.block0.entropy_mean` ->
    `routing/block0/entropy_mean`, `aux.load_balancing` -> `train/aux/load_balancing`, `tokens_per_s` and `mfu`
    under `perf/`, every other training number under `train/`."""
    if key.startswith("eval_"):
        return "eval/" + key.removeprefix("eval_")
    if key.startswith("routing."):
        return key.replace(".", "/")
    if key.startswith("aux."):
        return "train/" + key.replace(".", "/")
    return f"perf/{key}" if key in _PERF_KEYS else f"train/{key}"


def config_hparams(payload: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """config.json flattened to TensorBoard hparams (`model/group_size`, `train/lr`, `run_id`); lists and None are
    written as text, so every setting shows in the HPARAMS tab."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(config_hparams(value, prefix=f"{name}/"))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


def _tensorboard_writer(out_dir: Path):
    """The package's presence is checked with the settings (before any data); this opens the writer and, the first
    time TensorBoard logs in this run directory, records the run's config.json as hparams (with the metrics the
    HPARAMS tab compares runs by) and as text."""
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    directory = out_dir / "tensorboard"
    first = not any(directory.glob("events.out.tfevents.*"))
    writer = SummaryWriter(str(directory))
    if first and (out_dir / CONFIG_FILE).is_file():
        payload = read_config(out_dir)  # the one reader of config.json
        metrics = {"eval/loss": float("nan"), "train/loss": float("nan")}  # names only: the values are the scalars
        for summary in hparams(config_hparams(payload), metrics):
            writer.file_writer.add_summary(summary)
        writer.add_text("config", "```json\n" + json.dumps(payload, indent=2) + "\n```")
    return writer
