"""Comparison suites as data: which models (arms) train, at which sizes and budgets, and which of the paper's
claims their numbers are judged on (`verdicts.py`). `mot compare --suite NAME` runs one (`runner.py`).

Every arm of a suite trains on the same data for the same steps and tokens; each gets its learning rate from a
small sweep (the size's `lrs`, best final eval loss at seed 0), then `seeds - 1` more seeds at that rate, whose
spread is the noise every verdict is judged against.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..config import ModelConfig, TrainConfig
from ..layers import sized_config
from ..presets import get_preset

PAPER_TOKENS_PER_STEP = 256 * 256
"""The paper's batch: 256 sequences of 256 tokens (C4, GPT-2 tokenizer)."""


@dataclass(frozen=True)
class Size:
    """The model shape and budget every run of a suite shares at one scale."""

    name: str
    d_model: int
    n_blocks: int
    n_heads: int
    seq_len: int
    batch_size: int
    steps: int
    lrs: tuple[float, ...]
    """The learning-rate sweep: every arm trains at each (seed 0) and keeps the best."""
    seeds: int = 2
    """Seeds at the chosen learning rate (the first is the sweep's run); their spread is the noise."""
    vocab_size: int = 8192
    data: str = "packaged"
    evals: int = 8
    """Held-out evaluations per run (every steps / evals steps)."""
    eval_batches: int = 8
    log_every: int = 10
    checkpoints: int = 4
    """Resumable checkpoints per run (every steps / checkpoints steps), so an interrupted suite loses little."""
    keep_checkpoints: int = 1
    """Checkpoints kept per run (the newest): enough to resume, and little disk for a suite of many runs."""
    threads: int = 0
    """Torch CPU threads per run (0: all cores, or cores / N with --parallel N). Tiny models run fastest on one."""
    widen: int = 0
    """Rates added beyond an edge of the sweep (x2 or /2 each) while an arm's best rate sits at that edge."""

    def __post_init__(self) -> None:
        if not self.lrs or self.seeds < 1 or self.steps < self.evals:
            raise ValueError(f"size {self.name!r} needs learning rates, seeds >= 1 and steps >= evals.")

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @property
    def tokens_per_run(self) -> int:
        return self.steps * self.tokens_per_step

    def base_model(self) -> ModelConfig:
        """The dense model of this size (tiny-dense reshaped; d_ff = 4 d_model)."""
        return dataclasses.replace(
            get_preset("tiny-dense").model,
            vocab_size=self.vocab_size,
            max_seq_len=self.seq_len,
            d_model=self.d_model,
            n_blocks=self.n_blocks,
            n_heads=self.n_heads,
            d_ff=4 * self.d_model,
        )

    def train_config(self, *, lr: float, seed: int, **fields: Any) -> TrainConfig:
        """tiny-dense's optimisation settings at this size's budget (warmup: a tenth of the steps)."""
        return dataclasses.replace(
            get_preset("tiny-dense").train,
            steps=self.steps,
            batch_size=self.batch_size,
            lr=lr,
            seed=seed,
            warmup_steps=max(self.steps // 10, 1),
            eval_every=max(self.steps // self.evals, 1),
            eval_batches=self.eval_batches,
            log_every=self.log_every,
            checkpoint_every=max(self.steps // self.checkpoints, 1),
            keep_checkpoints=self.keep_checkpoints,
            data=self.data,
            **fields,
        )


@dataclass(frozen=True)
class Arm:
    """One model of a suite: a feed-forward kind and its sizing in `blocks`, on the suite's base model."""

    name: str
    label: str
    kind: str = "dense"
    """The feed-forward kind of the arm's `blocks` (ModelConfig.ffn)."""
    mot: str = ""
    """MoT size in the paper's naming, "/nE" or "/nE/k" (MoT arms)."""
    experts: int = 0
    """Token Choice / Expert Choice: experts of width d_ff, routing groups of this many tokens (dense FLOPs)."""
    blocks: str = "second-half"
    model: tuple[tuple[str, Any], ...] = ()
    """Other ModelConfig fields, as (name, value) pairs."""
    train: tuple[tuple[str, Any], ...] = ()
    """TrainConfig fields (e.g. precision), as (name, value) pairs."""
    switch_to: str = ""
    """Transition tuning inside the run: token-choice | expert-choice at `switch_fraction` of the steps."""
    switch_fraction: float = 0.75
    stage: str = ""
    """The suite's stage this arm belongs to (reports group by it; the runner trains earlier stages first)."""
    seeds: int = 0
    """Seeds at the chosen rate (0: the size's `seeds`)."""
    lr_from: str = ""
    """Train only at the rate chosen for this earlier arm (no sweep of its own)."""
    settings_from: tuple[str, ...] = ()
    """At the best of these earlier arms (lowest seed-0 loss): its rate, and its model and training overrides when
    it is of the same kind, under this arm's own overrides."""
    best_of: tuple[str, ...] = ()
    """An alias, trained as nothing of its own: the best of these earlier arms (lowest seed-0 loss). Its further
    seeds (and re-check rates) train under the winner's name, and claims judge the winner through it."""
    recheck: bool = False
    """An alias's winner also trains at half and twice its rate (seed 0); the alias takes the best of the three."""

    @property
    def is_alias(self) -> bool:
        return bool(self.best_of)

    @property
    def size(self) -> str:
        """The arm's size in the paper's naming: `mot`, or "/{experts}E" (experts of width d_ff); "" for none."""
        return self.mot or (f"/{self.experts}E" if self.experts else "")

    def model_config(self, base: ModelConfig) -> ModelConfig:
        """The arm's kind in its blocks at its size (`layers.sized_config`, as the presets), the arm's own model
        fields on top."""
        overrides = dict(self.model)
        base = dataclasses.replace(base, **overrides)  # experts are sized from the arm's own d_ff
        return sized_config(base, self.kind, size=self.size, blocks=self.blocks, **overrides)

    def train_fields(self, steps: int) -> dict[str, Any]:
        fields = dict(self.train)
        if self.switch_to:
            fields.update(switch_to=self.switch_to, switch_at=self.switch_step(steps))
        return fields

    def switch_step(self, steps: int) -> int:
        return max(1, min(steps - 1, round(steps * self.switch_fraction)))


@dataclass(frozen=True)
class Claim:
    """A claim of the paper, judged from the suite's numbers (`verdicts.judge`).

    test: better (arms[0] reaches a lower loss than arms[1]) | matches (arms[0] is not worse than arms[1] beyond
    noise) | trend (loss falls along arms) | cheaper (going from arms[0] to arms[1] costs less than from arms[2] to
    arms[3]) | overtakes (arms[0]'s eval curve crosses below arms[1]'s, and by how many steps it reaches arms[1]'s
    final loss).
    """

    key: str
    statement: str
    test: str
    arms: tuple[str, ...]
    paper: str
    """Where the paper shows it, and its budget."""
    paper_tokens: float | None = None
    """Training tokens per run behind the paper's figure (None: no figure)."""


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    arms: tuple[Arm, ...]
    claims: tuple[Claim, ...]
    sizes: dict[str, Size] = field(default_factory=dict)
    protocol: str = ""
    """How the suite chooses rates and settings, for the report (empty: every arm swept, then its seeds)."""

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    def size(self, name: str) -> Size:
        if name not in self.sizes:
            raise ValueError(f"suite {self.name!r} has no size {name!r}; allowed values: {', '.join(self.sizes)}.")
        return self.sizes[name]


TESTS = ("better", "matches", "trend", "cheaper", "overtakes")


def check_suite(suite: Suite) -> None:
    """Every claim names arms of the suite and a known test (checked when the catalog is built)."""
    names = {a.name for a in suite.arms}
    if len(names) != len(suite.arms):
        raise ValueError(f"suite {suite.name!r} names an arm twice.")
    earlier: set[str] = set()
    for arm in suite.arms:
        sources = (arm.lr_from,) * bool(arm.lr_from) + arm.settings_from + arm.best_of
        if any(source not in earlier for source in sources):
            raise ValueError(f"arm {arm.name!r} of suite {suite.name!r} depends on arms that are not listed before it.")
        if len([x for x in (arm.lr_from, arm.settings_from, arm.best_of) if x]) > 1:
            raise ValueError(f"arm {arm.name!r}: lr_from, settings_from and best_of exclude each other.")
        if arm.recheck and not arm.best_of:
            raise ValueError(f"arm {arm.name!r}: recheck needs best_of.")
        earlier.add(arm.name)
    for claim in suite.claims:
        if claim.test not in TESTS:
            raise ValueError(f"claim {claim.key!r}: test {claim.test!r} is not one of {', '.join(TESTS)}.")
        missing = [a for a in claim.arms if a not in names]
        if missing:
            raise ValueError(f"claim {claim.key!r} names arms {missing} that suite {suite.name!r} does not train.")
        needed = {"better": 2, "matches": 2, "cheaper": 4, "overtakes": 2}.get(claim.test)
        if (needed and len(claim.arms) != needed) or (claim.test == "trend" and len(claim.arms) < 2):
            raise ValueError(f"claim {claim.key!r}: test {claim.test!r} takes {needed or '2 or more'} arms.")


# The arms, by name, shared by the suites that use them.
def mot_arm(name: str, size: str, label: str, **kwargs: Any) -> Arm:
    """An MoT arm of size "/nE" or "/nE/k"."""
    return Arm(name, label, "mot", mot=size, **kwargs)


DENSE = Arm("dense", "dense Transformer")
TOKEN_CHOICE = Arm("token-choice", "Token Choice, top-1 over 8 experts of width d_ff", "token_choice", experts=8)
EXPERT_CHOICE = Arm("expert-choice", "Expert Choice, 8 experts of width d_ff", "expert_choice", experts=8)
MOT_8E = mot_arm("mot-8e", "/8E", "MoT /8E (G = E = 8)")
FP32, BF16 = (("precision", "fp32"),), (("precision", "bf16-pure"),)
