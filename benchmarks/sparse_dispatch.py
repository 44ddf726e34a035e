"""Token Choice and Expert Choice forward+backward with expert_dispatch=grouped over =padded, side by side.

    python benchmarks/sparse_dispatch.py [--repeats 20] [--device cpu] [--dtype float32|bfloat16] [--threads N]

Shapes: B=16, S=64, d=128, E=8 experts of width h=256. Each layer is timed with both dispatches on the same
weights and input, in interleaved rounds (benchmarks/timing.py); the printed ratio is the median grouped time over
the median padded time (< 1: grouped is faster). torch._grouped_mm runs on CPU from torch 2.9; a setting it
cannot run prints n/a with the reason.
"""

from __future__ import annotations

import argparse

import torch
from timing import fwd_bwd_seconds, interleaved_medians

from mixture_of_tokens import ExpertChoice, TokenChoice
from mixture_of_tokens.layers.experts import grouped_mm_problem

BATCH, SEQ_LEN, D_MODEL, N_EXPERTS, EXPERT_SIZE = 16, 64, 128, 8, 256


def layers() -> dict[str, torch.nn.Module]:
    sizes = {"n_experts": N_EXPERTS, "expert_size": EXPERT_SIZE}
    return {
        "TC top-1 cf 1.25": TokenChoice(D_MODEL, **sizes, top_k=1, capacity_factor=1.25),
        "TC top-2 cf 1.25": TokenChoice(D_MODEL, **sizes, top_k=2, capacity_factor=1.25),
        "TC top-2 dropless": TokenChoice(D_MODEL, **sizes, top_k=2, capacity_factor=None),
        "TC top-1 group G=16": TokenChoice(D_MODEL, **sizes, capacity_factor=2.0, scope="group", group_size=16),
        "EC G=16 K=2": ExpertChoice(D_MODEL, **sizes, group_size=16, tokens_per_expert=2),
    }


def compare(name: str, layer: torch.nn.Module, x_BSD: torch.Tensor, repeats: int) -> None:
    problem = grouped_mm_problem(x_BSD, layer.w1, layer.w2)
    if problem is not None:
        print(f"{name:<22} n/a: {problem}")
        return
    grad_BSD = torch.randn_like(x_BSD)

    def measure(dispatch: str) -> float:
        layer.expert_dispatch = dispatch
        return fwd_bwd_seconds(layer, x_BSD, grad_BSD)

    medians = interleaved_medians(
        {"padded": lambda: measure("padded"), "grouped": lambda: measure("grouped")}, repeats=repeats, warmup=3
    )
    padded_s, grouped_s = medians["padded"], medians["grouped"]
    print(
        f"{name:<22} padded {padded_s * 1e3:7.2f} ms   grouped {grouped_s * 1e3:7.2f} ms   "
        f"ratio {grouped_s / padded_s:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    print(
        f"B={BATCH} S={SEQ_LEN} d={D_MODEL} E={N_EXPERTS} h={EXPERT_SIZE}, fwd+bwd, {args.dtype}, "
        f"{torch.get_num_threads()} threads, {args.device}, torch {torch.__version__}"
    )
    x_BSD = torch.randn(BATCH, SEQ_LEN, D_MODEL, device=args.device, dtype=dtype, requires_grad=True)
    for name, layer in layers().items():
        compare(name, layer.to(args.device, dtype), x_BSD, args.repeats)


if __name__ == "__main__":
    main()
