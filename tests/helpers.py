"""Plain helpers shared by the test modules (fixtures live in conftest.py; plain-loop references in reference.py
and reference_sparse.py; corpus writers in corpus.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from corpus import write_corpus
from torch import nn

from mixture_of_tokens.checkpoint import save_checkpoint
from mixture_of_tokens.config import ModelConfig, TrainConfig
from mixture_of_tokens.data import prepare_data
from mixture_of_tokens.layers import MixtureOfTokens
from mixture_of_tokens.model import Transformer

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The repository's root: the test modules live in folders mirroring the package's, so none counts its parents."""

FIXTURES = REPO_ROOT / "tests" / "fixtures"
TASK_FIXTURES = FIXTURES / "tasks"

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
"""Marks a test of a CUDA path: CI and the CPU machines skip it."""

FLOAT64_TOL = 1e-10
"""How closely a float64 layer must match its float64 plain-loop reference (absolute and relative)."""


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = FLOAT64_TOL) -> None:
    torch.testing.assert_close(actual, expected, atol=tol, rtol=tol)


# ----------------------------------------------------------------------------------------------------- configs

TINY_MODEL = dict(
    vocab_size=300, max_seq_len=32, d_model=32, n_blocks=2, n_heads=2, d_ff=128,
    ffn="mot", ffn_blocks="second-half", group_size=4, n_experts=4, expert_size=128,
)  # fmt: skip
"""The trainer tests' model: two blocks, the feed-forward kind in the second, E*h = G*d_ff (one dense FF a token)."""


def tiny_model_config(**overrides) -> ModelConfig:
    """TINY_MODEL with `overrides` replacing its fields."""
    return ModelConfig(**{**TINY_MODEL, **overrides})


def tiny_train_config(data: str, out_dir: Path | str = "", **overrides) -> TrainConfig:
    """A short CPU run of the tiny model on `data`: 8 steps of 8 sequences, held-out loss on 2 fixed batches."""
    fields = dict(
        steps=8, batch_size=8, lr=3e-3, warmup_steps=2, eval_every=4, eval_batches=2, log_every=1,
        data=data, out_dir=str(out_dir), device="cpu",
    )  # fmt: skip
    return TrainConfig(**{**fields, **overrides})


def build_model(config: ModelConfig, seed: int = 0) -> Transformer:
    """The model of `config`, its weights drawn after seeding torch with `seed`."""
    torch.manual_seed(seed)
    return Transformer(config)


def mot_layers_of(model: nn.Module) -> list[MixtureOfTokens]:
    """The MoT layers of a model, in block order."""
    return [m for m in model.modules() if isinstance(m, MixtureOfTokens)]


# ------------------------------------------------------------------------------------------------------ layers


def random_float64_layer(
    layer_class: type[nn.Module],
    d_model: int,
    *,
    n_experts: int,
    expert_size: int,
    seed: int = 0,
    router_std: float = 1.0,
    **kwargs,
) -> nn.Module:
    """A float64 layer with random O(1) weights instead of the small init, so routing and outputs are far from
    trivial: router (MoT: controller) ~ N(0, router_std^2 / d), w1 ~ N(0, 1 / d), w2 ~ N(0, 1 / h). Torch is
    seeded with `seed` before the layer is built."""
    torch.manual_seed(seed)
    layer = layer_class(d_model, n_experts=n_experts, expert_size=expert_size, **kwargs).double()
    router = layer.controller if isinstance(layer, MixtureOfTokens) else layer.router
    with torch.no_grad():
        router.normal_(0.0, router_std / math.sqrt(d_model))
        layer.w1.normal_(0.0, 1.0 / math.sqrt(d_model))
        layer.w2.normal_(0.0, 1.0 / math.sqrt(expert_size))
    return layer


def gradcheck_layer(layer: nn.Module, x: torch.Tensor, *, aux_losses: tuple[str, ...] = ()) -> bool:
    """torch.autograd.gradcheck of the layer's output, and of the named auxiliary losses it records, with respect
    to `x` and every parameter (float64 finite differences)."""
    names = [name for name, _ in layer.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for _, p in layer.named_parameters())

    def fn(x, *tensors):
        out = torch.func.functional_call(layer, dict(zip(names, tensors, strict=True)), (x,))
        return (out, *(layer.aux_losses[name] for name in aux_losses)) if aux_losses else out

    return torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


def same_group_same_position(batch: int, seq_len: int, group_size: int, example: int, position: int) -> torch.Tensor:
    """[B, S] mask of the outputs a grouped layer may move when token (example, position) changes: the
    same-position members of the example's group (docs/method.md)."""
    allowed = torch.zeros(batch, seq_len, dtype=torch.bool)
    group = example // group_size
    allowed[group * group_size : (group + 1) * group_size, position] = True
    return allowed


# ------------------------------------------------------------------------------- evaluation and generation model

EVAL_VOCAB = 320


def eval_config(ffn: str = "mot", **overrides) -> ModelConfig:
    """The evaluation and generation tests' model: a 48-token context, `ffn` in both blocks."""
    fields = dict(vocab_size=EVAL_VOCAB, max_seq_len=48, d_model=16, d_ff=64, ffn=ffn, ffn_blocks="all", expert_size=64)
    return tiny_model_config(**{**fields, **overrides})


def eval_model(ffn: str = "mot", dtype: torch.dtype = torch.float64, seed: int = 0, **overrides) -> Transformer:
    """eval_config's model in `dtype`, in eval mode."""
    return build_model(eval_config(ffn, **overrides), seed).to(dtype).eval()


def make_checkpoint(root: Path, ffn: str = "mot", seed: int = 0, *, name: str | None = None, **overrides) -> Path:
    """A randomly initialised eval_config model (`overrides` replacing its fields) saved as a checkpoint, in
    root/ckpt-NAME (NAME: `ffn` unless given), whose data source is a small local corpus.

    Callers set MOT_CACHE_DIR (the cache_dir fixtures) so the BPE and token files go under a temporary folder.
    """
    source = f"text:{write_corpus(root / 'corpus', n_documents=20)}"
    data = prepare_data(source, vocab_size=EVAL_VOCAB, progress=False)
    model_config = eval_config(ffn, **overrides)
    model = build_model(model_config, seed)
    train_config = TrainConfig(steps=1, batch_size=8, eval_batches=2, data=source, device="cpu")
    return save_checkpoint(root / f"ckpt-{name or ffn}", model, model_config, train_config, data.tokenizer)
