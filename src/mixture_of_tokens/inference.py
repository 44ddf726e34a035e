"""Python inference API: load a trained model, score continuations and generate text, one sequence at a time (a
list is many single sequences).

    model = load_model("runs/tiny-mot")             # eval mode, inference routing, on the CPU
    tokenizer = load_tokenizer("runs/tiny-mot")
    predictor = Predictor(model, tokenizer)
    predictor.score("The ship", " sailed")          # log-probability of " sailed" after "The ship"
    predictor.generate("The ship sailed", max_new_tokens=20)

A MoT layer mixes the tokens of a group of G consecutive rows, so a MoT model cannot run one sequence alone and its
output for a row depends on the other rows. `Predictor` follows the documented batch policy
(docs/evaluation.md): each scored sequence sits in an isolated batch of training-text filler rows, seeded by its
text (the `protocol` policy, or `discrete` for argmax routing), exactly as `mot eval` and the lm-eval adapter score
it; generation fills the group with held-out text rows, exactly as `mot generate` does. Batch-independent models
(dense, Token Choice at inference) run as they are. Scoring goes through `evaluation.Scorer` and generation
through `generate.generate_text`: there is no second path.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .checkpoint import load_tokenizer, read_config, saved_configs
from .data import Tokenizer
from .evaluation.batch_policy import BatchPolicy, resolve_policy
from .evaluation.runner import LoadedCheckpoint, load_checkpoint, load_texts
from .evaluation.scoring import Scorer, text_request
from .export.hf import load_export, transformers_config
from .generate import generate_text
from .model import Transformer, set_inference_routing

__all__ = ["Predictor", "load_model", "load_tokenizer"]


def load_model(
    directory: Path | str, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Transformer:
    """The model of a checkpoint or finished run directory, ready for inference: weights checked against the
    checkpoint's manifest, eval mode, inference routing (Token Choice dropless), on `device` (cpu | cuda | auto)
    in `dtype` (default: as saved, float32). `model.name_or_path` is the directory it came from. A
    `mot export --to hf` directory loads too (its config.json records the ModelConfig, its weights keep this
    package's names); another transformers directory is refused in one sentence."""
    if transformers_config(directory) is not None:
        return load_export(directory, device=device, dtype=dtype)
    loaded = load_checkpoint(directory, str(device), dtype)
    loaded.model.name_or_path = str(loaded.directory)
    return loaded.model


Transformer.pretrained_loader = staticmethod(load_model)  # Transformer.from_pretrained, without importing upwards


class Predictor:
    """Score and generate single sequences with a trained model under its batch policy; one sequence never errors.

    Args:
        model: a checkpoint or run directory, or a Transformer (e.g. from `load_model`).
        tokenizer: the model's tokenizer; default: the checkpoint's (needed when `model` is a Transformer not loaded
            from a directory).
        policy: auto (protocol for batch-dependent models, plain otherwise) | protocol | discrete | plain.
        filler_tokens: token ids of the text the filler rows are cut from (batch-dependent models). Default: the
            checkpoint's own data source, prepared as in training: its training split for scoring (the paper's
            protocol, as `mot eval`) and its held-out split for generation (as `mot generate`).
        protocol_rows: rows of an isolated scoring batch, a multiple of the group size (default max(32, G)).
        seed: seed of the filler rows, the query's row and sampling.
        prefix_eos: start every scored context with the end-of-text token (as the authors' harness did).
        device, dtype: where and how to load a model given as a directory.
    """

    def __init__(
        self,
        model: Transformer | Path | str,
        tokenizer: Tokenizer | None = None,
        *,
        policy: str = "auto",
        filler_tokens: np.ndarray | None = None,
        protocol_rows: int | None = None,
        seed: int = 0,
        prefix_eos: bool = False,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> None:
        if not isinstance(model, Transformer):
            model = load_model(model, device=device, dtype=dtype)
        model.config.check_causal("Predictor (scoring and generation)")
        directory = getattr(model, "name_or_path", None)
        if tokenizer is None:
            if directory is None:
                raise ValueError("Predictor(model) needs the model's tokenizer: Predictor(model, tokenizer).")
            tokenizer = load_tokenizer(directory)
        self.model = set_inference_routing(model.eval())
        self.tokenizer = tokenizer
        self.policy: BatchPolicy = resolve_policy(model.config, policy, rows=protocol_rows, seed=seed)
        self.score_filler, self.generate_filler = filler_tokens, filler_tokens
        if self.policy.isolated and filler_tokens is None:
            if directory is None:
                raise ValueError(
                    "a batch-dependent (MoT) model scores one sequence among filler rows: pass "
                    "filler_tokens=<token ids of its training text>, or load the model with load_model(DIRECTORY) "
                    "or Predictor(DIRECTORY), whose training text is used."
                )
            self.score_filler, self.generate_filler = _checkpoint_texts(Path(directory), self.model, tokenizer)
        self.scorer = Scorer(
            self.model, tokenizer, self.policy, filler_tokens=self.score_filler, batch_size=1, prefix_eos=prefix_eos
        )

    def describe(self) -> str:
        """The batch policy in words (print it next to any result)."""
        return self.policy.describe()

    def score(self, context: str | Sequence[str], continuation: str | Sequence[str]) -> float | list[float]:
        """Sum log-probability of `continuation` after `context` (lm-eval's tokenisation: trailing spaces of the
        context move to the continuation). Equal to `mot eval`'s and the lm-eval adapter's score of the same text
        under the same policy and seed. Two equally long lists give one score per (context, continuation) pair, in
        order, each the score of that pair alone."""
        if isinstance(context, str) and isinstance(continuation, str):
            return self.scorer.score([text_request(context, continuation)])[0].logprob
        if not (_is_text_list(context) and _is_text_list(continuation) and len(context) == len(continuation)):
            raise ValueError(
                "score(context, continuation) takes two strings, or two lists of strings of the same length for one "
                f"score per (context, continuation) pair; got {_describe(context)} and {_describe(continuation)}."
            )
        requests = [text_request(c, x) for c, x in zip(context, continuation, strict=True)]
        return [result.logprob for result in self.scorer.score(requests)]

    def generate(
        self,
        prompt: str | Sequence[str],
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> str | list[str]:
        """Text generated after `prompt` (greedy at temperature 0; stops at eos or max_new_tokens). A MoT model
        decodes the prompt in lock-step with held-out filler rows up to its group size, as `mot generate` does.
        A list of prompts gives one text per prompt, in order, each generated alone (so a prompt's text does not
        depend on the others in the list)."""
        options = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
        if not isinstance(prompt, str):
            if not _is_text_list(prompt):
                raise ValueError(f"generate(prompt) takes a string or a list of strings; got {_describe(prompt)}.")
            return [self._generate_one(one, **options) for one in prompt]
        return self._generate_one(prompt, **options)

    def _generate_one(self, prompt: str, *, seed: int | None, **options: Any) -> str:
        try:
            with self.policy.applied(self.model):
                return generate_text(
                    self.model,
                    self.tokenizer,
                    [prompt],
                    seed=self.policy.seed if seed is None else seed,
                    filler_tokens=self.generate_filler,
                    **options,
                )[0]
        finally:
            set_inference_routing(self.model)  # generation leaves the model in training routing


def _is_text_list(value: object) -> bool:
    return isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value)


def _describe(value: object) -> str:
    """'a str', 'a list of 2 str', 'a list of 2 (int, str)': what a caller passed, for a refusal."""
    if not isinstance(value, (list, tuple)):
        return f"a {type(value).__name__}"
    kinds = ", ".join(sorted({type(item).__name__ for item in value}))
    return f"a {type(value).__name__} of {len(value)}" + (f" ({kinds})" if kinds else "")


def _checkpoint_texts(directory: Path, model: Transformer, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) token ids of a checkpoint's data source, prepared as in training (cached)."""
    model_config, train_config = saved_configs(read_config(directory))
    device = next(model.parameters()).device
    loaded = LoadedCheckpoint(directory, model, model_config, train_config, tokenizer, device)
    return load_texts(loaded, progress=False)
