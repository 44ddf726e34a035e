"""Plain-loop float64 references of the feed-forward sublayers, written from docs/method.md §1 and §2.

Deliberately slow and explicit: loops over groups, positions, experts and tokens; the only vectorised
operation is one token's vector-matrix product. Used by the tests to check the batched layers.
"""

from __future__ import annotations

import math

import torch


def _temperatures(temperature: float | torch.Tensor, n_experts: int) -> list[float]:
    """tau per expert as Python floats (a float, a 0-d tensor or an [E] tensor)."""
    if isinstance(temperature, torch.Tensor):
        if temperature.dim() == 0:
            return [float(temperature)] * n_experts
        assert temperature.shape == (n_experts,)
        return [float(t) for t in temperature]
    return [float(temperature)] * n_experts


def plain_softmax(values: list[float]) -> list[float]:
    """Numerically stable softmax of a list of floats."""
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def reference_merge_weights(
    logits: list[list[float]], temperature: list[float], routing: str, discrete_rule: str = "project"
) -> list[list[float]]:
    """Merge weights w[t][e] of one group from its logits z[t][e] (t over the G tokens of the group). Discrete
    routing: weight 1 on the first top token (discrete_rule "project") or on every tied top token ("authors")."""
    group_size = len(logits)
    n_experts = len(logits[0])
    weights = [[0.0] * n_experts for _ in range(group_size)]
    for e in range(n_experts):
        column = [logits[t][e] for t in range(group_size)]
        if routing == "softmax":
            column_w = plain_softmax([z / temperature[e] for z in column])
        elif routing == "uniform":
            column_w = [1.0 / group_size] * group_size
        elif routing == "discrete" and discrete_rule == "authors":
            column_w = [1.0 if z == max(column) else 0.0 for z in column]
        elif routing == "discrete":
            best = max(range(group_size), key=lambda t: column[t])
            column_w = [1.0 if t == best else 0.0 for t in range(group_size)]
        else:
            raise ValueError(routing)
        for t in range(group_size):
            weights[t][e] = column_w[t]
    return weights


def expert_output(x_D: torch.Tensor, w1_EDH: torch.Tensor, w2_EHD: torch.Tensor, e: int) -> torch.Tensor:
    """Expert e on one vector: relu(x W1[e]) W2[e]; a SwiGLU expert (W1 [E, D, 2H]: gate columns, then up
    columns) is (silu(x W1g[e]) * (x W1u[e])) W2[e], silu(g) = g / (1 + exp(-g)) written out, one value at a time."""
    hidden = w2_EHD.shape[1]
    if w1_EDH.shape[2] == hidden:
        return torch.relu(x_D @ w1_EDH[e]) @ w2_EHD[e]
    assert w1_EDH.shape[2] == 2 * hidden
    gate, up = x_D @ w1_EDH[e][:, :hidden], x_D @ w1_EDH[e][:, hidden:]
    product = torch.zeros(hidden, dtype=torch.float64)
    for i in range(hidden):
        g = float(gate[i])
        product[i] = g / (1.0 + math.exp(-g)) * float(up[i])
    return product @ w2_EHD[e]


def reference_logits(x: torch.Tensor, controller: torch.Tensor) -> torch.Tensor:
    """z[b, s, e] = x[b, s] . W_c[:, e], one token at a time."""
    batch, seq_len, _ = x.shape
    out = torch.zeros(batch, seq_len, controller.shape[1], dtype=torch.float64)
    for b in range(batch):
        for s in range(seq_len):
            out[b, s] = x[b, s].double() @ controller.double()
    return out


def reference_group_weights(
    x: torch.Tensor,
    controller: torch.Tensor,
    group_size: int,
    temperature: float | torch.Tensor = 1.0,
    routing: str = "softmax",
) -> torch.Tensor:
    """Merge weights w[b, s, e] of every token (normalised over the G tokens of each same-position group)."""
    batch, seq_len, _ = x.shape
    n_experts = controller.shape[1]
    taus = _temperatures(temperature, n_experts)
    z = reference_logits(x, controller)
    weights = torch.zeros(batch, seq_len, n_experts, dtype=torch.float64)
    for g in range(batch // group_size):
        members = [g * group_size + i for i in range(group_size)]
        for s in range(seq_len):
            logits = [[float(z[b, s, e]) for e in range(n_experts)] for b in members]
            w = reference_merge_weights(logits, taus, routing)
            for i, b in enumerate(members):
                for e in range(n_experts):
                    weights[b, s, e] = w[i][e]
    return weights


def reference_mot(
    x: torch.Tensor,
    controller: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    group_size: int,
    temperature: float | torch.Tensor = 1.0,
    routing: str = "softmax",
    emit: str = "group",
) -> torch.Tensor:
    """Mixture of Tokens, docs/method.md §1: x[B, S, D] -> dx[B, S, D] in float64.

    Group g = examples g*G ... g*G+G-1 at one position s. Per expert e: merge m = sum_t w[t,e] x_t,
    y = relu(m W1[e]) W2[e], emit dx_t += v[t,e] y, with v = w ("group") or the per-token softmax over experts
    of z/tau ("experts").
    """
    x = x.double()
    controller, w1, w2 = controller.double(), w1.double(), w2.double()
    batch, seq_len, dim = x.shape
    n_experts = controller.shape[1]
    assert batch % group_size == 0
    taus = _temperatures(temperature, n_experts)
    z = reference_logits(x, controller)
    merge = reference_group_weights(x, controller, group_size, temperature, routing)
    out = torch.zeros(batch, seq_len, dim, dtype=torch.float64)
    for g in range(batch // group_size):
        members = [g * group_size + i for i in range(group_size)]
        for s in range(seq_len):
            if emit == "group":
                emit_w = {b: [float(merge[b, s, e]) for e in range(n_experts)] for b in members}
            elif emit == "experts":
                emit_w = {b: plain_softmax([float(z[b, s, e]) / taus[e] for e in range(n_experts)]) for b in members}
            else:
                raise ValueError(emit)
            for e in range(n_experts):
                mixed = torch.zeros(dim, dtype=torch.float64)
                for b in members:
                    mixed = mixed + float(merge[b, s, e]) * x[b, s]
                y = expert_output(mixed, w1, w2, e)
                for b in members:
                    out[b, s] = out[b, s] + emit_w[b][e] * y
    return out


def reference_mot_options(
    x: torch.Tensor,
    controller: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    group_size: int,
    temperature: float | torch.Tensor = 1.0,
    routing: str = "softmax",
    emit: str = "group",
    *,
    emit_controller: torch.Tensor | None = None,
    rows: list[int] | torch.Tensor | None = None,
    discrete_rule: str = "project",
) -> torch.Tensor:
    """Mixture of Tokens with the authors' ablations (docs/method.md §1) in float64, one group, position and expert
    at a time.

    rows: the batch order groups are cut from; group g = examples rows[g*G] ... rows[g*G+G-1] (random grouping;
    None: 0 ... B-1, consecutive). emit_controller: a separate W_e [D, E] whose logits z'[t,e] = x_t . W_e[:, e]
    give the emit weights, under the same routing and tau (over the group for emit="group", over experts for
    emit="experts"); None: the emit weights come from the merge logits. discrete_rule (discrete routing only):
    "project" gives weight 1 to the first top token of a group and keeps emit over experts a softmax; "authors"
    gives weight 1 to every tied top token and makes emit over experts one-hot over every tied top expert.
    """
    x = x.double()
    controller, w1, w2 = controller.double(), w1.double(), w2.double()
    batch, seq_len, dim = x.shape
    n_experts = controller.shape[1]
    assert batch % group_size == 0
    order = list(range(batch)) if rows is None else [int(r) for r in rows]
    assert sorted(order) == list(range(batch))
    taus = _temperatures(temperature, n_experts)
    merge_z = reference_logits(x, controller)
    emit_z = merge_z if emit_controller is None else reference_logits(x, emit_controller)
    out = torch.zeros(batch, seq_len, dim, dtype=torch.float64)
    for g in range(batch // group_size):
        members = order[g * group_size : (g + 1) * group_size]
        for s in range(seq_len):
            tokens = [(b, s) for b in members]
            _reference_group(tokens, x, merge_z, emit_z, w1, w2, taus, routing, emit, out, discrete_rule)
    return out


def _reference_group(
    tokens: list[tuple[int, int]],
    x: torch.Tensor,
    merge_z: torch.Tensor,
    emit_z: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    taus: list[float],
    routing: str,
    emit: str,
    out: torch.Tensor,
    discrete_rule: str = "project",
) -> None:
    """Merge, experts and emit for one group, its tokens given as (example, position) pairs; adds into `out`."""
    n_experts = merge_z.shape[-1]
    merge_w = reference_merge_weights(
        [[float(merge_z[b, s, e]) for e in range(n_experts)] for b, s in tokens], taus, routing, discrete_rule
    )
    if emit == "experts" and routing == "discrete" and discrete_rule == "authors":
        emit_w = []
        for b, s in tokens:
            scaled = [float(emit_z[b, s, e]) / taus[e] for e in range(n_experts)]
            emit_w.append([1.0 if z == max(scaled) else 0.0 for z in scaled])
    elif emit == "experts":
        emit_w = [plain_softmax([float(emit_z[b, s, e]) / taus[e] for e in range(n_experts)]) for b, s in tokens]
    elif emit == "group":
        emit_w = reference_merge_weights(
            [[float(emit_z[b, s, e]) for e in range(n_experts)] for b, s in tokens], taus, routing, discrete_rule
        )
    else:
        raise ValueError(emit)
    for e in range(n_experts):
        mixed = torch.zeros(x.shape[-1], dtype=torch.float64)
        for i, (b, s) in enumerate(tokens):
            mixed = mixed + merge_w[i][e] * x[b, s]
        y = expert_output(mixed, w1, w2, e)
        for i, (b, s) in enumerate(tokens):
            out[b, s] = out[b, s] + emit_w[i][e] * y


def reference_feed_forward(
    x: torch.Tensor, w_up: torch.Tensor, b_up: torch.Tensor, w_down: torch.Tensor, b_down: torch.Tensor
) -> torch.Tensor:
    """Dense FF token by token: relu(x W_up^T + b_up) W_down^T + b_down (nn.Linear layout [out, in])."""
    x = x.double()
    batch, seq_len, dim = x.shape
    out = torch.zeros(batch, seq_len, w_down.shape[0], dtype=torch.float64)
    for b in range(batch):
        for s in range(seq_len):
            hidden = torch.relu(x[b, s] @ w_up.double().T + b_up.double())
            out[b, s] = hidden @ w_down.double().T + b_down.double()
    return out


def reference_expert(x: torch.Tensor, w1_DH: torch.Tensor, w2_HD: torch.Tensor) -> torch.Tensor:
    """One expert's weights as a dense FF without biases, token by token: what a layer reduces to with a single
    expert (or MoT with G = 1, summed over experts)."""
    hidden, dim = w1_DH.shape[1], w2_HD.shape[1]
    zeros_H, zeros_D = torch.zeros(hidden, dtype=torch.float64), torch.zeros(dim, dtype=torch.float64)
    return reference_feed_forward(x, w1_DH.T, zeros_H, w2_HD.T, zeros_D)


def reference_mot_within_sequence(
    x: torch.Tensor,
    controller: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    group_size: int,
    temperature: float | torch.Tensor = 1.0,
    routing: str = "softmax",
    emit: str = "group",
    *,
    emit_controller: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mixture of Tokens with within-sequence groups (masked LM) in float64, one sequence, group and expert at a
    time: group g of sequence b = positions g*G ... g*G+G-1 of that sequence alone. Merge, experts and emit as in
    `reference_mot_options` (emit_controller: a separate W_e for the emit weights)."""
    x = x.double()
    controller, w1, w2 = controller.double(), w1.double(), w2.double()
    batch, seq_len, dim = x.shape
    n_experts = controller.shape[1]
    assert seq_len % group_size == 0
    taus = _temperatures(temperature, n_experts)
    merge_z = reference_logits(x, controller)
    emit_z = merge_z if emit_controller is None else reference_logits(x, emit_controller)
    out = torch.zeros(batch, seq_len, dim, dtype=torch.float64)
    for b in range(batch):
        for g in range(seq_len // group_size):
            tokens = [(b, s) for s in range(g * group_size, (g + 1) * group_size)]
            _reference_group(tokens, x, merge_z, emit_z, w1, w2, taus, routing, emit, out)
    return out
