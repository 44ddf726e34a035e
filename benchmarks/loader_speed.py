"""Tokens/s of the batch loader against what one tiny-dense training step consumes, measured in one process.

    python benchmarks/loader_speed.py [--source packaged] [--tokenizer bpe] [--batches 300] [--steps 10]

The loader (BatchSampler.next_batch over the memory-mapped train.bin) must outpace training by far, so data
never limits a run: the printed ratio is loader tokens/s over training tokens/s (the target is >= 50x).
A training step is tiny-dense's (batch 32 x 128 tokens): forward, backward and AdamW on random ids.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch

from mixture_of_tokens.data import BatchSampler, prepare_data
from mixture_of_tokens.model import Transformer
from mixture_of_tokens.presets import get_preset

TARGET_RATIO = 50.0


def loader_tokens_per_second(sampler: BatchSampler, batches: int) -> float:
    """Median over rounds of 20 batches, so one slow round (a busy machine) does not decide."""
    for _ in range(10):  # warm the page cache and numpy's generator setup
        sampler.next_batch()
    round_size = 20
    rates = []
    for _ in range(max(1, batches // round_size)):
        start = time.perf_counter()
        for _ in range(round_size):
            sampler.next_batch()
        rates.append(round_size * sampler.batch_size * sampler.seq_len / (time.perf_counter() - start))
    return statistics.median(rates)


def training_tokens_per_second(vocab_size: int, steps: int) -> float:
    preset = get_preset("tiny-dense")
    config = dataclasses.replace(preset.model, vocab_size=vocab_size)
    batch, seq_len = preset.train.batch_size, config.max_seq_len
    torch.manual_seed(0)
    model = Transformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=preset.train.lr)
    ids = torch.randint(0, vocab_size, (batch, seq_len + 1))
    inputs, targets = ids[:, :-1], ids[:, 1:]

    def step() -> float:
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model(inputs, targets).loss.backward()
        optimizer.step()
        return time.perf_counter() - start

    for _ in range(2):  # warm-up
        step()
    return batch * seq_len / statistics.median(step() for _ in range(steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="packaged")
    parser.add_argument("--tokenizer", default="bpe")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--batches", type=int, default=300, help="loader batches timed")
    parser.add_argument("--steps", type=int, default=10, help="training steps timed")
    args = parser.parse_args()

    data = prepare_data(args.source, vocab_size=args.vocab_size, tokenizer=args.tokenizer)
    preset = get_preset("tiny-dense")
    sampler = BatchSampler(data.train_tokens, preset.train.batch_size, preset.model.max_seq_len, seed=0)
    loader = loader_tokens_per_second(sampler, args.batches)
    training = training_tokens_per_second(data.tokenizer.vocab_size, args.steps)
    ratio = loader / training
    print(f"torch threads: {torch.get_num_threads()}, batch {sampler.batch_size} x {sampler.seq_len} tokens")
    print(f"loader   (BatchSampler.next_batch):      {loader:>14,.0f} tokens/s")
    print(f"training (tiny-dense step, {data.tokenizer.name}): {training:>14,.0f} tokens/s")
    verdict = "ok" if ratio >= TARGET_RATIO else f"BELOW the {TARGET_RATIO:.0f}x target"
    print(f"ratio: {ratio:,.0f}x ({verdict})")


if __name__ == "__main__":
    main()
