"""Eval-and-checkpoint: held-out evaluation at eval steps, resumable checkpoints, and the run directory's final
files (weights with their sha256 manifest, config, summary).

Gathering the full state is collective under FSDP (every rank calls), writing is rank 0's. Every checkpoint and
the final files carry the run id; a run always ends with a resumable checkpoint of its last step, even with
checkpoint_every = 0, so a finished run can be extended with `--resume`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import config_payload, save_checkpoint, tied_parameter_names
from ..counting import ModelCounts
from ..data import BatchSampler, PreparedData
from ..evaluation.loss import evaluate_loss
from ..files import write_failed, write_json_atomic
from ..model import Transformer
from ..runtime import distributed as dist_utils
from ..runtime.precision import Precision
from ..spelling import setting
from .errors import CheckpointWriteError
from .metrics import jsonable
from .plan import RunPlan
from .run_files import CHECKPOINTS_DIR, SUMMARY_FILE
from .state import TrainingState, capture_rng_state, list_checkpoints, save_training_checkpoint


@dataclass
class TrainedModel:
    """The parts of a run that a checkpoint captures."""

    model: nn.Module  # as trained (maybe wrapped in DDP / FSDP / torch.compile)
    raw_model: Transformer  # the plain module inside
    optimizer: torch.optim.Optimizer
    sampler: BatchSampler


class Checkpointer:
    """Evaluates and writes the checkpoints and final files of one run."""

    def __init__(
        self,
        plan: RunPlan,
        trained: TrainedModel,
        data: PreparedData,
        *,
        context: dist_utils.DistributedContext,
        device: torch.device,
        precision: Precision,
        held_out: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> None:
        self.plan, self.trained, self.data = plan, trained, data
        self.context, self.device, self.precision, self.held_out = context, device, precision, held_out
        self.eval_losses: dict[int, float] = {}
        self.last_good: Path | None = plan.resume.checkpoint if plan.resume else None
        self.last_saved_step: int | None = None
        self.summary_extra: dict[str, Any] = {}  # e.g. the architecture switch of a transition-tuning run

    def config_payload(self) -> dict[str, Any]:
        """config.json of the run, its checkpoints and its final weights."""
        plan = self.plan
        extra: dict[str, Any] = {
            "run": plan.name,
            "run_id": plan.run_id,
            "data_fingerprint": self.data.manifest.get("source_fingerprint"),
        }
        if plan.resume is not None and plan.resume.branch:
            extra["branched_from"] = {
                "run_id": plan.resume.saved.get("run_id"),
                "step": plan.resume.step,
                "checkpoint": plan.resume.checkpoint.name,
            }
        if plan.init_from is not None:
            extra["init_from"] = str(plan.init_from.resolve())
        return config_payload(plan.model_config, plan.train_config, **extra)

    def evaluate(self, step: int) -> float:
        loss = self.held_out_loss(self.trained.model)
        self.eval_losses[step] = loss
        return loss

    def held_out_loss(self, model: nn.Module) -> float:
        """The held-out loss of any model on this run's fixed eval batches (nothing recorded), run in the training
        step's micro-batches (this rank's rows / grad_accum_steps), rounded up to the rows the layers couple."""
        config = self.plan.train_config
        micro_batch = dist_utils.micro_batch_size(config.batch_size, self.context, config.grad_accum_steps)
        return evaluate_loss(
            model, self.held_out, self.device, precision=self.precision, context=self.context, micro_batch=micro_batch
        )

    def save(self, step: int) -> Path | None:
        """A resumable checkpoint of `step` (collective; rank 0 writes and returns its path)."""
        trained = self.trained
        model_state, optimizer_state = dist_utils.full_state_dicts(trained.model, trained.optimizer)
        path = None
        if self.context.is_main:
            state = TrainingState(
                step=step,
                model_state=model_state,
                optimizer_state=optimizer_state,
                sampler_state=trained.sampler.state_dict(),
                rng_state=capture_rng_state(),
                eval_losses=self.eval_losses,
            )
            try:
                path = save_training_checkpoint(
                    self.plan.run_dir,
                    state,
                    config=self.config_payload(),
                    tokenizer=self.data.tokenizer,
                    run_id=self.plan.run_id,
                    tied_names=tied_parameter_names(trained.raw_model),
                    keep=self.plan.train_config.keep_checkpoints,
                )
            except OSError as error:
                what = f"the step-{step} checkpoint"
                raise self.write_failed(what, self.plan.run_dir / CHECKPOINTS_DIR, error) from None
            self.last_good = path
        self.last_saved_step = step
        dist_utils.barrier(self.context)
        return path

    def last_good_checkpoint(self) -> Path | None:
        """The newest checkpoint this run can go back to: its last save, the one it resumed from, or None."""
        if self.last_good is not None:
            return self.last_good
        newest = list_checkpoints(self.plan.run_dir, self.plan.run_id)
        return newest[-1] if newest else None

    def write_failed(self, what: str, where: Path, error: BaseException) -> CheckpointWriteError:
        """A failed write during the run (a full disk) as the one sentence that stops it: what could not be written
        where, why, the free space there, and the last good checkpoint to resume from."""
        last_good = self.last_good_checkpoint()
        if last_good is None:
            kept = (
                "the partial write was removed; no checkpoint was written yet: free some space and start again with "
                f"{setting('force', True)}"
            )
        else:
            kept = (
                f"the partial write was removed and the earlier checkpoints are intact; the last good checkpoint is "
                f"{last_good}: free some space and resume it with "
                f"{setting('resume_from', self.plan.run_dir, command='train')}"
            )
        return write_failed(what, where, error, kept + ".", error_type=CheckpointWriteError)

    def finish(self, *, seconds: float, tokens_per_second: float, counts: ModelCounts, unigram_entropy: float) -> None:
        """The last step's checkpoint (unless just written), then the final weights and the summary."""
        config = self.plan.train_config
        if self.last_saved_step != config.steps:
            self.save(config.steps)
        model_state = None
        if self.context.enabled:  # gather the full weights (collective; only rank 0 receives them)
            model_state, _ = dist_utils.full_state_dicts(self.trained.model, self.trained.optimizer)
        if not self.context.is_main:
            return
        summary = {
            "run": self.plan.name,
            "run_id": self.plan.run_id,
            "final_eval_loss": self.eval_losses.get(config.steps),
            "eval_losses": self.eval_losses,
            "unigram_entropy": unigram_entropy,
            "seconds": seconds,
            "tokens_per_s": tokens_per_second,
            "counts": counts.as_dict(),
            "precision": str(self.precision),
            "world_size": self.context.world_size,
            "resumed_from_step": self.plan.start_step or None,
            "data": self.data.manifest,
            **self.summary_extra,
        }
        try:
            final_model = self._plain_model(model_state)
            payload = self.config_payload()
            extra = {k: v for k, v in payload.items() if k not in ("model", "train")}
            save_checkpoint(
                self.plan.run_dir, final_model, self.plan.model_config, config, self.data.tokenizer, extra=extra
            )
            write_json_atomic(self.plan.run_dir / SUMMARY_FILE, jsonable(summary))
        except OSError as error:
            kept = (
                f"no half-written file is left there, and the step-{config.steps} checkpoint "
                f"{self.last_good_checkpoint()} holds the same weights and loads as the run would: use it as it is, "
                f"or free some space and extend the run with "
                f"{setting('resume_from', self.plan.run_dir, command='train')} and a larger {setting('steps')}."
            )
            what = f"the final weights and {SUMMARY_FILE}"
            raise write_failed(what, self.plan.run_dir, error, kept, error_type=CheckpointWriteError) from None

    def _plain_model(self, model_state: dict[str, torch.Tensor] | None) -> Transformer:
        """A single-device float copy of the weights for the run directory's final files."""
        if model_state is None:
            return self.trained.raw_model
        plain = Transformer(self.plan.model_config)
        plain.load_state_dict(model_state)
        return plain
