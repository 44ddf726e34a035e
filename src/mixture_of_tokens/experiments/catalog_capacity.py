"""`claims-capacity`: the capacity-bound size, where extra parameters at equal FLOPs can pay.

A narrow model (2 blocks x d_model 64, d_ff 256, about 0.1M non-embedding parameters) trained on 20M tokens, about
200 tokens per dense non-embedding parameter and two passes over `packaged+brown` at BPE 1,024. Every mixture
sits in every block (a 2-block model has no second half worth the name). Token Choice top-1 over 8 full-width
experts is the positive control: if it does not beat dense here, the size is wrong.

Staged (docs/compare.md): (a) dense, the control and MoT /8E at tau = 1, each swept over three learning rates
(widened where the best is at an edge); (b) MoT /8E at MoT's rate with sharper mixing; (c) the best MoT setting at
other group sizes and granularity, and Expert Choice; the winner re-checked at its neighbouring rates; (d) a
second seed for dense, the control, MoT at tau = 1 and the best MoT; (e) the Llama-style block (rotary positions,
RMSNorm, SwiGLU of the ReLU layer's FLOPs, one key/value head for the two query heads, no biases): dense, MoT at the
best setting of stages (b) and (c) (/8E/4, tau = 0.1, fixed when they had finished) and the control, each swept;
(f) more and finer experts together, /16E/4 and /32E/4 at tau = 0.1, and dense and Token Choice at /32E/4's FLOPs
per token, each swept (added after (a)-(e) had finished, to ask whether MoT closes its gap to Token Choice).
"""

from __future__ import annotations

import dataclasses

from ..layers.sizing import feed_forward_width
from .suites import PAPER_TOKENS_PER_STEP, Arm, Claim, Size, Suite, mot_arm

CAPACITY_SIZE = Size(
    "capacity",
    d_model=64,
    n_blocks=2,
    n_heads=2,
    seq_len=64,
    batch_size=64,
    steps=5000,
    lrs=(2e-3, 4e-3, 8e-3),
    vocab_size=1024,
    data="packaged+brown",
    evals=10,
    eval_batches=32,
    log_every=50,
    checkpoints=5,
    threads=1,
    widen=2,
)
"""20.5M tokens per run (5000 steps of 64 x 64): about 10-12 minutes a run on one core of the 2-core CPU."""

EVERY_BLOCK = "all"
CAPACITY_DENSE = Arm("dense", "dense Transformer")
CAPACITY_CONTROL = Arm(
    "token-choice",
    "Token Choice top-1 over 8 experts of width d_ff (the positive control)",
    "token_choice",
    experts=8,
    blocks=EVERY_BLOCK,
)
CAPACITY_MOT = mot_arm("mot-8e", "/8E", "MoT /8E (G = E = 8), tau = 1", blocks=EVERY_BLOCK, seeds=2)


def _sharper(name: str, label: str, *model: tuple[str, object]) -> Arm:
    """Stage (b): MoT /8E at MoT's rate with sharper mixing."""
    return mot_arm(name, "/8E", f"MoT /8E, {label}", blocks=EVERY_BLOCK, model=model, lr_from="mot-8e", seeds=1,
                   stage="b")  # fmt: skip


def _geometric(final: float) -> tuple[tuple[str, object], ...]:
    return (("mot_temperature_schedule", "geometric"), ("mot_temperature_final", final))


SHARPER = (
    _sharper("mot-8e-t0.3", "tau = 0.3", ("mot_temperature", 0.3)),
    _sharper("mot-8e-t0.1", "tau = 0.1", ("mot_temperature", 0.1)),
    _sharper("mot-8e-t0.03", "tau = 0.03", ("mot_temperature", 0.03)),
    _sharper("mot-8e-learn-scalar", "learnable tau (one scalar, from 1)", ("mot_learnable_temperature", "scalar")),
    _sharper("mot-8e-learn-expert", "learnable tau per expert (from 1)", ("mot_learnable_temperature", "per_expert")),
    _sharper("mot-8e-anneal-0.1", "tau annealed 1 -> 0.1 (geometric, whole run)", *_geometric(0.1)),
    _sharper("mot-8e-anneal-0.03", "tau annealed 1 -> 0.03 (geometric, whole run)", *_geometric(0.03)),
)
SHARPER_NAMES = tuple(arm.name for arm in SHARPER)
MOT_SETTINGS = ("mot-8e", *SHARPER_NAMES)


def _at_best_setting(name: str, size: str, label: str) -> Arm:
    """Stage (c): MoT of another size at the best /8E setting (its tau options and rate)."""
    return mot_arm(name, size, label, blocks=EVERY_BLOCK, settings_from=("mot-setting",), seeds=1, stage="c")


AT_BEST_SETTING = (
    _at_best_setting("mot-16e", "/16E", "MoT /16E (G = E = 16) at the best /8E setting"),
    _at_best_setting("mot-32e", "/32E", "MoT /32E (G = E = 32) at the best /8E setting"),
    _at_best_setting("mot-8e-4", "/8E/4", "MoT /8E/4 (32 experts of width d_ff / 4) at the best /8E setting"),
)

LLAMA_WIDTH = feed_forward_width(CAPACITY_SIZE.d_model, "swiglu")
LLAMA_BLOCK = (("positions", "rope"), ("norm", "rmsnorm"), ("ffn_activation", "swiglu"), ("n_kv_heads", 1),
               ("dense_bias", False), ("d_ff", LLAMA_WIDTH))  # fmt: skip
"""Stage (e): the Llama-style block at the capacity shape; `d_ff` is SwiGLU's FLOP-matched width of 4 d_model."""
LLAMA_ARMS = (
    Arm("llama-dense", "dense Transformer, Llama-style block", model=LLAMA_BLOCK, seeds=1, stage="e"),
    mot_arm("llama-mot-8e-4", "/8E/4", "MoT /8E/4 at tau = 0.1 (the best setting of stages b-c), Llama-style block",
            blocks=EVERY_BLOCK, model=(*LLAMA_BLOCK, ("mot_temperature", 0.1)),
            seeds=1, stage="e"),
    Arm("llama-token-choice", "Token Choice top-1 over 8 SwiGLU experts of width d_ff, Llama-style block",
        "token_choice", experts=8, blocks=EVERY_BLOCK, model=LLAMA_BLOCK, seeds=1,
        stage="e"),
)  # fmt: skip

MORE_AND_FINER = tuple(
    mot_arm(f"mot-{experts}e-4", f"/{experts}E/4", f"MoT /{experts}E/4 ({4 * experts} experts of width d_ff / 4) "
            "at tau = 0.1", blocks=EVERY_BLOCK, model=(("mot_temperature", 0.1),), seeds=1, stage="f")
    for experts in (16, 32)
)  # fmt: skip
"""Stage (f): more experts and finer ones together, the two changes that each helped in stage (c), at the best
setting's tau (0.1), each sweeping the rate like stage (a)."""
WIDE_DENSE_WIDTH = 448
"""d_ff of the dense model with /32E/4's FLOPs per token (458.75k forward): MoT's controller, merge and emit grow
with the number of experts, so /32E/4 computes 27% more per token than dense at d_ff 256 or Token Choice."""
WIDE_DENSE = Arm("dense-448", "dense Transformer at d_ff 448: the FLOPs per token of MoT /32E/4",
                 model=(("d_ff", WIDE_DENSE_WIDTH),), seeds=1, stage="f")  # fmt: skip
WIDE_CONTROL = Arm("token-choice-448", "Token Choice top-1 over 8 experts of width 448: about the FLOPs per token of "
                   "MoT /32E/4", "token_choice", experts=8, blocks=EVERY_BLOCK, model=(("d_ff", WIDE_DENSE_WIDTH),),
                   seeds=1, stage="f")  # fmt: skip

CLAIMS_CAPACITY_ARMS = (
    dataclasses.replace(CAPACITY_DENSE, seeds=2, stage="a"),
    dataclasses.replace(CAPACITY_CONTROL, seeds=2, stage="a"),
    dataclasses.replace(CAPACITY_MOT, stage="a"),
    *SHARPER,
    Arm("mot-sharp", "the best sharper MoT /8E of stage (b)", "mot", best_of=SHARPER_NAMES, seeds=1,
        stage="b"),
    Arm("mot-setting", "the best MoT /8E setting (tau = 1 or sharper)", "mot", best_of=MOT_SETTINGS,
        seeds=1, stage="b"),
    *AT_BEST_SETTING,
    Arm("expert-choice", "Expert Choice, 8 experts of width d_ff, one token per expert per group of 8 (MoT's sharp "
        "limit), at the best MoT setting's rate", "expert_choice", experts=8, blocks=EVERY_BLOCK,
        settings_from=("mot-setting",), seeds=1, stage="c"),
    Arm("mot-best", "the best MoT of every stage, re-checked at half and twice its rate", "mot",
        best_of=(*MOT_SETTINGS, *(arm.name for arm in AT_BEST_SETTING)), recheck=True, seeds=2, stage="d"),
    *LLAMA_ARMS,
    *MORE_AND_FINER,
    WIDE_DENSE,
    WIDE_CONTROL,
    Arm("mot-more-finer", "the better of MoT /16E/4 and /32E/4 at tau = 0.1", "mot",
        best_of=tuple(arm.name for arm in MORE_AND_FINER), seeds=2, stage="f"),
)  # fmt: skip

PAPER_MAIN = 150_000 * PAPER_TOKENS_PER_STEP
_PAPER_HEADLINE = (
    "the paper's best MoT models reach Transformer-Medium's final loss in about a third of the steps (C4, 150K "
    "steps of 256 x 256 tokens)"
)
_PAPER_SPARSE = (
    'Fig. "vs sparse MoE": MoT-Medium/32E/16 against Token Choice and Expert Choice at dense FLOPs (100K steps)'
)

CLAIMS_CAPACITY_CLAIMS = (
    Claim("control-beats-dense", "The positive control: Token Choice top-1 over 8 full-width experts reaches a lower "
          "eval loss than dense at equal active FLOPs (if not, the size is not capacity-bound).", "better",
          ("token-choice", "dense"), "the sparse-MoE literature's premise; no figure of the paper"),
    Claim("mot-beats-dense", "MoT /8E at tau = 1 (the paper's setting) reaches a lower eval loss than dense at equal "
          "active FLOPs.", "better", ("mot-8e", "dense"), _PAPER_HEADLINE, PAPER_MAIN),
    Claim("best-mot-beats-dense", "The best MoT of the suite reaches a lower eval loss than dense.", "better",
          ("mot-best", "dense"), _PAPER_HEADLINE, PAPER_MAIN),
    Claim("sharper-beats-tau-1", "Sharper mixing (the best of lower, learnable or annealed tau) beats MoT /8E at "
          "tau = 1.", "better", ("mot-sharp", "mot-8e"), "no figure: the authors offer a learnable temperature"),
    Claim("more-experts", "More experts help: at the best setting, the loss falls from G = E = 8 to 16 to 32.",
          "trend", ("mot-setting", "mot-16e", "mot-32e"), 'Fig. "more experts" (150K steps)', PAPER_MAIN),
    Claim("finer-experts", "Finer experts help: /8E/4 beats /8E at the best setting.", "better",
          ("mot-8e-4", "mot-setting"), 'Fig. "mixtures per expert" (150K steps)', PAPER_MAIN),
    Claim("mot-matches-token-choice", "The best MoT is not worse than Token Choice.", "matches",
          ("mot-best", "token-choice"), _PAPER_SPARSE, 100_000 * PAPER_TOKENS_PER_STEP),
    Claim("mot-matches-expert-choice", "The best MoT is not worse than Expert Choice.", "matches",
          ("mot-best", "expert-choice"), _PAPER_SPARSE, 100_000 * PAPER_TOKENS_PER_STEP),
    Claim("llama-control-beats-dense", "In the Llama-style block, Token Choice beats dense (the size is capacity-bound "
          "there too).", "better", ("llama-token-choice", "llama-dense"), "no figure: the paper's block is GPT-2-like"),
    Claim("llama-mot-beats-dense", "In the Llama-style block, MoT /8E/4 at tau = 0.1 beats dense.", "better",
          ("llama-mot-8e-4", "llama-dense"), "no figure: the paper's block is GPT-2-like"),
    Claim("more-and-finer-beats-best", "More and finer experts together (the better of /16E/4 and /32E/4, each at its "
          "best rate) beat the best MoT of stages (b)-(d) (/8E/4).", "better", ("mot-more-finer", "mot-best"),
          'Figs. "more experts" and "mixtures per expert" (150K steps)', PAPER_MAIN),
    Claim("more-and-finer-matches-token-choice", "More and finer experts together are not worse than Token Choice.",
          "matches", ("mot-more-finer", "token-choice"), _PAPER_SPARSE, 100_000 * PAPER_TOKENS_PER_STEP),
    Claim("more-and-finer-beats-wide-dense", "More and finer experts together beat dense of the same FLOPs per token "
          "(d_ff 448: /32E/4's mixing costs compute that grows with the number of experts).", "better",
          ("mot-more-finer", "dense-448"), "no figure: the paper compares at the dense model's FLOPs"),
    Claim("more-and-finer-matches-wide-token-choice", "More and finer experts together are not worse than Token "
          "Choice of about the same FLOPs per token (8 experts of width 448).", "matches",
          ("mot-more-finer", "token-choice-448"), _PAPER_SPARSE, 100_000 * PAPER_TOKENS_PER_STEP),
)  # fmt: skip

CLAIMS_CAPACITY = Suite(
    "claims-capacity",
    "capacity-bound: dense, Token Choice (the positive control) and MoT /8E swept; MoT /8E with sharper mixing; "
    "the best setting at G = E = 16, 32, /8E/4 and Expert Choice; a second seed where verdicts need one; the "
    "Llama-style block's dense, MoT and Token Choice",
    CLAIMS_CAPACITY_ARMS,
    CLAIMS_CAPACITY_CLAIMS,
    {"capacity": CAPACITY_SIZE},
    protocol=(
        "Staged. (a) dense, Token Choice and MoT /8E at tau = 1 each sweep the learning rate (seed 0; a best rate "
        "at an edge widens the sweep by x2 steps, up to twice). (b) MoT /8E with sharper mixing trains at MoT /8E's "
        "rate. (c) MoT /16E, /32E, /8E/4 train at the best /8E setting (its tau options and rate), Expert Choice at "
        "that rate. (d) The best MoT of all stages is re-checked at half and twice its rate (widened at an "
        "edge) and keeps the best; "
        "dense, Token Choice, MoT /8E at tau = 1 and the best MoT get a second seed. Stage (b) and (c) models have "
        "one seed: their verdicts use the seed noise pooled over the models with two. Choosing the best of many "
        "arms by one seed favours it slightly; its second seed is unselected. (e) The Llama-style block: dense, "
        "MoT /8E/4 at tau = 0.1 and Token Choice, each sweeping the rate like stage (a), one seed. (f) MoT /16E/4 "
        "and /32E/4 at tau = 0.1, and dense and Token Choice at d_ff 448 (/32E/4's FLOPs), each sweeping the rate like "
        "stage (a); the better MoT gets a second seed at its best rate and is compared."
    ),
)
