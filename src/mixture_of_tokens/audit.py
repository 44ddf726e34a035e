"""Leakage audit: perturb the token at position t of one sequence and see which outputs move.

Two properties are read off the outputs that moved:
    future-token leakage   an output at a position < t moved: in causal language modelling the layer lets a
                           token's prediction depend on a later token (training then cheats, decoding disagrees);
    cross-sequence coupling which other sequences of the batch moved: MoT, Expert Choice and group-scope Token
                           Choice couple the sequences of a group (same position only); batch-scope Token Choice
                           can couple any two tokens through capacity.

`audit_layer_types` runs every feed-forward kind on one input built so that Token Choice capacity binds (every
token prefers expert 0, earlier positions more strongly), and perturbs a token that capacity first dropped: a
capacity leak, if the layer has one, evicts an earlier-position token and shows. `audit_model` does the same for
a whole Transformer (a checkpoint or a preset) by changing one input token id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .layers import FFN_REGISTRY, FeedForwardLayer, batch_multiple


@dataclass(frozen=True)
class AuditResult:
    """What moved when the token (sequence, position) was perturbed."""

    name: str
    expected_causal: bool  # whether this layer / model is meant to be free of future-token leakage
    sequence: int
    position: int
    future_leak: bool  # some output at a position < `position` moved
    max_change_before: float  # largest |change| at positions < `position`, any sequence
    moved_sequences: list[int]  # sequences with any output moving
    moved_positions: list[int]  # positions (any sequence) with an output moving
    coupling: str  # "none" (own sequence only) or "sequences b1,b2,..." that moved besides the perturbed one

    @property
    def ok(self) -> bool:
        """A layer meant to be causal shows no leak; one that is not is reported either way."""
        return not (self.expected_causal and self.future_leak)

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def compare_outputs(
    name: str,
    y_BS_: torch.Tensor,
    y2_BS_: torch.Tensor,
    sequence: int,
    position: int,
    *,
    expected_causal: bool,
    tolerance: float | None = None,
) -> AuditResult:
    """Read leakage and coupling off two outputs [B, S, ...] (before / after the perturbation).

    An output "moves" when it changes by more than `tolerance` x (1 + max |y|); the default tolerance is 1e-9 for
    float64 and 1e-5 otherwise (the untouched computations are bitwise equal in practice, so any real leak is
    far above it).
    """
    if tolerance is None:
        tolerance = 1e-9 if y_BS_.dtype == torch.float64 else 1e-5
    change_BS = (y2_BS_ - y_BS_).abs().flatten(2).amax(dim=-1).double()
    threshold = tolerance * (1.0 + float(y_BS_.abs().max()))
    moved_BS = change_BS > threshold
    before = change_BS[:, :position]
    moved_sequences = moved_BS.any(dim=1).nonzero().flatten().tolist()
    others = [b for b in moved_sequences if b != sequence]
    return AuditResult(
        name=name,
        expected_causal=expected_causal,
        sequence=sequence,
        position=position,
        future_leak=bool(moved_BS[:, :position].any()),
        max_change_before=float(before.max()) if before.numel() else 0.0,
        moved_sequences=moved_sequences,
        moved_positions=moved_BS.any(dim=0).nonzero().flatten().tolist(),
        coupling="sequences " + ",".join(map(str, others)) if others else "none",
    )


def _check_site(batch: int, seq_len: int, sequence: int, position: int) -> None:
    if not 0 <= sequence < batch:
        raise ValueError(f"sequence={sequence} is out of range; allowed values: 0..{batch - 1} (the batch size).")
    if not 0 <= position < seq_len:
        raise ValueError(f"position={position} is out of range; allowed values: 0..{seq_len - 1} (the length).")


def audit_function(
    name: str,
    fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    x_perturbed: torch.Tensor,
    sequence: int,
    position: int,
    *,
    expected_causal: bool,
) -> AuditResult:
    """Run `fn` on both inputs (no grad) and compare."""
    with torch.no_grad():
        return compare_outputs(name, fn(x), fn(x_perturbed), sequence, position, expected_causal=expected_causal)


# ------------------------------------------------------------------------------------------------------------
# Layer types


def layer_suite(
    d_model: int = 16, group_size: int = 4, n_experts: int = 4, seed: int = 0
) -> dict[str, tuple[FeedForwardLayer, bool]]:
    """Every registered feed-forward kind in float64 (each kind supplies its variants): {name: (layer, meant to
    be causal)}. The routers (each layer names its own: `router_parameter`) are biased so that input coordinate 0
    drives expert 0's logit alone (see `capacity_binding_input`)."""
    torch.manual_seed(seed)
    layers: dict[str, tuple[FeedForwardLayer, bool]] = {}
    for layer_class in FFN_REGISTRY.values():
        layers.update(layer_class.audit_examples(d_model=d_model, group_size=group_size, n_experts=n_experts))
    for layer, _ in layers.values():
        layer.double().eval()
        if layer.router_parameter is not None:
            router_DE = getattr(layer, layer.router_parameter)
            with torch.no_grad():
                router_DE[0].zero_()
                router_DE[0, 0] = 4.0
    return layers


def capacity_binding_input(
    batch: int, seq_len: int, d_model: int, sequence: int, position: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, x_perturbed) [B, S, D] float64. Coordinate 0 is large and decreasing with position, so every token
    prefers expert 0 and earlier tokens win its capacity; the audited token starts weakest (dropped) and is
    perturbed to the strongest, so a capacity-coupled layer must evict some other, earlier token."""
    generator = torch.Generator().manual_seed(seed)
    x = 0.5 * torch.randn(batch, seq_len, d_model, generator=generator, dtype=torch.float64)
    ramp_S = 2.0 - torch.arange(seq_len, dtype=torch.float64) / max(seq_len, 1)
    x[..., 0] = ramp_S + 0.01 * torch.rand(batch, seq_len, generator=generator, dtype=torch.float64)
    x[sequence, position, 0] = 0.5
    x_perturbed = x.clone()
    x_perturbed[sequence, position] += torch.randn(d_model, generator=generator, dtype=torch.float64)
    x_perturbed[sequence, position, 0] = 3.0
    return x, x_perturbed


def audit_layer_types(
    *,
    batch: int = 8,
    seq_len: int = 16,
    d_model: int = 16,
    group_size: int = 4,
    n_experts: int = 4,
    sequence: int = 0,
    position: int | None = None,
    seed: int = 0,
) -> list[AuditResult]:
    """Audit every feed-forward kind (`layer_suite`) at one perturbed token (default: the last position)."""
    position = seq_len - 1 if position is None else position
    _check_site(batch, seq_len, sequence, position)
    if batch % group_size != 0:
        raise ValueError(f"batch={batch} must be a multiple of group_size={group_size} for the grouped layers.")
    x, x_perturbed = capacity_binding_input(batch, seq_len, d_model, sequence, position, seed)
    return [
        audit_function(name, layer, x, x_perturbed, sequence, position, expected_causal=causal)
        for name, (layer, causal) in layer_suite(d_model, group_size, n_experts, seed).items()
    ]


# ------------------------------------------------------------------------------------------------------------
# Whole models


def model_is_causal(model: nn.Module) -> bool:
    """False when attention is bidirectional (the masked objective) or some feed-forward layer can let an output
    depend on a later token (e.g. batch-wide capacity, within-sequence MoT groups)."""
    if hasattr(model, "is_causal"):
        return model.is_causal()
    return all(m.is_causal() for m in model.modules() if isinstance(m, FeedForwardLayer))


def audit_model(
    model: nn.Module,
    *,
    name: str = "model",
    batch: int,
    seq_len: int,
    sequence: int = 0,
    position: int | None = None,
    seed: int = 0,
) -> AuditResult:
    """Audit a `Transformer`: random token ids, then change the id at (sequence, position); compare logits."""
    position = seq_len - 1 if position is None else position
    _check_site(batch, seq_len, sequence, position)
    config = model.config
    if seq_len > config.max_seq_len:
        raise ValueError(f"seq_len={seq_len} exceeds the model's max_seq_len={config.max_seq_len}.")
    multiple = batch_multiple(config)
    if batch % multiple != 0:
        raise ValueError(f"batch={batch} must be a multiple of the model's group_size={multiple}.")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(config.vocab_size, (batch, seq_len), generator=generator)
    ids_perturbed = ids.clone()
    shift = int(torch.randint(1, max(config.vocab_size, 2), (1,), generator=generator))
    ids_perturbed[sequence, position] = (ids[sequence, position] + shift) % config.vocab_size
    was_training = model.training
    model.eval()
    try:
        return audit_function(
            name,
            lambda ids_BS: model(ids_BS.to(device)).logits.float().cpu(),
            ids,
            ids_perturbed,
            sequence,
            position,
            expected_causal=model_is_causal(model),
        )
    finally:
        model.train(was_training)


def default_batch(config) -> int:
    """Two groups when the model groups sequences, else 4."""
    multiple = batch_multiple(config)
    return 2 * multiple if multiple > 1 else 4


# ------------------------------------------------------------------------------------------------------------
# Output


def format_table(results: list[AuditResult]) -> str:
    header = ("layer", "meant causal", "future leak", "max change before t", "coupling", "verdict")
    rows = [
        (
            r.name,
            "yes" if r.expected_causal else "no",
            "LEAK" if r.future_leak else "none",
            f"{r.max_change_before:.2e}",
            r.coupling,
            ("ok" if r.ok else "FAIL") if r.expected_causal else ("leak shown" if r.future_leak else "no leak seen"),
        )
        for r in results
    ]
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if results:
        lines.append(f"perturbed token: sequence {results[0].sequence}, position {results[0].position}")
    return "\n".join(lines)
