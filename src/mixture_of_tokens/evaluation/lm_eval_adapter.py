"""lm-evaluation-harness adapter: a model registered as "mot" that scores with this package's batch policy.

    pip install 'mixture-of-tokens[lm-eval]'      # lm_eval is optional
    python -m mixture_of_tokens.evaluation.lm_eval_adapter --model mot \
        --model_args pretrained=runs/tiny-mot --tasks piqa

`python -m mixture_of_tokens.evaluation.lm_eval_adapter` registers the model and then runs lm-eval's own command
line with the same arguments (lm-eval does not discover third-party models by itself). From Python:

    from mixture_of_tokens.evaluation.lm_eval_adapter import register
    MoTLM = register()
    lm_eval.simple_evaluate(model=MoTLM(pretrained="runs/tiny-mot"), tasks=["piqa"])

model_args: pretrained (required: the checkpoint or run directory, lm-eval's key, which also names the results;
checkpoint is its old name), dtype (auto | float32 | bfloat16 | float16), max_length (the longest input, at most
the model's context: longer contexts keep their last tokens), mot_eval (auto | protocol | discrete | plain),
protocol_rows (default max(32, G): the smallest multiple of G >= 32), seed (0), device (auto), batch_size (32,
plain policy), prefix_eos (false; true starts every request's context with the end-of-text token, as the authors'
harness did), threads; any other key is refused in one sentence. lm-eval's own --device (cuda:0 unless given, even
without a GPU) runs on the CPU when CUDA is absent; its --batch_size sets the plain policy's batches ("auto": 32).
The request -> score logic lives in `MoTBackend`, which needs no lm_eval; the lm_eval class only unpacks
`request.args`. Loglikelihood requests are seeded by their text, as in `mot eval`, so both give the same scores
(tests/evaluation/test_lm_eval.py runs lm-eval's command line on a local task and checks it).
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import numpy as np
import torch

from ..extras import require
from ..generate import generate_tokens
from ..inference_config import ScoringConfig, config_from_strings
from . import Scorer, load_checkpoint, load_texts, query_seed, resolve_policy
from .scoring import text_request

__all__ = ["MoTBackend", "main", "register"]


DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
"""model_args dtype values: the weights' dtype for scoring ("auto": as loaded, float32)."""


def model_dtype(value: object) -> torch.dtype | None:
    """model_args dtype (a name of DTYPES or a torch.dtype) as a torch dtype; None for auto."""
    if isinstance(value, torch.dtype) and value in DTYPES.values():
        return value
    if value is None or str(value) not in DTYPES:
        raise ValueError(f"dtype={value!r} is not supported; allowed values: {', '.join(DTYPES)}.")
    return DTYPES[str(value)]


class MoTBackend:
    """The three lm-eval request types as plain functions over strings, under one batch policy."""

    def __init__(
        self,
        checkpoint: str,
        *,
        train_tokens: np.ndarray | None = None,
        dtype: object = "auto",
        max_length: int | str | None = None,
        **settings: object,
    ) -> None:
        """`settings` are ScoringConfig fields (mot_eval, protocol_rows, prefix_eos, seed, batch_size, device,
        threads), as Python values or as the strings lm-eval's --model_args passes. `dtype`: auto (float32) |
        float32 | bfloat16 | float16. `max_length`: the longest input in tokens (at most the model's context,
        the default): longer contexts keep their last tokens, rolling windows and generation prompts too."""
        config = config_from_strings(ScoringConfig, settings)
        torch_dtype = model_dtype(dtype)
        self.loaded = load_checkpoint(checkpoint, config.device, torch_dtype)
        self.loaded.model_config.check_causal("the lm-eval adapter")
        context = self.loaded.model_config.max_seq_len
        max_length = context if max_length is None else _positive_int("max_length", max_length)
        if max_length > context:
            raise ValueError(f"max_length={max_length} exceeds the model's context of {context} tokens.")
        if config.threads:
            torch.set_num_threads(config.threads)
        rows = config.protocol_rows or None
        self.policy = resolve_policy(self.loaded.model_config, config.mot_eval, rows=rows, seed=config.seed)
        if self.policy.isolated and train_tokens is None:
            train_tokens, _ = load_texts(self.loaded, progress=False)
        self.filler_tokens = train_tokens
        self.scorer = Scorer(
            self.loaded.model,
            self.loaded.tokenizer,
            self.policy,
            filler_tokens=train_tokens,
            batch_size=config.batch_size,
            device=self.loaded.device,
            prefix_eos=config.prefix_eos,
        )
        self.scorer.max_len = max_length  # the scorer keeps the last max_len (+ 1 predicted) tokens of every input

    def loglikelihood(self, pairs: list[tuple[str, str]]) -> list[tuple[float, bool]]:
        """(context, continuation) -> (sum log-probability of the continuation, is it the greedy continuation)."""
        requests = [text_request(context, continuation) for context, continuation in pairs]
        return [(s.logprob, s.is_greedy) for s in self.scorer.score(requests)]

    def loglikelihood_rolling(self, texts: list[str]) -> list[float]:
        return [self.scorer.rolling(text, ("lm_eval-rolling", text)) for text in texts]

    def generate_until(self, items: list[tuple[str, dict[str, Any]]]) -> list[str]:
        """One request at a time (MoT: in its own group, with seeded filler rows); cut at the first stop string."""
        tokenizer, model = self.loaded.tokenizer, self.loaded.model
        outputs = []
        for context, options in items:
            until = options.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(options.get("max_gen_toks", 64))
            max_new = max(1, min(max_new, model.config.max_seq_len - 1))
            temperature = float(options.get("temperature", 0.0)) if options.get("do_sample", False) else 0.0
            prompt = tokenizer.encode_batch([context])[0]
            longest = min(self.scorer.max_len, model.config.max_seq_len - 1)  # room for one new token
            prompt = ([tokenizer.eos_id] + prompt if self.scorer.prefix_eos or not prompt else prompt)[-longest:]
            seed = int(np.random.default_rng(query_seed(self.policy.seed, "generate", context)).integers(2**62))
            with self.policy.applied(model):
                result = generate_tokens(
                    model,
                    [prompt],
                    max_new_tokens=max_new,
                    temperature=temperature,
                    top_k=int(options.get("top_k", 0) or 0),
                    top_p=float(options.get("top_p", 1.0) or 1.0),
                    seed=seed,
                    eos_id=tokenizer.eos_id,
                    filler_tokens=self.filler_tokens,
                )
            text = tokenizer.decode(result.new_tokens[0])
            for stop in until:
                if stop and stop in text:
                    text = text[: text.index(stop)]
            outputs.append(text)
        return outputs


def _positive_int(name: str, value: object) -> int:
    try:
        number = int(str(value))
    except ValueError:
        number = 0
    if number < 1:
        raise ValueError(f"{name}={value!r} is not a positive whole number.")
    return number


def lm_eval_device(device: object) -> str:
    """lm-eval's --device as a device of this package. lm-eval passes cuda:0 unless told otherwise, also on a
    machine without a GPU, so cuda[:N] means CUDA when it is present and the CPU when it is not."""
    name = str(device or "auto")
    if name.startswith("cuda"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def lm_eval_batch_size(value: object) -> int:
    """lm-eval's --batch_size (an int, or "auto" / "auto:N", which this adapter does not search): plain-policy
    batches of that many requests, 32 for auto."""
    if isinstance(value, str) and value.strip().startswith("auto"):
        return 32
    return int(value)  # type: ignore[call-overload]


MODEL_ARGS = ("pretrained", "checkpoint", "dtype", "max_length", *(f.name for f in dataclasses.fields(ScoringConfig)))
"""The keys --model_args accepts (`checkpoint` is the old name of `pretrained`)."""
LM_EVAL_ARGS = ("max_batch_size",)
"""What lm-eval adds to model_args on its own (batch_size and device are model args too); max_batch_size only
bounds lm-eval's automatic batch size search, which this adapter does not run."""

_registered: list[type] = []


def checkpoint_argument(pretrained: object, checkpoint: object) -> str:
    """The checkpoint of model_args: `pretrained` (lm-eval's key, which names the results), or `checkpoint`."""
    if pretrained is None and checkpoint is None:
        raise ValueError("model_args needs pretrained=CHECKPOINT (a checkpoint or run directory of mixture-of-tokens).")
    if pretrained is not None and checkpoint is not None and str(pretrained) != str(checkpoint):
        raise ValueError(
            f"model_args name two checkpoints (pretrained={pretrained}, checkpoint={checkpoint}); give pretrained= "
            "alone (checkpoint is its old name)."
        )
    return str(pretrained if pretrained is not None else checkpoint)


def register() -> type:
    """Import lm_eval (lazily), define and register the "mot" model class (once a process), and return it."""
    require("lm_eval", "lm-eval", purpose="the lm-eval adapter")
    if _registered:
        return _registered[0]
    import lm_eval.models  # noqa: F401  lm-eval's own models first: it loads them only into an empty registry
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model

    class MoTLM(LM):
        """lm-eval's model "mot"; model_args: MODEL_ARGS (pretrained=CHECKPOINT required)."""

        def __init__(self, pretrained: str | None = None, checkpoint: str | None = None, **options: Any) -> None:
            super().__init__()
            unknown = sorted(set(options) - set(MODEL_ARGS) - set(LM_EVAL_ARGS))
            if unknown:
                raise ValueError(
                    f"model_args {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} not a setting of the "
                    f"mot model; allowed keys: {', '.join(MODEL_ARGS)}."
                )
            directory = checkpoint_argument(pretrained, checkpoint)
            settings = {key: value for key, value in options.items() if key not in LM_EVAL_ARGS}
            settings["device"] = lm_eval_device(settings.get("device"))
            if settings.get("batch_size") is not None:
                settings["batch_size"] = lm_eval_batch_size(settings["batch_size"])
            self.backend = MoTBackend(directory, **settings)

        def loglikelihood(self, requests):
            return self.backend.loglikelihood([tuple(r.args[:2]) for r in requests])

        def loglikelihood_rolling(self, requests):
            return self.backend.loglikelihood_rolling([r.args[0] for r in requests])

        def generate_until(self, requests):
            return self.backend.generate_until([(r.args[0], dict(r.args[1])) for r in requests])

    _registered.append(register_model("mot")(MoTLM))
    return MoTLM


COMMAND = "python -m mixture_of_tokens.evaluation.lm_eval_adapter"
USAGE = f"""usage: {COMMAND} --model mot --model_args pretrained=CHECKPOINT[,KEY=VALUE...] --tasks TASKS [lm-eval flags]

Runs lm-eval's own command line with the model "mot" (a mixture-of-tokens checkpoint or run directory, scored
under this package's batch policy) registered first. `lm_eval --model mot` cannot do this: lm-eval finds only the
models it ships and does not discover a third-party model, so it answers "no model for this name found";
{COMMAND} is the command.

example:
  {COMMAND} --model mot --model_args pretrained=runs/tiny-mot --tasks piqa,hellaswag --limit 200

model_args (comma-separated KEY=VALUE; any other key is refused):
  pretrained     the checkpoint or run directory (required; results are named after it; checkpoint= is its old name)
  dtype          auto | float32 | bfloat16 | float16 (auto: float32)
  max_length     the longest input in tokens, at most the model's context (default); contexts keep their last tokens
  mot_eval       auto | protocol | discrete | plain (auto: protocol for MoT, plain otherwise)
  protocol_rows  rows of an isolated batch, a multiple of G (default max(32, G))
  seed           seed of the filler rows and the query's row (0)
  prefix_eos     true: every context starts with the end-of-text token (false)
  batch_size     plain-policy batches (32; lm-eval's --batch_size sets it too, auto: 32)
  device         cpu | cuda | auto (lm-eval's --device cuda:0 runs on the CPU when CUDA is absent)
  threads        torch CPU threads (0: torch's default)

Every other flag is lm-eval's (docs/evaluation.md#lm-eval); lm-eval's own help follows.
"""


def main() -> None:
    """Register "mot", then hand the command line to lm-eval; --help (or no argument) prints USAGE first."""
    arguments = sys.argv[1:]
    if not arguments or arguments[0] in ("-h", "--help") or arguments == ["run", "--help"]:
        print(USAGE)
        sys.argv[1:] = ["run", "--help"]
    try:
        register()
    except ImportError as error:
        print(f"{COMMAND}: error: {error}", file=sys.stderr)
        sys.exit(2)
    from lm_eval.__main__ import cli_evaluate

    sys.argv[0] = "lm_eval"
    try:
        cli_evaluate()
    except ValueError as error:
        if not str(error).startswith("Attempted to load model"):
            raise
        model = str(error).split("'")[1] if "'" in str(error) else "?"
        print(
            f"{COMMAND}: error: lm-eval has no model {model!r}; this command registers one model, mot "
            f"(`lm_eval --model mot` cannot find a third-party model): {COMMAND} --model mot --model_args "
            "pretrained=CHECKPOINT --tasks TASKS.",
            file=sys.stderr,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
