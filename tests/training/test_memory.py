"""The memory estimate of `mot train --dry-run`: each feed-forward kind states exactly what it keeps for backward,
the model's total matches saved-tensor hooks, the estimate is within 15% of the peak RSS of real training steps on
the CPU for the tiny preset (and the runtime constant within 15% of what training a negligible model adds), the
held-out evaluation's peak (micro-batches without gradients, the chunked loss) is counted and named when it is the
larger one, and the dry run says which device and precision it assumes."""

from __future__ import annotations

import dataclasses
import functools
import os
import subprocess
import sys
from functools import partial

import pytest
import torch

from mixture_of_tokens.cli import main
from mixture_of_tokens.counting import count_model
from mixture_of_tokens.layers import build_ffn, layer_class
from mixture_of_tokens.model import Transformer
from mixture_of_tokens.presets import get_preset
from mixture_of_tokens.runtime.precision import resolve_precision
from mixture_of_tokens.training.memory import (
    block_values_per_token,
    cpu_runtime_bytes,
    estimate_run_memory,
    estimate_training_memory,
    evaluation_values_per_token,
)

TINY_MOT = get_preset("tiny-mot").model
LAYER_CASES = {
    "dense": get_preset("tiny-dense").model,
    "mot": TINY_MOT,
    "mot, 32 experts of 128": dataclasses.replace(TINY_MOT, n_experts=32, expert_size=128),
    "mot, emit over experts": dataclasses.replace(TINY_MOT, mot_emit="experts"),
    "mot, learnable temperature": dataclasses.replace(TINY_MOT, mot_learnable_temperature="per_expert"),
    "token choice": get_preset("tiny-token-choice").model,
    "token choice, z-loss": dataclasses.replace(get_preset("tiny-token-choice").model, z_loss_weight=0.01),
    "expert choice": get_preset("tiny-expert-choice").model,
    "expert choice, 2 tokens per expert": dataclasses.replace(
        get_preset("tiny-expert-choice").model, ec_tokens_per_expert=2
    ),
    "dense, swiglu": dataclasses.replace(get_preset("tiny-dense").model, ffn_activation="swiglu", dense_bias=False),
    "mot, swiglu": dataclasses.replace(TINY_MOT, ffn_activation="swiglu"),
    "mot, swiglu, recomputed": dataclasses.replace(TINY_MOT, ffn_activation="swiglu", mot_compute="recompute"),
    "token choice, swiglu, top-2 renormalised": dataclasses.replace(
        get_preset("tiny-token-choice").model, ffn_activation="swiglu", top_k=2, tc_norm_topk_prob=True
    ),
    "expert choice, swiglu": dataclasses.replace(get_preset("tiny-expert-choice").model, ffn_activation="swiglu"),
}
LLAMA_STYLE = dict(positions="rope", norm="rmsnorm", ffn_activation="swiglu", n_kv_heads=2, dense_bias=False)


def _saved_values_per_token(module: torch.nn.Module | partial, *inputs: torch.Tensor, tokens: int) -> float:
    """Float32-sized values per token of every tensor autograd keeps for backward (parameters excluded)."""
    storages: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        module(*inputs)
    parameters = {p.untyped_storage().data_ptr() for p in getattr(module, "func", module).parameters()}
    return sum(n for pointer, n in storages.items() if pointer not in parameters) / 4 / tokens


@pytest.mark.parametrize("case", LAYER_CASES)
def test_each_kind_states_what_it_keeps_for_backward(case: str) -> None:
    config = LAYER_CASES[case]
    torch.manual_seed(0)
    layer = build_ffn(config.ffn, config).train()
    x = torch.randn(32, config.max_seq_len, config.d_model, requires_grad=True)  # the presets' batch: 4 groups
    measured = _saved_values_per_token(layer, x, tokens=x.shape[0] * config.max_seq_len)
    assert layer_class(config.ffn).activation_values_per_token(config) == pytest.approx(measured, rel=0.01)


BLOCK_VARIANTS = {
    "llama-style": LLAMA_STYLE,
    "llama-style, one kv head, qk-norm": {**LLAMA_STYLE, "n_kv_heads": 1, "qk_norm": True},
    "qk-norm without rope": {"qk_norm": True},
}


@pytest.mark.parametrize("preset", ["tiny-dense", "tiny-mot", "tiny-expert-choice", *BLOCK_VARIANTS])
def test_the_whole_model_keeps_what_the_estimate_counts(preset: str) -> None:
    if preset in BLOCK_VARIANTS:  # tiny-mot's layout under the block options
        config = dataclasses.replace(TINY_MOT, **BLOCK_VARIANTS[preset])
    else:
        config = get_preset(preset).model
    ids = torch.randint(config.vocab_size, (32, config.max_seq_len))
    model = Transformer(config).train()
    measured = _saved_values_per_token(partial(model, return_logits=False), ids, ids, tokens=ids.numel())
    # blocks and final norm (the gradient of the hidden states in place of the head's input), the int64 ids
    # (2 values each) and the head's gradient computed in the forward (V*d float32 values for the whole batch)
    head_gradient = config.model_vocab_size * config.d_model / ids.numel()
    assert measured == pytest.approx(block_values_per_token(config) + 2 + head_gradient, rel=0.01)


# VmHWM, the peak resident set of this process image: getrusage's ru_maxrss would also count the pytest process it
# was forked from (Linux keeps the larger of the two across fork and exec).
PEAK_RSS = """
import dataclasses, re, sys, torch
from mixture_of_tokens.evaluation.loss import evaluate_loss
from mixture_of_tokens.presets import get_preset
from mixture_of_tokens.model import Transformer
from mixture_of_tokens.training.step import build_optimizer
torch.set_num_threads(1)
preset = get_preset("tiny-mot")
config = preset.model
if sys.argv[1] == "negligible":  # a model too small to count: what remains is PyTorch's runtime
    config = dataclasses.replace(config, vocab_size=64, d_model=16, d_ff=64, expert_size=64, max_seq_len=16)
evaluates = sys.argv[1] == "eval"  # one small step (AdamW's moments exist), then the held-out loss of 128 rows
rows = 4 * preset.train.batch_size if evaluates else preset.train.batch_size
torch.manual_seed(0)
ids = torch.randint(config.vocab_size, (rows, config.max_seq_len + 1))
inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].contiguous()
if sys.argv[1] != "baseline":
    model = Transformer(config)
    optimizer = build_optimizer(model, preset.train)
    train_rows = 8 if evaluates else rows
    for _ in range(1 if evaluates else 2):  # the second step's peak holds AdamW's moments too
        model(inputs[:train_rows], targets[:train_rows], return_logits=False).loss.backward()  # the chunked loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if evaluates:  # the held-out loss of 128 rows in one forward (as when a layer couples them), chunked loss
        evaluate_loss(model, [(inputs, targets)], torch.device("cpu"), micro_batch=rows)
status = open("/proc/self/status").read()
print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024)
"""
LIVE_MEMORY = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}
"""glibc's malloc raises its mmap threshold as large blocks are freed, so later blocks of a few MB come from its heap
and stay resident once freed (0.79 GB peak RSS here against 0.71 GB); a fixed threshold returns every block from
128 KB up, so the peak RSS counts what tensors hold, as the estimate does."""


@functools.cache
def _peak_rss(mode: str) -> int:
    env = {**os.environ, **(LIVE_MEMORY if mode == "eval" else {})}
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, mode], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout.split()[-1])


def test_the_estimate_is_within_15_percent_of_the_measured_peak_rss_on_cpu() -> None:
    preset = get_preset("tiny-mot")
    measured = _peak_rss("tiny-mot") - _peak_rss("baseline")  # the same process without the model and its training
    with torch.device("meta"):
        counts = count_model(Transformer(preset.model))
    cpu = torch.device("cpu")
    precision = resolve_precision("fp32", cpu)
    estimate = estimate_training_memory(counts, preset.model, preset.train.batch_size, precision, cpu)
    assert estimate.total_bytes == pytest.approx(measured, rel=0.15), (estimate, measured)


def test_the_cpu_runtime_is_what_training_a_negligible_model_adds() -> None:
    measured = _peak_rss("negligible") - _peak_rss("baseline")
    assert cpu_runtime_bytes() == pytest.approx(measured, rel=0.15), measured


def _run_estimate(preset_name: str = "tiny-mot", precision: str = "fp32", eval_batch: int = 128, **overrides):
    """The dry run's estimate for the PEAK_RSS "eval" run: a training step of 8 rows, the evaluation of 128 rows in
    one forward."""
    preset = get_preset(preset_name)
    config = dataclasses.replace(preset.model, **overrides)
    with torch.device("meta"):
        counts = count_model(Transformer(config))
    cpu = torch.device("cpu")
    estimate = estimate_run_memory(
        counts, config, micro_batch=8, eval_batch=eval_batch, precision=resolve_precision(precision, cpu), device=cpu
    )
    return estimate, counts, config


def _evaluation_loss_bytes(config, tokens: int, value_bytes: int) -> int:
    """The residual and final norm output, one chunk's float32 logits (and their copy and the head's under bf16)."""
    vocab, width, chunk = config.model_vocab_size, config.d_model, min(tokens, 1024)
    copies = (value_bytes * chunk * vocab + vocab * width * value_bytes) if value_bytes == 2 else 0
    return 2 * width * value_bytes * tokens + chunk * vocab * 4 + copies


def test_the_evaluation_peak_is_a_block_or_the_chunked_loss_and_the_larger_peak_names_itself() -> None:
    for precision, value_bytes in (("fp32", 4), ("bf16-mixed", 2)):
        for eval_batch in (1, 128):
            estimate, counts, config = _run_estimate(precision=precision, eval_batch=eval_batch)
            tokens = eval_batch * config.max_seq_len
            evaluation = estimate.evaluation
            assert evaluation.states_bytes == counts.total_params * 4 * 3  # weights and AdamW's moments, no grads
            # per token: the larger of the largest block's values and the chunked loss; the int64 inputs and targets
            block = int(tokens * evaluation_values_per_token(config) * value_bytes)
            loss = _evaluation_loss_bytes(config, tokens, value_bytes)
            assert evaluation.activation_bytes == max(block, loss) + tokens * 2 * 8
            assert (block > loss) == (eval_batch == 128 and precision == "fp32")  # one chunk's logits at one row
            assert evaluation.runtime_bytes == estimate.training.runtime_bytes == cpu_runtime_bytes()
    fp32, _, _ = _run_estimate()  # 128 rows per forward against a training step of 8: the evaluation's peak
    assert fp32.dominated_by_evaluation and fp32.total_bytes == fp32.evaluation.total_bytes
    assert "peak" in fp32.describe() and "in the held-out evaluation" in fp32.describe()
    at_micro_batch, _, _ = _run_estimate(eval_batch=8)  # the trainer's evaluation at the training micro-batch
    assert not at_micro_batch.dominated_by_evaluation
    assert at_micro_batch.total_bytes == at_micro_batch.training.total_bytes
    assert "in the training step, above the held-out evaluation" in at_micro_batch.describe()


def test_the_evaluation_estimate_is_within_15_percent_of_the_measured_peak_rss_on_cpu() -> None:
    """A training step of tiny-mot on 8 rows, then the held-out loss of 128 sequences in one forward with the
    chunked loss (0.27 GB estimated, 0.26 GB measured)."""
    estimate, _, _ = _run_estimate()
    measured = _peak_rss("eval") - _peak_rss("baseline")
    assert estimate.dominated_by_evaluation
    assert estimate.total_bytes == pytest.approx(measured, rel=0.15), (estimate, measured)


def test_evaluation_in_micro_batches_shrinks_the_dry_runs_peak(capsys: pytest.CaptureFixture) -> None:
    """tiny-mot at batch 512 and 4 accumulation steps: the evaluation runs 128 rows per forward with the chunked
    loss, below the training step (it needed 4.52 GB with the whole batch's full logits)."""
    args = ["train", "--preset", "tiny-mot", "--device", "cpu", "--dry-run", "--batch-size", "512"]
    assert main([*args, "--grad-accum-steps", "4"]) == 0
    out = capsys.readouterr().out
    lines = out[out.index("memory estimate") :].splitlines()
    assert "in the training step, above the held-out evaluation" in lines[0]
    assert lines[1].startswith("  training step (micro-batch 128): ")
    assert lines[2].startswith("  evaluation (128 rows per forward, chunked loss): weights+AdamW ")
    estimate, _, _ = _run_estimate(eval_batch=128)
    assert f"total {estimate.evaluation.total_bytes / 1e9:.2f} GB" in lines[2]
    assert estimate.evaluation.total_bytes < 1e9 < 4.52e9


def test_the_dry_run_says_which_device_and_precision_it_assumes(capsys: pytest.CaptureFixture) -> None:
    assert main(["train", "--preset", "tiny-mot", "--device", "cpu", "--dry-run", "--batch-size", "512"]) == 0
    out = capsys.readouterr().out
    lines = out[out.index("memory estimate") :].splitlines()
    assert "on cpu in fp32: peak " in lines[0] and "GB, in the training step" in lines[0]
    assert lines[1].startswith("  training step (micro-batch 512): weights+grads+AdamW ")
    assert lines[2].startswith("  evaluation (512 rows per forward, chunked loss): weights+AdamW ")
    assert "PyTorch runtime" in lines[2]
