"""Configuration of the commands that use a trained model: scoring (`mot eval --tasks`, the lm-eval adapter, the
Python API), evaluation and generation. Flags are generated from these fields like training's."""

from __future__ import annotations

from dataclasses import dataclass, fields

from .config import _check_int, _help
from .runtime.devices import DEVICES


@dataclass
class ScoringConfig:
    """How queries meet a model when they are scored (`mot eval --tasks`, the lm-eval adapter, the Python API)."""

    mot_eval: str = _help(
        "batch policy: auto (protocol for batch-dependent models such as MoT, plain otherwise) | protocol | "
        "discrete | plain",
        default="auto",
    )
    protocol_rows: int = _help(
        "rows of an isolated batch, a multiple of G (0: the smallest multiple of G >= 32, i.e. max(32, G))", default=0
    )
    prefix_eos: bool = _help(
        "start every request's context with the end-of-text token (the authors' harness did)", default=False
    )
    seed: int = _help("seed of filler rows and query placement", default=0)
    batch_size: int = _help("requests per batch (plain policy)", default=32)
    device: str = _help("cpu | cuda | auto", default="auto")
    threads: int = _help("torch CPU threads (0: torch default)", default=0)

    def __post_init__(self) -> None:
        _check_int("batch_size", self.batch_size, low=1)
        for name in ("protocol_rows", "threads"):
            _check_int(name, getattr(self, name), low=0)
        _check_int("seed", self.seed, low=0, high=2**32 - 1)
        if self.device not in DEVICES:
            raise ValueError(f"device={self.device!r} is not supported; allowed values: {', '.join(DEVICES)}.")


@dataclass
class EvalConfig(ScoringConfig):
    """What `mot eval` measures: held-out loss in every mode of the model, and zero-shot tasks."""

    tasks: str = _help(
        "comma-separated zero-shot tasks: piqa, hellaswag, arc_easy, arc_challenge, winogrande, lambada", default=""
    )
    limit: int = _help("only the first N documents of each task (0: all)", default=0)
    eval_batches: int = _help("held-out batches (0: the run's setting)", default=0)
    perplexity: bool = _help("measure the held-out loss (--no-perplexity skips it)", default=True)
    tc_capacity: bool = _help(
        "Token Choice: also measure the held-out loss with the capacity it trained with (tokens dropped as in "
        "training, routing groups of the eval batch; the authors evaluated so); the default is dropless",
        default=False,
    )
    out: str = _help("results JSON (default: CHECKPOINT/eval-<timestamp>.json)", default="")

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("limit", "eval_batches"):
            _check_int(name, getattr(self, name), low=0)

    @property
    def task_names(self) -> list[str]:
        return [task.strip() for task in self.tasks.split(",") if task.strip()]


def config_from_strings(cls: type, values: dict[str, object]) -> object:
    """A config dataclass from values that may arrive as strings (lm-eval's model_args): each is cast to its
    field's type, "true"/"false" for booleans; an unknown name is one clear error."""
    kinds = {f.name: f.type for f in fields(cls)}
    unknown = sorted(set(values) - set(kinds))
    if unknown:
        raise ValueError(f"{unknown} are not settings of {cls.__name__}; allowed settings: {', '.join(kinds)}.")
    parsed: dict[str, object] = {}
    for name, value in values.items():
        if isinstance(value, str) and kinds[name] == "bool":
            if value.strip().lower() not in ("true", "false", "1", "0"):
                raise ValueError(f"{name}={value!r} is not a boolean; allowed values: true, false.")
            value = value.strip().lower() in ("true", "1")
        elif isinstance(value, str) and kinds[name] in ("int", "float"):
            try:
                value = int(value) if kinds[name] == "int" else float(value)
            except ValueError:
                raise ValueError(f"{name}={value!r} is not a number.") from None
        parsed[name] = value
    return cls(**parsed)


@dataclass
class GenerateConfig:
    """Decoding settings of `mot generate` (KV-cached, all rows in lock-step)."""

    max_new_tokens: int = _help("tokens to generate per prompt", default=48)
    temperature: float = _help("0: greedy; > 0: sample from softmax(logits / temperature)", default=0.0)
    top_k: int = _help("sample from the k most likely tokens (0: all)", default=0)
    top_p: float = _help("nucleus sampling mass (1: off)", default=1.0)
    seed: int = _help("seed of sampling and of the filler rows batch-dependent models decode beside", default=0)
    device: str = _help("cpu | cuda | auto", default="auto")
    threads: int = _help("torch CPU threads (0: torch default)", default=0)

    def __post_init__(self) -> None:
        if not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be a positive integer, got {self.max_new_tokens!r}.")
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0 (0 is greedy), got {self.temperature}.")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 keeps every token), got {self.top_k}.")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}.")
        if self.seed < 0 or self.threads < 0:
            raise ValueError(f"seed and threads must be >= 0, got seed={self.seed}, threads={self.threads}.")
        if self.device not in DEVICES:
            raise ValueError(f"device={self.device!r} is not supported; allowed values: {', '.join(DEVICES)}.")
