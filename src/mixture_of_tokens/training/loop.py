"""The training loop: AdamW, warmup + cosine, gradient clipping and accumulation, held-out evaluation, JSONL
metrics, resumable checkpoints, bf16 modes, and data parallelism through torchrun (DDP / FSDP2).

The loop knows nothing of routing: layers record their auxiliary losses (added to the loss by the model) and
their statistics (logged here at log steps).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..checkpoint import WEIGHTS_FILE, load_weights_into, read_weights, save_checkpoint, tied_parameter_names
from ..config import ModelConfig, TrainConfig
from ..counting import count_model
from ..data import BatchSampler, PreparedData, eval_batches, prepare_data, unigram_entropy
from ..evaluation.loss import evaluate_loss
from ..layers import batch_multiple, check_group_size
from ..layers.routing_stats import CollapseMonitor
from ..model import Transformer
from ..runtime import distributed as dist_utils
from ..runtime.devices import resolve_device
from ..runtime.precision import resolve_precision
from .guards import InterruptFlag, check_output_dir, peak_flops_per_second
from .metrics import MetricsWriter, read_metrics
from .schedule import lr_multiplier
from .state import (
    METRICS_FILE,
    TrainingState,
    capture_rng_state,
    load_training_checkpoint,
    resolve_resume_checkpoint,
    restore_rng_state,
    save_training_checkpoint,
)


@dataclass
class RunResult:
    out_dir: Path
    final_eval_loss: float
    eval_losses: dict[int, float]
    unigram_entropy: float
    seconds: float
    tokens_per_second: float
    stopped_early: bool = False


def check_run_settings(model_config: ModelConfig, train_config: TrainConfig, world_size: int = 1) -> None:
    """Everything that can be wrong with the settings, checked before any data or compute."""
    micro = dist_utils.micro_batch_size(
        train_config.batch_size, dist_utils.DistributedContext(world_size=world_size), train_config.grad_accum_steps
    )
    multiple = batch_multiple(model_config)
    if multiple > 1:
        try:
            check_group_size(micro, multiple)
        except ValueError as error:
            where = (
                f"the per-rank micro-batch batch_size / (ranks x grad_accum_steps) = {micro}"
                if micro != train_config.batch_size
                else f"batch_size={micro}"
            )
            raise ValueError(f"same-position groups form inside {where}: {error}") from None


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and expert tensors (dim >= 2), none on biases, norms, temperatures."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2))


class Trainer:
    """One training run: set up (all checks before any compute), then `run()`."""

    def __init__(
        self,
        model_config: ModelConfig,
        train_config: TrainConfig,
        *,
        run_name: str = "run",
        data: PreparedData | None = None,
        progress: bool = True,
        resume_from: Path | None = None,
        init_from: Path | None = None,
    ) -> None:
        self.device = resolve_device(train_config.device)
        self.context = dist_utils.init_distributed(self.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.context.local_rank)
        self.is_main = self.context.is_main
        self.progress = progress and self.is_main
        self.run_name = run_name

        resume_state: TrainingState | None = None
        if resume_from is not None:
            checkpoint_dir, warnings = resolve_resume_checkpoint(Path(resume_from))
            for warning in warnings:
                self._say(f"warning: {warning}")
            saved, resume_state = load_training_checkpoint(checkpoint_dir)
            model_config = ModelConfig(**saved["model"])
            self._say(f"[{run_name}] resuming from {checkpoint_dir} (step {resume_state.step})")
        check_run_settings(model_config, train_config, self.context.world_size)
        self.precision = resolve_precision(train_config.precision, self.device)
        self.out_dir = Path(train_config.out_dir or f"runs/{run_name}")
        if self.is_main:
            check_output_dir(self.out_dir, model_config, train_config, self.precision)
        if train_config.threads:
            torch.set_num_threads(train_config.threads)
        if train_config.deterministic:
            torch.use_deterministic_algorithms(True)

        self.data = data or self._prepare_data(train_config, model_config)
        model_config = dataclasses.replace(model_config, vocab_size=self.data.tokenizer.vocab_size)
        self.model_config, self.config = model_config, train_config
        seq_len = model_config.max_seq_len
        self.held_out = eval_batches(self.data.eval_tokens, train_config.batch_size, seq_len, train_config.eval_batches)
        self.unigram_entropy = unigram_entropy(self.data.eval_tokens, self.data.tokenizer.vocab_size)

        torch.manual_seed(train_config.seed)
        raw_model = Transformer(model_config)
        if init_from is not None:  # the weights only: optimizer and schedule start fresh
            load_weights_into(raw_model, read_weights(Path(init_from) / WEIGHTS_FILE))
        self.counts = count_model(raw_model)
        self.raw_model = self.precision.prepare_model(raw_model).to(self.device)
        self.model = dist_utils.wrap_model(self.raw_model, self.context, train_config.parallel, self.device)
        if train_config.compile:
            self.model = torch.compile(self.model)
        self.optimizer = build_optimizer(self.model, train_config)
        self.sampler = BatchSampler(self.data.train_tokens, train_config.batch_size, seq_len, seed=train_config.seed)
        self.start_step = 0
        self.eval_losses: dict[int, float] = {}
        if resume_state is not None:
            self._restore(resume_state)
        self._say(
            f"[{run_name}] {self.counts.summary()}; precision {self.precision}; "
            f"{self.context.world_size} rank(s); unigram entropy of held-out text {self.unigram_entropy:.3f} nats"
        )

    def _say(self, message: str) -> None:
        if self.progress:
            tqdm.write(message)

    def _prepare_data(self, train_config: TrainConfig, model_config: ModelConfig) -> PreparedData:
        """Rank 0 builds the token files; the other ranks wait, then read the cache."""
        if self.context.enabled and not self.is_main:
            dist_utils.barrier(self.context)
        data = prepare_data(
            train_config.data,
            vocab_size=model_config.vocab_size,
            progress=self.progress,
            tokenizer=train_config.tokenizer,
        )
        if self.context.enabled and self.is_main:
            dist_utils.barrier(self.context)
        return data

    def _restore(self, state: TrainingState) -> None:
        dist_utils.load_full_state_dicts(self.model, self.optimizer, state.model_state, state.optimizer_state)
        self.sampler.load_state_dict(state.sampler_state)
        restore_rng_state(state.rng_state)
        self.start_step = state.step
        self.eval_losses = dict(state.eval_losses)
        checkpoint_metrics = [r for r in read_metrics(self.out_dir / METRICS_FILE) if r.get("step", 0) <= state.step]
        if self.is_main:  # drop what was logged after the checkpoint: those steps run again
            (self.out_dir / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in checkpoint_metrics))

    def _config_payload(self) -> dict[str, Any]:
        return {
            "model": dataclasses.asdict(self.model_config),
            "train": dataclasses.asdict(self.config),
            "run": self.run_name,
        }

    def save_checkpoint(self, step: int) -> Path | None:
        """Collective under FSDP (every rank gathers), written by rank 0."""
        model_state, optimizer_state = dist_utils.full_state_dicts(self.model, self.optimizer)
        path = None
        if self.is_main:
            state = TrainingState(
                step=step,
                model_state=model_state,
                optimizer_state=optimizer_state,
                sampler_state=self.sampler.state_dict(),
                rng_state=capture_rng_state(),
                eval_losses=self.eval_losses,
            )
            path = save_training_checkpoint(
                self.out_dir,
                state,
                config=self._config_payload(),
                tokenizer=self.data.tokenizer,
                tied_names=tied_parameter_names(self.raw_model),
                keep=self.config.keep_checkpoints,
            )
        dist_utils.barrier(self.context)
        return path

    def _train_step(self, step: int) -> dict[str, Any]:
        config = self.config
        offset = config.lr_schedule_offset  # a continued schedule: this run is steps offset+1 ... offset+steps
        lr = config.lr * lr_multiplier(
            step + offset,
            warmup_steps=config.warmup_steps,
            total_steps=config.steps + offset,
            min_ratio=config.min_lr_ratio,
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = (dist_utils.local_rows(t, self.context) for t in self.sampler.next_batch())
        accumulation = config.grad_accum_steps
        loss_sum = lm_loss_sum = 0.0
        aux_sums: dict[str, float] = {}
        for micro_inputs, micro_targets, index in zip(
            inputs.chunk(accumulation), targets.chunk(accumulation), range(accumulation), strict=True
        ):
            with dist_utils.gradient_sync(self.model, enabled=index == accumulation - 1):
                with self.precision.autocast(self.device):
                    output = self.model(micro_inputs.to(self.device), micro_targets.to(self.device))
                (output.loss / accumulation).backward()
            loss_sum += output.loss.detach()
            lm_loss_sum += output.lm_loss.detach()
            for name, value in output.aux_losses.items():
                aux_sums[name] = aux_sums.get(name, 0.0) + value.detach()
        clip = config.grad_clip if config.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {
            "lr": lr,
            "loss": loss_sum / accumulation,
            "lm_loss": lm_loss_sum / accumulation,
            "grad_norm": grad_norm,
            "aux": {name: value / accumulation for name, value in aux_sums.items()},
        }

    def run(self) -> RunResult:
        config = self.config
        tokens_per_step = config.batch_size * self.model_config.max_seq_len
        train_flops_per_step = self.counts.train_flops_per_token * tokens_per_step
        peak = peak_flops_per_second(self.device, self.precision)
        metrics = MetricsWriter(self.out_dir / METRICS_FILE, append=self.start_step > 0) if self.is_main else None
        tensorboard = self._tensorboard() if self.is_main and config.tensorboard else None
        interrupt = InterruptFlag()
        collapse = CollapseMonitor(
            share=config.collapse_share, patience=max(config.collapse_patience // config.log_every, 1)
        )
        bar = tqdm(
            total=config.steps,
            initial=self.start_step,
            desc=self.run_name,
            disable=not self.progress,
            dynamic_ncols=True,
        )
        start = window_start = time.perf_counter()
        window_steps = 0
        step = self.start_step
        stopped_early = False
        self.model.train()
        try:
            with interrupt:
                while step < config.steps:
                    self.raw_model.on_train_step(step)  # layers' per-step hooks, e.g. the end of a temperature freeze
                    result = self._train_step(step)
                    step += 1
                    window_steps += 1
                    bar.update(1)
                    is_eval = step % config.eval_every == 0 or step == config.steps
                    is_checkpoint = config.checkpoint_every and step % config.checkpoint_every == 0
                    if not (step % config.log_every == 0 or is_eval or is_checkpoint or interrupt.is_set()):
                        continue
                    loss = dist_utils.all_reduce_mean(float(result["loss"]), self.context, self.device)
                    if not math.isfinite(loss):
                        raise FloatingPointError(
                            f"non-finite loss {loss} at step {step}; the last good checkpoint is left untouched; "
                            f"routing statistics: {self.raw_model.routing_stats()}"
                        )
                    now = time.perf_counter()
                    tokens_per_second = window_steps * tokens_per_step / max(now - window_start, 1e-9)
                    window_start, window_steps = now, 0
                    record = {
                        "step": step,
                        "loss": loss,
                        "lm_loss": dist_utils.all_reduce_mean(float(result["lm_loss"]), self.context, self.device),
                        "lr": result["lr"],
                        "grad_norm": float(result["grad_norm"]),
                        "tokens": step * tokens_per_step,
                        "tokens_per_s": tokens_per_second,
                        **{f"aux.{k}": float(v) for k, v in result["aux"].items()},
                        **{f"routing.{k}": v for k, v in self.raw_model.routing_stats().items()},
                    }
                    if peak:
                        record["mfu"] = train_flops_per_step * tokens_per_second / tokens_per_step / peak
                    for warning in collapse.update(self.raw_model, step):
                        record.setdefault("warnings", []).append(warning)
                        self._say(f"warning: {warning}")
                    if is_eval:
                        self.eval_losses[step] = record["eval_loss"] = evaluate_loss(
                            self.model, self.held_out, self.device, precision=self.precision, context=self.context
                        )
                    if metrics:
                        metrics.write(record)
                    if tensorboard:
                        for key, value in record.items():
                            if key != "step" and isinstance(value, (int, float)):
                                tensorboard.add_scalar(key, value, step)
                    self._show(bar, record)
                    if is_checkpoint:
                        self.save_checkpoint(step)
                    if self._stop_requested(interrupt):
                        stopped_early = True
                        path = self.save_checkpoint(step)
                        self._say(f"[{self.run_name}] interrupted at step {step}; checkpoint written to {path}")
                        break
        finally:
            bar.close()
            if metrics:
                metrics.close()
            if tensorboard:
                tensorboard.close()
        seconds = time.perf_counter() - start
        tokens_per_second = (step - self.start_step) * tokens_per_step / max(seconds, 1e-9)
        if not stopped_early:
            self._finish(seconds, tokens_per_second)
        return RunResult(
            out_dir=self.out_dir,
            final_eval_loss=self.eval_losses.get(step, math.nan),
            eval_losses=dict(self.eval_losses),
            unigram_entropy=self.unigram_entropy,
            seconds=seconds,
            tokens_per_second=tokens_per_second,
            stopped_early=stopped_early,
        )

    def _stop_requested(self, interrupt: InterruptFlag) -> bool:
        flag = 1.0 if interrupt.is_set() else 0.0
        return dist_utils.all_reduce_mean(flag, self.context, self.device) > 0

    def _show(self, bar: tqdm, record: dict[str, Any]) -> None:
        postfix = {"loss": f"{record['loss']:.3f}", "tok/s": f"{record['tokens_per_s']:,.0f}"}
        if "mfu" in record:
            postfix["mfu"] = f"{record['mfu']:.1%}"
        if self.eval_losses:
            postfix["eval"] = f"{self.eval_losses[max(self.eval_losses)]:.3f}"
        bar.set_postfix(postfix, refresh=False)

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ValueError("tensorboard=True needs the tensorboard package: pip install tensorboard.") from None
        return SummaryWriter(str(self.out_dir / "tensorboard"))

    def _finish(self, seconds: float, tokens_per_second: float) -> None:
        """Final checkpoint (when checkpointing) and the run directory's final weights and summary."""
        config = self.config
        if config.checkpoint_every and config.steps % config.checkpoint_every != 0:
            self.save_checkpoint(config.steps)
        model_state = None
        if self.context.enabled:  # gather the full weights (collective; only rank 0 receives them)
            model_state, _ = dist_utils.full_state_dicts(self.model, self.optimizer)
        if not self.is_main:
            return
        final_model = self._plain_model(model_state)
        save_checkpoint(
            self.out_dir, final_model, self.model_config, config, self.data.tokenizer, extra={"run": self.run_name}
        )
        summary = {
            "run": self.run_name,
            "final_eval_loss": self.eval_losses.get(config.steps),
            "eval_losses": self.eval_losses,
            "unigram_entropy": self.unigram_entropy,
            "seconds": seconds,
            "tokens_per_s": tokens_per_second,
            "counts": self.counts.as_dict(),
            "precision": str(self.precision),
            "world_size": self.context.world_size,
            "resumed_from_step": self.start_step or None,
            "data": self.data.manifest,
        }
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))

    def _plain_model(self, model_state: dict[str, torch.Tensor] | None) -> Transformer:
        """A single-device float copy of the weights for the run directory's final files."""
        if model_state is None:
            return self.raw_model
        plain = Transformer(self.model_config)
        plain.load_state_dict(model_state)
        return plain


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    run_name: str = "run",
    data: PreparedData | None = None,
    progress: bool = True,
    resume_from: Path | None = None,
    init_from: Path | None = None,
) -> RunResult:
    """Train one model (from scratch, from `init_from` weights, or resuming `resume_from`) and write its run
    directory; returns the final held-out loss."""
    trainer = Trainer(
        model_config,
        train_config,
        run_name=run_name,
        data=data,
        progress=progress,
        resume_from=resume_from,
        init_from=init_from,
    )
    try:
        return trainer.run()
    finally:
        dist_utils.shutdown(trainer.context)
