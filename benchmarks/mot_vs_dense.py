"""MoT layer forward+backward time over a dense FeedForward at equal expert FLOPs, measured side by side.

    python benchmarks/mot_vs_dense.py [--repeats 30] [--device cpu]

Shapes (issue 2): B=32, S=128, d=256, d_ff=1024; MoT /16E (G=E=16, h=1024) and /16E/8 (G=16, E=128, h=128).
Layers are timed in interleaved rounds (dense, MoT, dense, ...) so drift in machine speed hits both alike;
the printed ratio is the median MoT time over the median dense time.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mixture_of_tokens import FeedForward, MixtureOfTokens, mot_sizing

BATCH, SEQ_LEN, D_MODEL, D_FF = 32, 128, 256, 1024


def fwd_bwd_seconds(layer: torch.nn.Module, x_BSD: torch.Tensor, grad_BSD: torch.Tensor) -> float:
    """One forward + backward; gradients start empty as in training (`zero_grad(set_to_none=True)`)."""
    layer.zero_grad(set_to_none=True)
    x_BSD.grad = None
    sync = torch.cuda.synchronize if x_BSD.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    layer(x_BSD).backward(grad_BSD)
    sync()
    return time.perf_counter() - start


def compare(name: str, mot: MixtureOfTokens, dense: FeedForward, repeats: int, device: str) -> float:
    x_BSD = torch.randn(BATCH, SEQ_LEN, D_MODEL, device=device, requires_grad=True)
    grad_BSD = torch.randn_like(x_BSD)
    for _ in range(3):  # warm-up
        fwd_bwd_seconds(dense, x_BSD, grad_BSD)
        fwd_bwd_seconds(mot, x_BSD, grad_BSD)
    dense_times, mot_times = [], []
    for _ in range(repeats):
        dense_times.append(fwd_bwd_seconds(dense, x_BSD, grad_BSD))
        mot_times.append(fwd_bwd_seconds(mot, x_BSD, grad_BSD))
    dense_s, mot_s = statistics.median(dense_times), statistics.median(mot_times)
    ratio = mot_s / dense_s
    print(f"{name:<10} dense {dense_s * 1e3:7.2f} ms   MoT {mot_s * 1e3:7.2f} ms   ratio {ratio:.3f}")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"B={BATCH} S={SEQ_LEN} d={D_MODEL} d_ff={D_FF}, fwd+bwd, {torch.get_num_threads()} threads, {args.device}")
    dense = FeedForward(D_MODEL, d_ff=D_FF).to(args.device)
    for name in ("/16E", "/16E/8"):
        sizing = mot_sizing(name, D_FF)
        mot = MixtureOfTokens(
            D_MODEL, n_experts=sizing.n_experts, expert_size=sizing.expert_size, group_size=sizing.group_size
        ).to(args.device)
        compare(name, mot, dense, args.repeats, args.device)


if __name__ == "__main__":
    main()
