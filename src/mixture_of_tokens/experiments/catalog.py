"""The suites of `mot compare --suite NAME`, each at a CPU size (about an hour on 2 cores at most) and a GPU size
(d_model 256, 4 blocks, batch 64 x 256, 1600 steps: about a minute a run on one H100), and `smoke`, a
two-minute version of all of them on tiny models.

MoT and the sparse baselines sit in the second half of the blocks (the authors' 2024 layout) unless an arm says
otherwise; every model spends the dense model's FLOPs per token in its feed-forward layers.
"""

from __future__ import annotations

from .catalog_capacity import CLAIMS_CAPACITY
from .suites import (
    BF16,
    DENSE,
    EXPERT_CHOICE,
    FP32,
    MOT_8E,
    PAPER_TOKENS_PER_STEP,
    TOKEN_CHOICE,
    Arm,
    Claim,
    Size,
    Suite,
    check_suite,
    mot_arm,
)

PAPER_MAIN = 150_000 * PAPER_TOKENS_PER_STEP
PAPER_SPARSE = 100_000 * PAPER_TOKENS_PER_STEP
PAPER_TRANSITION = 165_000 * PAPER_TOKENS_PER_STEP


def _cpu(steps: int, **fields) -> Size:
    return Size("cpu", 128, 4, 4, 128, 32, steps, lrs=(3e-3, 6e-3), **fields)


def _gpu(steps: int = 1600, **fields) -> Size:
    fields = {"data": "packaged+brown", "log_every": 25, **fields}
    return Size("gpu", 256, 4, 4, 256, 64, steps, lrs=(1e-3, 2e-3, 4e-3), **fields)


def claim_mot_beats_dense(mot: str, dense: str = "dense") -> Claim:
    """The headline claim: MoT against the dense model of equal active FLOPs (also judged by `mot demo`)."""
    return Claim(
        "mot-beats-dense",
        "MoT reaches a lower eval loss than the dense Transformer of equal active FLOPs per token.",
        "better",
        (mot, dense),
        "the paper's best MoT models reach Transformer-Medium's final loss in about a third of the steps (C4, "
        "150K steps of 256 x 256 tokens)",
        PAPER_MAIN,
    )


def _claims_core(base: str, more: tuple[str, ...], finer: tuple[str, ...], uniform: str, every: str) -> tuple:
    return (
        claim_mot_beats_dense(base),
        Claim(
            "more-experts",
            "More experts help: with G = E, the eval loss falls as the number of experts grows.",
            "trend",
            more,
            'Fig. "more experts": MoT-Medium with G = E in 8, 32, 128; the loss falls as E grows (150K steps)',
            PAPER_MAIN,
        ),
        Claim(
            "more-mixtures-per-expert",
            "Finer experts help: splitting each expert k ways (/nE/k, same total width) lowers the eval loss.",
            "trend",
            finer,
            'Fig. "mixtures per expert": MoT-Medium/32E split k = 1, 8, 16, 32 ways; finer is better (150K steps)',
            PAPER_MAIN,
        ),
        Claim(
            "learned-beats-uniform",
            "Learned merge weights beat uniform routing (every merge weight 1/G: plain averaging of the group).",
            "better",
            (base, uniform),
            'Fig. "more experts": uniform routing is the paper\'s baseline for learned routing (150K steps)',
            PAPER_MAIN,
        ),
        Claim(
            "second-half-beats-every-block",
            "MoT in the second half of the blocks (the authors' 2024 runs) beats MoT in every block (their 2023 "
            "description).",
            "better",
            (base, every),
            "no figure: the authors' 2024 run configurations put MoT in the second half only",
        ),
    )


def _claims_sparse(mot: str, tc: str, ec: str) -> tuple:
    paper = (
        'Fig. "vs sparse MoE": MoT-Medium/32E/16 against Token Choice and Expert Choice at dense FLOPs (100K '
        'steps); the abstract: MoT "matches the performance of state-of-the-art MoE architectures"'
    )
    return (
        Claim("mot-matches-token-choice", "MoT is not worse than Token Choice at equal active FLOPs.", "matches",
              (mot, tc), paper, PAPER_SPARSE),
        Claim("mot-matches-expert-choice", "MoT is not worse than Expert Choice at equal active FLOPs.", "matches",
              (mot, ec), paper, PAPER_SPARSE),
    )  # fmt: skip


def _claim_precision(mot: str, mot_bf16: str, ec: str, ec_bf16: str) -> Claim:
    return Claim(
        "bf16-costs-mot-less",
        "Training in bf16 only (weights and optimizer state) costs MoT less eval loss than it costs Expert Choice.",
        "cheaper",
        (mot, mot_bf16, ec, ec_bf16),
        "bf16-only table: MoT-Medium/32E and Expert-Choice-Medium/32E, mixed precision against bf16-only (there "
        "the reference is bf16 autocast over fp32 weights; here it is fp32)",
        PAPER_MAIN,
    )


def _claim_transition(switched: str, tc: str) -> Claim:
    return Claim(
        "transition-matches-token-choice",
        "MoT switched to Token Choice for the last quarter of its run (transition tuning, one run) is not worse than "
        "Token Choice trained from scratch for the same steps.",
        "matches",
        (switched, tc),
        "150K MoT steps, then 15K Token Choice steps: the loss spikes at the switch and recovers to sparse-MoE quality",
        PAPER_TRANSITION,
    )


MASKED = (("objective", "masked"),)
WITHIN_SEQUENCE = (*MASKED, ("mot_group_axis", "within_sequence"))


def _claims_masked(dense: str, across: str, within: str) -> tuple:
    paper = (
        'the paper: MoT is "fully compatible with both masked and causal language model training"; the authors '
        "also trained BERT-style models, grouping within sequences there (no figure)"
    )
    return (
        Claim("masked-mot-beats-dense", "With the masked objective, MoT grouped across the batch reaches a lower "
              "masked-token eval loss than the dense Transformer of equal active FLOPs.", "better", (across, dense),
              paper),
        Claim("masked-within-sequence-beats-dense", "With the masked objective, MoT grouped within each sequence "
              "(no sequence depends on another) reaches a lower masked-token eval loss than the dense Transformer.",
              "better", (within, dense), paper),
    )  # fmt: skip


def _claim_crossover(mot: str) -> Claim:
    return Claim(
        "mot-overtakes-dense",
        "MoT's eval loss crosses below dense's within the budget, and MoT reaches dense's final loss in fewer steps.",
        "overtakes",
        (mot, "dense"),
        "the paper's best MoT models reach Transformer-Medium's final loss in about a third of the steps (150K steps)",
        PAPER_MAIN,
    )


MOT_TO_TC = mot_arm("mot-to-token-choice", "/8E", "MoT /8E switched to Token Choice at 75%",
                 switch_to="token-choice")  # fmt: skip

CLAIMS_CORE = Suite(
    "claims-core",
    "dense against MoT at equal active FLOPs; more experts (G = E in 4, 8, 16, 32); more mixtures per expert "
    "(/8E/1, /8E/4, /8E/8); learned against uniform routing; MoT in every block against the second half",
    (
        DENSE,
        mot_arm("mot-4e", "/4E", "MoT /4E"),
        MOT_8E,
        mot_arm("mot-16e", "/16E", "MoT /16E"),
        mot_arm("mot-32e", "/32E", "MoT /32E"),
        mot_arm("mot-8e-4", "/8E/4", "MoT /8E/4 (32 experts of width d_ff/4)"),
        mot_arm("mot-8e-8", "/8E/8", "MoT /8E/8 (64 experts of width d_ff/8)"),
        mot_arm("mot-8e-uniform", "/8E", "MoT /8E, uniform routing", model=(("mot_routing", "uniform"),)),
        mot_arm("mot-8e-every-block", "/8E", "MoT /8E in every block", blocks="all"),
    ),
    _claims_core(
        "mot-8e",
        ("mot-4e", "mot-8e", "mot-16e", "mot-32e"),
        ("mot-8e", "mot-8e-4", "mot-8e-8"),
        "mot-8e-uniform",
        "mot-8e-every-block",
    ),  # fmt: skip
    {"cpu": _cpu(200), "gpu": _gpu()},
)

CLAIMS_SPARSE = Suite(
    "claims-sparse",
    "MoT /8E against Token Choice and Expert Choice with 8 experts of width d_ff (all at dense FLOPs), and dense",
    (DENSE, MOT_8E, TOKEN_CHOICE, EXPERT_CHOICE),
    (*_claims_sparse("mot-8e", "token-choice", "expert-choice"), claim_mot_beats_dense("mot-8e")),
    {"cpu": _cpu(400), "gpu": _gpu()},
)

CLAIMS_PRECISION = Suite(
    "claims-precision",
    "MoT /8E and Expert Choice, each in fp32 and in bf16 only (parameters and optimizer state in bf16)",
    (
        mot_arm("mot-8e-fp32", "/8E", "MoT /8E, fp32", train=FP32),
        mot_arm("mot-8e-bf16", "/8E", "MoT /8E, bf16-pure", train=BF16),
        Arm("expert-choice-fp32", "Expert Choice, fp32", "expert_choice", experts=8, train=FP32),
        Arm("expert-choice-bf16", "Expert Choice, bf16-pure", "expert_choice", experts=8, train=BF16),
    ),
    (_claim_precision("mot-8e-fp32", "mot-8e-bf16", "expert-choice-fp32", "expert-choice-bf16"),),
    {"cpu": _cpu(200), "gpu": _gpu()},
)

CLAIMS_TRANSITION = Suite(
    "claims-transition",
    "MoT /8E switched to Token Choice at 75% of the steps (one run: same parameters, AdamW moments and cosine), "
    "against Token Choice from scratch, MoT without the switch and dense, for the same steps",
    (DENSE, MOT_8E, MOT_TO_TC, TOKEN_CHOICE),
    (_claim_transition("mot-to-token-choice", "token-choice"),),
    {"cpu": _cpu(400), "gpu": _gpu()},
)

CLAIMS_MASKED = Suite(
    "claims-masked",
    "BERT-style masked LM (docs/masked-lm.md): dense against MoT /8E grouped across the batch and MoT /8E grouped "
    "within each sequence (8 consecutive positions)",
    (
        Arm("dense-masked", "dense Transformer, masked LM", model=MASKED),
        mot_arm("mot-8e-masked", "/8E", "MoT /8E across the batch, masked LM", model=MASKED),
        mot_arm("mot-8e-masked-seq", "/8E", "MoT /8E within sequences, masked LM", model=WITHIN_SEQUENCE),
    ),
    _claims_masked("dense-masked", "mot-8e-masked", "mot-8e-masked-seq"),
    {"cpu": _cpu(600), "gpu": _gpu()},
)

CROSSOVER = Suite(
    "crossover",
    "dense and MoT /8E for longer: the step (and tokens) at which MoT reaches dense's eval loss, if it does",
    (DENSE, MOT_8E),
    (_claim_crossover("mot-8e"),),
    {"cpu": _cpu(1000, evals=20), "gpu": _gpu(4800, evals=24)},
)

_SMOKE_SIZE = Size("smoke", 32, 2, 2, 32, 8, 40, lrs=(1e-2, 3e-2), evals=4, eval_batches=2, log_every=5,
                   checkpoints=2, threads=1)  # fmt: skip

SMOKE = Suite(
    "smoke",
    "every claim of the other suites on a tiny model for a few steps (G = E in 2 and 4, /4E/2, uniform, every "
    "block, Token Choice, Expert Choice, bf16-pure, transition, masked LM): it checks the machinery, not the claims",
    (
        DENSE,
        mot_arm("mot-2e", "/2E", "MoT /2E"),
        mot_arm("mot-4e", "/4E", "MoT /4E"),
        mot_arm("mot-4e-2", "/4E/2", "MoT /4E/2"),
        mot_arm("mot-4e-uniform", "/4E", "MoT /4E, uniform routing", model=(("mot_routing", "uniform"),)),
        mot_arm("mot-4e-every-block", "/4E", "MoT /4E in every block", blocks="all"),
        Arm("token-choice", "Token Choice, 4 experts", "token_choice", experts=4),
        Arm("expert-choice", "Expert Choice, 4 experts", "expert_choice", experts=4),
        mot_arm("mot-4e-bf16", "/4E", "MoT /4E, bf16-pure", train=BF16),
        Arm("expert-choice-bf16", "Expert Choice, bf16-pure", "expert_choice", experts=4, train=BF16),
        mot_arm("mot-to-token-choice", "/4E", "MoT /4E switched to Token Choice at 75%", switch_to="token-choice"),
        Arm("dense-masked", "dense Transformer, masked LM", model=MASKED),
        mot_arm("mot-4e-masked", "/4E", "MoT /4E across the batch, masked LM", model=MASKED),
        mot_arm("mot-4e-masked-seq", "/4E", "MoT /4E within sequences, masked LM", model=WITHIN_SEQUENCE),
    ),
    (
        *_claims_core("mot-4e", ("mot-2e", "mot-4e"), ("mot-4e", "mot-4e-2"), "mot-4e-uniform", "mot-4e-every-block"),
        *_claims_sparse("mot-4e", "token-choice", "expert-choice"),
        _claim_precision("mot-4e", "mot-4e-bf16", "expert-choice", "expert-choice-bf16"),
        _claim_transition("mot-to-token-choice", "token-choice"),
        _claim_crossover("mot-4e"),
        *_claims_masked("dense-masked", "mot-4e-masked", "mot-4e-masked-seq"),
    ),
    {"smoke": _SMOKE_SIZE},
)

SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        CLAIMS_CORE,
        CLAIMS_SPARSE,
        CLAIMS_PRECISION,
        CLAIMS_TRANSITION,
        CLAIMS_MASKED,
        CROSSOVER,
        CLAIMS_CAPACITY,
        SMOKE,
    )  # fmt: skip
}
for _suite in SUITES.values():
    check_suite(_suite)


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"suite {name!r} is unknown; allowed values: {', '.join(SUITES)}.")
    return SUITES[name]
