"""Configuration dataclasses. Every field has a one-line help string, surfaced by `mot train --help`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from .blocks import check_block_options
from .config_renames import accept_old_names
from .layers.conversion import SWITCH_TARGETS
from .layers.init import EMBEDDING_INITS
from .layers.registry import check_settings, ffn_kinds
from .runtime.devices import DEVICES
from .runtime.distributed import PARALLEL_MODES
from .runtime.precision import PRECISIONS

AUX_LOSS_REDUCTIONS: tuple[str, ...] = ("sum", "mean")

FFN_BLOCK_PATTERNS: tuple[str, ...] = ("all", "second-half", "first-half", "every-other")

OBJECTIVES: tuple[str, ...] = ("causal", "masked")

WEIGHT_DECAY_PARAMS: tuple[str, ...] = ("matrices", "all")

MAX_LR = 1e30
"""The largest learning rate accepted: AdamW's step (lr / (1 - beta1) early on) must fit in float32 (3.4e38)."""


def _help(text: str, **kwargs):
    return field(metadata={"help": text}, **kwargs)


@dataclass
class ModelConfig:
    """A pre-LN Transformer whose feed-forward sublayers are dense or MoT, block by block: a decoder (causal
    objective) or a BERT-style encoder (masked objective)."""

    vocab_size: int = _help("vocabulary size (the BPE trained on the data gets this many tokens)", default=8192)
    max_seq_len: int = _help("context length (learned absolute positions)", default=128)
    d_model: int = _help("model width", default=128)
    n_blocks: int = _help("number of Transformer blocks", default=4)
    n_heads: int = _help("attention heads (must divide d_model)", default=4)
    d_ff: int = _help("dense feed-forward width (4*d_model in the paper)", default=512)
    objective: str = _help(
        "training objective: causal (next-token LM, causal attention) | masked (BERT-style masked LM: bidirectional "
        "attention, 0.15 of the positions masked 80/10/10, loss on those only; the mask token is id vocab_size)",
        default="causal",
    )
    ffn: str = _help(
        "feed-forward kind of the selected blocks: dense | mot | token_choice | expert_choice", default="dense"
    )
    ffn_blocks: str = _help(
        "which blocks get `ffn` (the rest are dense): all | second-half (the authors' 2024 layout) | "
        "first-half | every-other | comma-separated block indices",
        default="all",
    )
    group_size: int = _help(
        "group size G (MoT, Expert Choice, group-scope Token Choice): same-position tokens of G consecutive "
        "examples (must divide the batch)",
        default=8,
    )
    n_experts: int = _help("number of experts E (MoT, Token Choice, Expert Choice)", default=8)
    expert_size: int = _help("expert width h (MoT: E*h = G*d_ff matches dense FLOPs)", default=512)
    mot_temperature: float = _help("MoT softmax temperature tau (> 0); with a schedule, tau at step 0", default=1.0)
    mot_temperature_schedule: str = _help(
        "MoT temperature over training: constant | cosine | geometric (from mot_temperature at step 0 to "
        "mot_temperature_final at the anneal's last step, then held; the trained model evaluates at the final tau)",
        default="constant",
    )
    mot_temperature_final: float = _help(
        "MoT: the final tau of a temperature schedule (> 0; 0 with schedule constant)", default=0.0
    )
    mot_temperature_anneal_steps: int = _help(
        "MoT: optimizer steps the temperature schedule takes to reach its final tau (0: the whole run)", default=0
    )
    mot_learnable_temperature: str = _help("MoT learnable temperature: none | scalar | per_expert", default="none")
    mot_routing: str = _help("MoT routing: softmax | uniform | discrete (argmax, for evaluation)", default="softmax")
    mot_discrete_rule: str = _help(
        "MoT discrete routing (and the discrete evaluation mode): project (each expert's first top token; emit over "
        "experts stays a softmax) | authors (every tied top token gets weight 1, so tied tokens are summed; emit over "
        "experts is one-hot over the top experts, as the authors' code)",
        default="project",
    )
    mot_emit: str = _help("MoT emit weights: group (the method) | experts (softmax over experts)", default="group")
    mot_separate_emit_controller: bool = _help(
        "MoT: a second controller W_e whose logits give the emit weights (the authors' ablation)", default=False
    )
    mot_grouping: str = _help(
        "MoT groups: consecutive (examples g*G..g*G+G-1, the method) | random (a fresh permutation of the batch "
        "rows per training forward, from torch's RNG; consecutive at evaluation; causal, this package's variant: "
        "the authors' code shuffles positions within a sequence)",
        default="consecutive",
    )
    mot_group_axis: str = _help(
        "MoT groups along: across_batch (same position, G consecutive examples: the method) | within_sequence (G "
        "consecutive positions of one sequence; masked objective only, G must divide max_seq_len)",
        default="across_batch",
    )
    mot_compute: str = _help(
        "MoT compute path in training: plain | recompute (keep no mixed tokens for the backward pass, recompute "
        "them a block of experts at a time: E/G x d_model fewer activation values per token, a little more compute)",
        default="plain",
    )
    mot_temperature_freeze_steps: int = _help(
        "MoT: hold a learnable temperature fixed (no gradient, no AdamW update) for the first N optimizer steps",
        default=0,
    )
    tc_top_k: int = _help("Token Choice: experts per token k (1..n_experts; 1 = Switch)", default=1)
    tc_capacity_factor: float = _help(
        "Token Choice capacity factor cf: C = min(floor(cf*T*k/E), T) slots per expert per routing group; 0: dropless",
        default=1.25,
    )
    tc_drop_rule: str = _help(
        "Token Choice: which assignments an expert over capacity keeps: probability (the C most probable) | authors "
        "(first come, first served in (example, position) order, C - 1 of them, as the authors' code)",
        default="probability",
    )
    tc_scope: str = _help(
        "Token Choice routing group: batch (whole batch, the common way; leaks future tokens through capacity) | "
        "group (same-position groups of group_size: causal-safe)",
        default="batch",
    )
    tc_load_balance_weight: float = _help("Token Choice load-balancing loss weight alpha (0: off)", default=0.01)
    tc_z_loss_weight: float = _help("Token Choice router z-loss weight (0: off)", default=0.0)
    load_balance_reduce: str = _help(
        "how the layers' auxiliary losses (load balancing, z-loss) combine: sum (over layers) | mean (each loss "
        "averaged over the layers that report it, as the authors' paper-era code did)",
        default="sum",
    )
    ec_tokens_per_expert: int = _help("Expert Choice: tokens each expert picks per group (1..group_size)", default=1)
    expert_dispatch: str = _help(
        "Token / Expert Choice expert compute: auto (grouped on CUDA where torch._grouped_mm runs, else padded) | "
        "grouped (one grouped GEMM over the tokens sorted by expert) | padded (a capacity-padded [E, slots, D] "
        "buffer and two bmm)",
        default="auto",
    )
    tie_embeddings: bool = _help("tie the output head to the token embedding", default=False)
    init_scale: float = _help("truncated-normal init: std = sqrt(init_scale / fan_in)", default=0.1)
    final_norm: bool = _help(
        "a norm (LayerNorm or RMSNorm, as `norm`) before the output head (--no-final-norm: none, as in the "
        "authors' code)",
        default=True,
    )
    embedding_init: str = _help(
        "token and position embedding init: fan_in_d (std sqrt(init_scale / d_model)) | authors (std "
        "sqrt(init_scale), fan-in 1, cut at +-0.2: an effective std of about 0.112)",
        default="fan_in_d",
    )
    # Block options (blocks.py); the defaults are the paper's GPT-2-like block, the help names the Llama-style value.
    positions: str = _help(
        "position encoding: learned (absolute embeddings, the paper) | rope (rotary, on each head's queries and keys)",
        default="learned",
    )
    rope_base: float = _help("RoPE base theta: frequency i of a head is rope_base^(-2i/head_width)", default=10000.0)
    norm: str = _help("the blocks' and final norm: layernorm (the paper) | rmsnorm (Llama)", default="layernorm")
    norm_eps: float = _help("epsilon of every LayerNorm / RMSNorm of the blocks and the final norm", default=1e-5)
    ffn_activation: str = _help(
        "dense layer and expert activation: relu (the paper) | swiglu (silu(gate) * up; expert W1 holds gate and "
        "up, [E, D, 2H]; presets size it at 2/3 of the ReLU width: docs/method.md)",
        default="relu",
    )
    n_kv_heads: int = _help(
        "key/value heads of grouped-query attention (must divide n_heads; 0: n_heads, plain multi-head)", default=0
    )
    qk_norm: bool = _help("an RMSNorm over each head's queries and keys before RoPE (Qwen3, Qwen3-MoE)", default=False)
    dense_bias: bool = _help("biases in the dense feed-forward layer (--no-dense-bias: none, as Llama)", default=True)
    tc_norm_topk_prob: bool = _help(
        "Token Choice: combine with the top-k probabilities renormalised to sum to 1 (Mixtral; Qwen-MoE's "
        "norm_topk_prob)",
        default=False,
    )

    def __post_init__(self) -> None:
        positive = ("vocab_size", "max_seq_len", "d_model", "n_blocks", "n_heads", "d_ff")
        for name in positive + ("group_size", "n_experts", "expert_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"n_heads={self.n_heads} must divide d_model={self.d_model}.")
        if self.ffn not in ffn_kinds():
            raise ValueError(f"ffn={self.ffn!r} is not supported; allowed values: {', '.join(ffn_kinds())}.")
        self.block_ffn_kinds()  # validates ffn_blocks
        for name, allowed in (
            ("load_balance_reduce", AUX_LOSS_REDUCTIONS), ("embedding_init", EMBEDDING_INITS),
            ("objective", OBJECTIVES),
        ):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name}={getattr(self, name)!r} is not supported; allowed values: {', '.join(allowed)}."
                )
        if not self.init_scale > 0:
            raise ValueError(f"init_scale must be positive, got {self.init_scale}.")
        check_settings(self)  # each feed-forward kind checks its own fields (layers/)
        check_block_options(self)

    def block_ffn_kinds(self) -> list[str]:
        """The feed-forward kind of every block, in order."""
        n = self.n_blocks
        pattern = self.ffn_blocks.strip()
        if pattern == "all":
            selected = set(range(n))
        elif pattern == "second-half":
            selected = set(range(n // 2, n))
        elif pattern == "first-half":
            selected = set(range(n // 2))
        elif pattern == "every-other":
            selected = set(range(1, n, 2))
        else:
            try:
                selected = {int(part) for part in pattern.split(",") if part.strip()}
            except ValueError:
                selected = {-1}
            if not selected or not all(0 <= i < n for i in selected):
                raise ValueError(
                    f"ffn_blocks={self.ffn_blocks!r} is not valid; allowed values: "
                    f"{', '.join(FFN_BLOCK_PATTERNS)}, or comma-separated block indices in 0..{n - 1}."
                )
        return [self.ffn if i in selected else "dense" for i in range(n)]

    @property
    def mask_token_id(self) -> int | None:
        """The masked objective's mask token: the first id after the tokenizer's (vocab_size); None if causal."""
        return self.vocab_size if self.objective == "masked" else None

    @property
    def model_vocab_size(self) -> int:
        """Rows of the token embedding and output head: the tokenizer's vocabulary, plus the mask token."""
        return self.vocab_size + 1 if self.objective == "masked" else self.vocab_size

    def check_causal(self, purpose: str) -> None:
        """Refuse, in one sentence before any compute, what only a causal (next-token) model can do."""
        if self.objective != "causal":
            raise ValueError(
                f"{purpose} needs next-token probabilities, which a masked language model "
                f"(objective={self.objective!r}) does not define; evaluate it with `mot eval` (masked-token loss and "
                "accuracy)."
            )


accept_old_names(ModelConfig)


@dataclass
class TrainConfig:
    """Optimisation, data and logging settings of one training run."""

    steps: int = _help("optimizer steps", default=400)
    batch_size: int = _help("sequences per step (a multiple of the MoT group size)", default=32)
    lr: float = _help("peak learning rate", default=3e-3)
    min_lr_ratio: float = _help("cosine decays to this fraction of the peak", default=0.1)
    warmup_steps: int = _help("linear warmup steps", default=40)
    lr_schedule_offset: int = _help(
        "steps already taken on this schedule (continue a source run's schedule after --init-from; 0: fresh)",
        default=0,
    )
    weight_decay: float = _help("AdamW weight decay (on the parameters weight_decay_params names)", default=0.1)
    weight_decay_params: str = _help(
        "which parameters AdamW decays: matrices (tensors of dim >= 2: weights, embeddings, experts) | all (also "
        "biases, norm gains and a learnable log tau, as the authors' code)",
        default="matrices",
    )
    beta1: float = _help("AdamW beta1", default=0.9)
    beta2: float = _help("AdamW beta2", default=0.999)
    grad_clip: float = _help("clip the global gradient norm to this (0: off)", default=0.5)
    eval_every: int = _help("evaluate on held-out text every N steps", default=100)
    eval_batches: int = _help("held-out batches per evaluation (fixed windows)", default=8)
    log_every: int = _help("write a metrics line every N steps", default=10)
    seed: int = _help("seed for initialisation and batch sampling", default=0)
    data: str = _help(
        "text source: packaged (offline English corpus) | packaged+brown | brown | text:PATH | c4 | c4:PATH | "
        "hf:NAME[:CONFIG]",
        default="packaged",
    )
    tokenizer: str = _help("bpe (trained on the data, vocab_size tokens) | gpt2 (GPT-2's 50,257 tokens)", default="bpe")
    text_column: str = _help("hf: sources: the dataset column that holds the text", default="text")
    device: str = _help("cpu | cuda | auto", default="auto")
    out_dir: str = _help("run directory (metrics.jsonl, config.json, model.safetensors)", default="")
    threads: int = _help("torch CPU threads (0: torch default)", default=0)
    precision: str = _help("auto (fp32 on CPU, bf16-mixed on CUDA) | fp32 | bf16-mixed | bf16-pure", default="auto")
    grad_accum_steps: int = _help("micro-batches per optimizer step (per rank)", default=1)
    parallel: str = _help("with torchrun: ddp | fsdp (FSDP2 fully_shard)", default="ddp")
    checkpoint_every: int = _help("write a resumable checkpoint every N steps (0: only at the end)", default=0)
    keep_checkpoints: int = _help("keep the newest N checkpoints", default=2)
    compile: bool | None = _help(
        "torch.compile the model (default: on CUDA yes, on CPU no; --compile / --no-compile force it)", default=None
    )
    deterministic: bool = _help("deterministic kernels (bit-identical resume on CPU)", default=False)
    tensorboard: bool = _help("also write TensorBoard logs to RUN_DIR/tensorboard", default=False)
    collapse_share: float = _help(
        "warn when one expert takes more than this share of a sparse layer's tokens", default=0.5
    )
    collapse_patience: int = _help("... for this many steps in a row (checked at log steps)", default=100)
    switch_to: str = _help(
        "transition tuning in this run: after switch_at steps every MoT layer becomes token-choice | expert-choice, "
        "reusing its tensors and their AdamW state ('': no switch)",
        default="",
    )
    switch_at: int = _help("the MoT steps before the switch (with switch_to; 1..steps-1)", default=0)
    eval_also: str = _help(
        "at every eval before a switch, also evaluate the same weights as token-choice | expert-choice "
        "(the loss if switched now; '': off)",
        default="",
    )

    def __post_init__(self) -> None:
        """Each field on its own, one sentence naming it and its allowed values (settings that depend on each
        other, the data source and the run directory are checked by `training.plan` before any data)."""
        positive = ("steps", "batch_size", "eval_every", "eval_batches", "log_every", "grad_accum_steps")
        for name in (*positive, "keep_checkpoints", "collapse_patience"):
            _check_int(name, getattr(self, name), low=1)
        for name in ("warmup_steps", "lr_schedule_offset", "checkpoint_every", "threads"):
            _check_int(name, getattr(self, name), low=0)
        _check_int("seed", self.seed, low=0, high=2**32 - 1)
        for name, allowed, ok in (
            ("lr", f"a positive finite number at most {MAX_LR:g} (AdamW's float32 step)", 0 < self.lr <= MAX_LR),
            ("min_lr_ratio", "in [0, 1]", 0 <= self.min_lr_ratio <= 1),
            ("beta1", "in [0, 1)", 0 <= self.beta1 < 1),
            ("beta2", "in [0, 1)", 0 <= self.beta2 < 1),
            ("weight_decay", "a finite number >= 0 (0: off)", 0 <= self.weight_decay < math.inf),
            ("grad_clip", "a number >= 0 (0: off)", self.grad_clip >= 0),
            ("collapse_share", "in (0, 1]", 0 < self.collapse_share <= 1),
        ):
            if not ok:
                raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)}.")
        _check_int("switch_at", self.switch_at, low=0)
        if not isinstance(self.text_column, str) or not self.text_column.strip():
            raise ValueError(f"text_column must be a non-empty column name, got {self.text_column!r}.")
        if self.compile not in (None, True, False):
            raise ValueError(f"compile must be true, false or unset (auto: on CUDA only), got {self.compile!r}.")
        for name, allowed in (
            ("precision", PRECISIONS),
            ("parallel", PARALLEL_MODES),
            ("device", DEVICES),
            ("switch_to", ("", *SWITCH_TARGETS)),
            ("weight_decay_params", WEIGHT_DECAY_PARAMS),
            ("eval_also", ("", *SWITCH_TARGETS)),
        ):
            if getattr(self, name) not in allowed:
                shown = ", ".join(value or repr(value) for value in allowed)
                raise ValueError(f"{name}={getattr(self, name)!r} is not supported; allowed values: {shown}.")


def _check_int(name: str, value: object, *, low: int, high: int | None = None) -> None:
    """An integer (not a bool) in low..high (high: unbounded when None)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= low and (high is None or value <= high):
        return
    allowed = (
        f"an integer in {low}..{high}"
        if high is not None
        else "a positive integer"
        if low == 1
        else f"an integer >= {low}"
    )
    raise ValueError(f"{name} must be {allowed}, got {value!r}.")


def field_help(cls: type) -> dict[str, str]:
    """{field name: help text} of a config dataclass."""
    return {f.name: f.metadata.get("help", "") for f in fields(cls)}
