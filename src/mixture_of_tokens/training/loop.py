"""The training loop: AdamW, warmup + cosine, gradient clipping and accumulation, held-out evaluation, JSONL
metrics, resumable checkpoints, bf16 modes, and data parallelism through torchrun (DDP / FSDP2).

A run is resolved once by `plan.plan_run` (configs, run directory, run id, every check) before any data; the
trainer sets up data and model, claims the run directory, then loops. The pieces: `step` (one optimizer step
and the non-finite guard), `log` (metrics records and progress), `checkpointing` (eval, checkpoints, final
files). The loop knows nothing of routing: layers record their auxiliary losses (added to the loss by the model)
and their statistics (logged at log steps).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import WEIGHTS_FILE, load_weights_into, read_weights
from ..config import ModelConfig, TrainConfig
from ..counting import count_model
from ..data import BatchSampler, PreparedData, eval_batches, prepare_data, unigram_entropy
from ..files import write_text_atomic
from ..layers.conversion import has_convertible_layers
from ..layers.routing_stats import CollapseMonitor
from ..model import Transformer
from ..runtime import distributed as dist_utils
from .checkpointing import Checkpointer, TrainedModel
from .errors import NonFiniteError, non_finite_message
from .guards import InterruptFlag, peak_flops_per_second
from .log import RunLog
from .metrics import read_metrics
from .plan import RunPlan, check_resumed_tokenizer, check_run_settings, plan_run
from .run_directory import claim_run_directory, lock_run_directory
from .run_files import METRICS_FILE
from .run_lock import RunLock
from .state import TrainingState, load_training_state, restore_rng_state
from .step import OptimizerStep, StepResult, build_optimizer, with_implementation_of
from .switch import switch_in_place, switched_copy

__all__ = ["RunResult", "Trainer", "build_optimizer", "check_run_settings", "train"]


@dataclass
class RunResult:
    out_dir: Path
    final_eval_loss: float
    eval_losses: dict[int, float]
    unigram_entropy: float
    seconds: float
    tokens_per_second: float
    stopped_early: bool = False


class Trainer:
    """One training run: set up (all checks before any data or compute), then `run()`."""

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
        force: bool = False,
    ) -> None:
        plan = plan_run(
            model_config, train_config, name=run_name, resume_from=resume_from, init_from=init_from, force=force
        )
        self._set_up(plan, data=data, progress=progress)

    @classmethod
    def from_plan(cls, plan: RunPlan, *, data: PreparedData | None = None, progress: bool = True) -> Trainer:
        """A trainer for a run already resolved by `plan_run` (the command line's way)."""
        trainer = cls.__new__(cls)
        trainer._set_up(plan, data=data, progress=progress)
        return trainer

    def _set_up_runtime(self, plan: RunPlan, *, progress: bool) -> None:
        """Device, process group, precision and torch's global settings."""
        self.device = plan.device
        self.context = dist_utils.init_distributed(self.device)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.context.local_rank)
        self.is_main = self.context.is_main
        self.progress = progress and self.is_main
        self.run_name = plan.name
        self.precision = plan.precision
        if plan.train_config.threads:
            torch.set_num_threads(plan.train_config.threads)
        if plan.train_config.deterministic:
            torch.use_deterministic_algorithms(True)

    def _set_up(self, plan: RunPlan, *, data: PreparedData | None, progress: bool) -> None:
        """Lock the run directory (rank 0), then set up; a failed setup releases the lock."""
        self._set_up_runtime(plan, progress=progress)
        self.lock = lock_run_directory(plan) if self.is_main else RunLock()
        try:
            self._set_up_run(plan, data=data)
        except BaseException:
            self.lock.release()
            raise

    def _set_up_run(self, plan: RunPlan, *, data: PreparedData | None) -> None:
        """Data, model and optimizer; then the run directory is claimed and a resumed state restored."""
        for warning in plan.resume.warnings if plan.resume else ():
            self._say(f"warning: {warning}")
        self.data = data or self._prepare_data(plan.train_config, plan.model_config)
        check_resumed_tokenizer(plan, self.data.tokenizer.fingerprint())
        vocab_size = self.data.tokenizer.vocab_size
        self.plan = plan = dataclasses.replace(
            plan, model_config=dataclasses.replace(plan.model_config, vocab_size=vocab_size)
        )
        self.model_config, self.config, self.out_dir = plan.model_config, plan.train_config, plan.run_dir
        held_out = eval_batches(
            self.data.eval_tokens,
            self.config.batch_size,
            self.model_config.max_seq_len,
            self.config.eval_batches,
            mask_token_id=self.model_config.mask_token_id,  # masked objective: fixed BERT masks
        )
        self.unigram_entropy = unigram_entropy(self.data.eval_tokens, vocab_size)
        self._build_model(plan)
        self.checkpointer = Checkpointer(
            plan,
            TrainedModel(self.model, self.raw_model, self.optimizer, self.sampler),
            self.data,
            context=self.context,
            device=self.device,
            precision=self.precision,
            held_out=held_out,
        )
        resume_state = load_training_state(plan.resume.checkpoint) if plan.resume else None
        if self.is_main:
            for note in claim_run_directory(plan, self.checkpointer.config_payload(), self.lock):
                self._say(f"[{self.run_name}] {note}")
        self.start_step = 0
        if resume_state is not None:
            self._say(f"[{self.run_name}] resuming from {plan.resume.checkpoint} (step {resume_state.step})")
            self._restore(resume_state)
        self._say(
            f"[{self.run_name}] {self.counts.summary()}; precision {self.precision}; "
            f"{self.context.world_size} rank(s); unigram entropy of held-out text {self.unigram_entropy:.3f} nats"
        )

    def _build_model(self, plan: RunPlan) -> None:
        config = plan.train_config
        torch.manual_seed(config.seed)
        raw_model = Transformer(plan.model_config)
        if plan.init_from is not None:  # the weights only: optimizer and schedule start fresh
            load_weights_into(raw_model, read_weights(plan.init_from / WEIGHTS_FILE))
        self.counts = count_model(raw_model)
        self.raw_model = self.precision.prepare_model(raw_model).to(self.device)
        self.model = dist_utils.wrap_model(self.raw_model, self.context, config.parallel, self.device)
        if self._compiles():
            self.model = torch.compile(self.model)
        self.optimizer = build_optimizer(self.model, config)
        self.optimizer_step = OptimizerStep(
            self.model, self.optimizer, config, context=self.context, device=self.device, precision=self.precision
        )
        self.sampler = BatchSampler(
            self.data.train_tokens,
            config.batch_size,
            plan.model_config.max_seq_len,
            seed=config.seed,
            mask_token_id=plan.model_config.mask_token_id,  # masked objective: BERT masks drawn by (seed, step)
        )

    @property
    def eval_losses(self) -> dict[int, float]:
        return self.checkpointer.eval_losses

    def _say(self, message: str) -> None:
        if self.progress:
            from tqdm.auto import tqdm

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
            text_column=train_config.text_column,
        )
        if self.context.enabled and self.is_main:
            dist_utils.barrier(self.context)
        return data

    def _restore(self, state: TrainingState) -> None:
        optimizer_state = with_implementation_of(self.optimizer, state.optimizer_state)  # fused on CUDA only
        dist_utils.load_full_state_dicts(self.model, self.optimizer, state.model_state, optimizer_state)
        self.sampler.load_state_dict(state.sampler_state)
        restore_rng_state(state.rng_state)
        self.start_step = state.step
        self.eval_losses.update(state.eval_losses)
        if self.is_main:  # drop what was logged after the checkpoint: those steps run again
            metrics = self.out_dir / METRICS_FILE
            kept = [r for r in read_metrics(metrics) if r.get("step", 0) <= state.step]
            try:
                write_text_atomic(metrics, "".join(json.dumps(r) + "\n" for r in kept))
            except OSError as error:
                raise self.checkpointer.write_failed("the resumed run's metrics", metrics, error) from None
        dist_utils.barrier(self.context)

    def run(self) -> RunResult:
        """Train to the last step (or a stop), write the final files, and release the run directory's lock."""
        try:
            return self._run()
        finally:
            self.lock.release()

    def _run(self) -> RunResult:
        config = self.config
        log = RunLog(
            self.out_dir,
            name=self.run_name,
            total_steps=config.steps,
            start_step=self.start_step,
            tokens_per_step=config.batch_size * self.model_config.max_seq_len,
            peak_flops=peak_flops_per_second(self.device, self.precision),
            train_flops_per_token=self.counts.train_flops_per_token,
            context=self.context,
            progress=self.progress,
            tensorboard=config.tensorboard,
            write_failed=self.checkpointer.write_failed,
        )
        interrupt = InterruptFlag()
        collapse = CollapseMonitor(
            share=config.collapse_share, patience=max(config.collapse_patience // config.log_every, 1)
        )
        start = time.perf_counter()
        step, stopped_early = self.start_step, False
        self.model.train()
        try:
            with interrupt:
                while step < config.steps and not stopped_early:
                    if config.switch_to and step == config.switch_at and has_convertible_layers(self.model_config):
                        self._switch(step, log)
                    # layers' per-step hooks, e.g. the end of a temperature freeze or a scheduled temperature
                    self.raw_model.on_train_step(step, config.steps)
                    result = self.optimizer_step(step, self.sampler.next_batch())
                    step += 1
                    log.count_step()
                    if self._is_report_step(step, interrupt):
                        stopped_early = self._report(step, result, log, collapse, interrupt)
        finally:
            log.close()
        seconds = time.perf_counter() - start
        tokens_per_second = (step - self.start_step) * log.tokens_per_step / max(seconds, 1e-9)
        if not stopped_early:
            self.checkpointer.finish(
                seconds=seconds, tokens_per_second=tokens_per_second, counts=self.counts,
                unigram_entropy=self.unigram_entropy,
            )  # fmt: skip
        return RunResult(
            out_dir=self.out_dir,
            final_eval_loss=self.eval_losses.get(step, math.nan),
            eval_losses=dict(self.eval_losses),
            unigram_entropy=self.unigram_entropy,
            seconds=seconds,
            tokens_per_second=tokens_per_second,
            stopped_early=stopped_early,
        )

    def _is_report_step(self, step: int, interrupt: InterruptFlag) -> bool:
        config = self.config
        return (
            step % config.log_every == 0
            or self._is_eval_step(step)
            or self._is_checkpoint_step(step)
            or interrupt.is_set()
        )

    def _is_eval_step(self, step: int) -> bool:
        return step % self.config.eval_every == 0 or step == self.config.steps

    def _is_checkpoint_step(self, step: int) -> bool:
        return bool(self.config.checkpoint_every) and step % self.config.checkpoint_every == 0

    def _report(
        self, step: int, result: StepResult, log: RunLog, collapse: CollapseMonitor, interrupt: InterruptFlag
    ) -> bool:
        """Check, log, evaluate and checkpoint at `step`; True when the run stops here (Ctrl-C)."""
        self._stop_if_non_finite(step, result, log)
        record = log.record(step, result, self.raw_model.routing_stats())
        for warning in collapse.update(self.raw_model, step):
            record.setdefault("warnings", []).append(warning)
            log.say(f"warning: {warning}")
        if self._is_eval_step(step):
            record["eval_loss"] = self.checkpointer.evaluate(step)
            if self.config.eval_also and has_convertible_layers(self.model_config):  # the loss if switched now
                switched = switched_copy(self.raw_model, self.config.eval_also)
                record[f"eval_loss_if_{self.config.eval_also}"] = self.checkpointer.held_out_loss(switched)
        log.write(record, self.eval_losses[max(self.eval_losses)] if self.eval_losses else None)
        if self._is_checkpoint_step(step):
            self.checkpointer.save(step)
        if not self._stop_requested(interrupt):
            return False
        path = self.checkpointer.save(step)
        log.say(f"[{self.run_name}] interrupted at step {step}; checkpoint written to {path}")
        return True

    def _compiles(self) -> bool:
        """`compile` as set, or when unset: on CUDA only (on CPU, compiling a small model costs more than it
        saves)."""
        wanted = self.config.compile
        return self.device.type == "cuda" if wanted is None else wanted

    def _switch(self, step: int, log: RunLog) -> None:
        """Transition tuning inside the run: every MoT layer becomes `switch_to`, made of the same parameters (AdamW
        keeps their moments, the LR schedule runs on); logs the held-out loss just before and just after."""
        target = self.config.switch_to
        before = self.checkpointer.held_out_loss(self.model)
        converted = switch_in_place(self.raw_model, self.optimizer, target)
        self.model = dist_utils.wrap_model(self.raw_model, self.context, self.config.parallel, self.device)
        if self._compiles():
            self.model = torch.compile(self.model)
        self.optimizer_step.model = self.checkpointer.trained.model = self.model
        self.plan = self.checkpointer.plan = dataclasses.replace(self.plan, model_config=converted)
        self.model_config, self.counts = converted, count_model(self.raw_model)
        after = self.checkpointer.held_out_loss(self.model)
        record = {"step": step, "event": "switch", "switch_to": target, "eval_loss_before": before}
        record["eval_loss_after"] = after
        self.checkpointer.summary_extra["switch"] = record
        log.write(record, None)
        log.say(f"[{self.run_name}] step {step}: MoT -> {target}; held-out loss {before:.4f} -> {after:.4f}")

    def _stop_if_non_finite(self, step: int, result: StepResult | None = None, log: RunLog | None = None) -> None:
        """Stop (one sentence) when any step so far had a non-finite loss or gradient norm; that step's gradients
        were zeroed, and nothing is written from here on, so the last checkpoint stays good."""
        bad_step = self.optimizer_step.guard.first_bad_step(self.context, step)
        if bad_step is None:
            return
        if result is not None and log is not None:  # the failing step's values, NaN written as null
            record = {"step": step, "loss": float(result.loss), "grad_norm": float(result.grad_norm)}
            log.write({**record, "stopped": "non-finite loss or gradient norm"}, None)
        resumed_from = self.plan.resume.checkpoint if self.plan.resume else None
        last_good = self.checkpointer.last_good_checkpoint()
        raise NonFiniteError(non_finite_message(bad_step, last_good, resumed_from, self.start_step))

    def _stop_requested(self, interrupt: InterruptFlag) -> bool:
        flag = 1.0 if interrupt.is_set() else 0.0
        return dist_utils.all_reduce_mean(flag, self.context, self.device) > 0


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    run_name: str = "run",
    data: PreparedData | None = None,
    progress: bool = True,
    resume_from: Path | None = None,
    init_from: Path | None = None,
    force: bool = False,
) -> RunResult:
    """Train one model (from scratch, from `init_from` weights, or resuming `resume_from`) and write its run
    directory; returns the final held-out loss."""
    plan = plan_run(
        model_config, train_config, name=run_name, resume_from=resume_from, init_from=init_from, force=force
    )
    return train_plan(plan, data=data, progress=progress)


def train_plan(plan: RunPlan, *, data: PreparedData | None = None, progress: bool = True) -> RunResult:
    """Train a run resolved by `plan_run`."""
    trainer = Trainer.from_plan(plan, data=data, progress=progress)
    try:
        return trainer.run()  # releases the run directory's lock, also on an exception
    finally:
        dist_utils.shutdown(trainer.context)
