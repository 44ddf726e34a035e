"""The training loop: AdamW, warmup + cosine, gradient clipping, periodic held-out evaluation, JSONL metrics."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .checkpoint import save_checkpoint
from .config import ModelConfig, TrainConfig
from .counting import count_model
from .data import BatchSampler, PreparedData, eval_batches, prepare_data, unigram_entropy
from .layers import check_group_size
from .metrics import MetricsWriter
from .model import Transformer
from .schedule import lr_multiplier


@dataclass
class RunResult:
    out_dir: Path
    final_eval_loss: float
    eval_losses: dict[int, float]
    unigram_entropy: float
    seconds: float
    tokens_per_second: float


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but no CUDA device is available; allowed here: cpu, auto.")
    return torch.device(name)


def check_run_settings(model_config: ModelConfig, train_config: TrainConfig) -> None:
    """Everything that can be wrong with the settings, checked before any data or compute."""
    if "mot" in model_config.block_ffn_kinds():
        try:
            check_group_size(train_config.batch_size, model_config.group_size)
        except ValueError as error:
            raise ValueError(f"batch_size={train_config.batch_size} with MoT: {error}") from None


def build_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices and expert tensors (dim >= 2), none on biases, norms, temperatures."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2))


@torch.no_grad()
def evaluate_loss(model: Transformer, batches: list[tuple[torch.Tensor, torch.Tensor]], device: torch.device) -> float:
    """Mean LM loss over fixed held-out batches."""
    was_training = model.training
    model.eval()
    losses = [model(x.to(device), y.to(device)).lm_loss.item() for x, y in batches]
    model.train(was_training)
    return sum(losses) / len(losses)


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    *,
    run_name: str = "run",
    data: PreparedData | None = None,
    progress: bool = True,
) -> RunResult:
    """Train one model from scratch and write the run directory; returns the final held-out loss."""
    check_run_settings(model_config, train_config)
    out_dir = Path(train_config.out_dir or f"runs/{run_name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    if train_config.threads:
        torch.set_num_threads(train_config.threads)
    device = resolve_device(train_config.device)

    data = data or prepare_data(train_config.data, vocab_size=model_config.vocab_size, progress=progress)
    model_config = dataclasses.replace(model_config, vocab_size=data.tokenizer.vocab_size)
    seq_len = model_config.max_seq_len
    held_out = eval_batches(data.eval_tokens, train_config.batch_size, seq_len, train_config.eval_batches)
    entropy = unigram_entropy(data.eval_tokens, data.tokenizer.vocab_size)

    torch.manual_seed(train_config.seed)
    model = Transformer(model_config).to(device)
    counts = count_model(model)
    optimizer = build_optimizer(model, train_config)
    sampler = BatchSampler(data.train_tokens, train_config.batch_size, seq_len, seed=train_config.seed)
    (out_dir / "config.json").write_text(
        json.dumps({"model": dataclasses.asdict(model_config), "train": dataclasses.asdict(train_config)}, indent=2)
    )
    if progress:
        print(f"[{run_name}] {counts.summary()}; unigram entropy of held-out text {entropy:.3f} nats")

    metrics = MetricsWriter(out_dir / "metrics.jsonl")
    tokens_per_step = train_config.batch_size * seq_len
    eval_losses: dict[int, float] = {}
    start = time.perf_counter()
    window_start, window_tokens = start, 0
    bar = tqdm(range(train_config.steps), desc=run_name, disable=not progress, dynamic_ncols=True)
    model.train()
    for step in bar:
        lr = train_config.lr * lr_multiplier(
            step,
            warmup_steps=train_config.warmup_steps,
            total_steps=train_config.steps,
            min_ratio=train_config.min_lr_ratio,
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        inputs, targets = (t.to(device, non_blocking=True) for t in sampler.next_batch())
        output = model(inputs, targets)
        output.loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(
            model.parameters(), train_config.grad_clip if train_config.grad_clip > 0 else math.inf
        )
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window_tokens += tokens_per_step

        done = step + 1
        is_eval_step = done % train_config.eval_every == 0 or done == train_config.steps
        if done % train_config.log_every == 0 or is_eval_step:
            loss = output.loss.item()
            if not math.isfinite(loss):
                metrics.close()
                raise FloatingPointError(f"non-finite loss {loss} at step {done}; stats: {model.routing_stats()}")
            now = time.perf_counter()
            tokens_per_second = window_tokens / max(now - window_start, 1e-9)
            window_start, window_tokens = now, 0
            record = {
                "step": done,
                "loss": loss,
                "lm_loss": output.lm_loss.item(),
                "lr": lr,
                "grad_norm": float(grad_norm),
                "tokens": done * tokens_per_step,
                "tokens_per_s": tokens_per_second,
                **{f"aux.{k}": v.item() for k, v in output.aux_losses.items()},
                **{f"routing.{k}": v for k, v in model.routing_stats().items()},
            }
            if is_eval_step:
                eval_losses[done] = record["eval_loss"] = evaluate_loss(model, held_out, device)
            metrics.write(record)
            postfix = {"loss": f"{loss:.3f}", "tok/s": f"{tokens_per_second:,.0f}"}
            if eval_losses:
                postfix["eval"] = f"{eval_losses[max(eval_losses)]:.3f}"
            bar.set_postfix(postfix, refresh=False)
    bar.close()
    metrics.close()
    seconds = time.perf_counter() - start

    save_checkpoint(out_dir, model, model_config, train_config, data.tokenizer, extra={"run": run_name})
    result = RunResult(
        out_dir=out_dir,
        final_eval_loss=eval_losses[train_config.steps],
        eval_losses=eval_losses,
        unigram_entropy=entropy,
        seconds=seconds,
        tokens_per_second=train_config.steps * tokens_per_step / seconds,
    )
    summary = {
        "run": run_name,
        "final_eval_loss": result.final_eval_loss,
        "eval_losses": eval_losses,
        "unigram_entropy": entropy,
        "seconds": seconds,
        "tokens_per_s": result.tokens_per_second,
        "counts": counts.as_dict(),
        "data": data.manifest,
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return result
