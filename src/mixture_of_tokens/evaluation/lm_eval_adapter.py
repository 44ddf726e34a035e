"""lm-evaluation-harness adapter: a model registered as "mot" that scores with this package's batch policy.

    pip install 'mixture-of-tokens[lm-eval]'      # lm_eval is optional
    python -m mixture_of_tokens.evaluation.lm_eval_adapter --model mot \
        --model_args checkpoint=runs/tiny-mot --tasks piqa

`python -m mixture_of_tokens.evaluation.lm_eval_adapter` registers the model and then runs lm-eval's own command
line with the same arguments (lm-eval does not discover third-party models by itself). From Python:

    from mixture_of_tokens.evaluation.lm_eval_adapter import register
    MoTLM = register()
    lm_eval.simple_evaluate(model=MoTLM(checkpoint="runs/tiny-mot"), tasks=["piqa"])

model_args: checkpoint (required), mot_eval (auto | protocol | discrete | plain), protocol_rows (default max(32, G):
the smallest multiple of G >= 32), seed (0), device (auto), batch_size (32, plain policy), prefix_eos (false; true
starts every request's context with the end-of-text token, as the authors' harness did). lm-eval's own --device
(cuda:0 unless given, even without a GPU) runs on the CPU when CUDA is absent; its --batch_size sets the plain
policy's batches ("auto": 32). The request -> score logic lives in `MoTBackend`, which needs no lm_eval; the
lm_eval class only unpacks `request.args`. Loglikelihood requests are seeded by their text, as in `mot eval`, so
both give the same scores (tests/test_lm_eval.py runs lm-eval's command line on a local task and checks it).
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


class MoTBackend:
    """The three lm-eval request types as plain functions over strings, under one batch policy."""

    def __init__(self, checkpoint: str, *, train_tokens: np.ndarray | None = None, **settings: object) -> None:
        """`settings` are ScoringConfig fields (mot_eval, protocol_rows, prefix_eos, seed, batch_size, device,
        threads), as Python values or as the strings lm-eval's --model_args passes."""
        config = config_from_strings(ScoringConfig, settings)
        self.loaded = load_checkpoint(checkpoint, config.device)
        self.loaded.model_config.check_causal("the lm-eval adapter")
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
            prompt = ([tokenizer.eos_id] + prompt if self.scorer.prefix_eos or not prompt else prompt)[
                -(model.config.max_seq_len - 1) :
            ]
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


def register() -> type:
    """Import lm_eval (lazily), define and register the "mot" model class, and return it."""
    require("lm_eval", "lm-eval", purpose="the lm-eval adapter")
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model

    class MoTLM(LM):
        def __init__(self, checkpoint: str, **options: Any) -> None:
            super().__init__()
            allowed = {f.name for f in dataclasses.fields(ScoringConfig)}  # lm-eval adds its own keys too
            options["device"] = lm_eval_device(options.get("device"))
            if options.get("batch_size") is not None:
                options["batch_size"] = lm_eval_batch_size(options["batch_size"])
            self.backend = MoTBackend(checkpoint, **{k: v for k, v in options.items() if k in allowed})

        def loglikelihood(self, requests):
            return self.backend.loglikelihood([tuple(r.args[:2]) for r in requests])

        def loglikelihood_rolling(self, requests):
            return self.backend.loglikelihood_rolling([r.args[0] for r in requests])

        def generate_until(self, requests):
            return self.backend.generate_until([(r.args[0], dict(r.args[1])) for r in requests])

    return register_model("mot")(MoTLM)


def main() -> None:
    """Register "mot", then hand the command line to lm-eval."""
    try:
        register()
    except ImportError as error:
        print(f"mixture_of_tokens.evaluation.lm_eval_adapter: error: {error}", file=sys.stderr)
        sys.exit(2)
    from lm_eval.__main__ import cli_evaluate

    sys.argv[0] = "lm_eval"
    cli_evaluate()


if __name__ == "__main__":
    main()
