"""Token batches cut to their longest row (trim_padding) and grouped by length, beside padded batches.

    python benchmarks/padding.py [--seeds 3] [--max-length 128] [--threads 2]

MiniLM ("minilm", dropout on) fully fine-tuned for one epoch on a stratified 10% of Rotten Tomatoes' training
split (1,024 snippets) at max_length=128: AdamW 5e-5, weight decay 0.01, batches of 16, linear decay after a 10%
warm-up; validation accuracy on the first 1,000 snippets of the test split. Three variants of the same run, in
one process, round-robin over the seeds: padded batches (trim_padding=False), each batch cut to its longest row
(the default), and cut batches of similar lengths (group_by_length=True). The epoch's seconds are the loop's own
(history's "seconds": the training steps, not the validation pass).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import finetune
from finetune import datasets

VARIANTS = {
    "padded (trim_padding=False)": dict(trim_padding=False),
    "trimmed (default)": dict(),
    "trimmed + group_by_length=True": dict(group_by_length=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    seconds: dict[str, list[float]] = {name: [] for name in VARIANTS}
    accuracy: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for seed in range(args.seeds):
        split = datasets.load("rotten-tomatoes", seed=seed)
        keep, _ = datasets.stratified_split(split.y_train, 0.9, seed)
        train = (list(split.x_train[keep]), split.y_train[keep])
        val = (list(split.x_test[:1000]), split.y_test[:1000])
        for name, settings in VARIANTS.items():
            # normalize=False, layers=1: the raw mean of the last layer, as the README's table was measured
            result = finetune.train("minilm", train, val, max_length=args.max_length, normalize=False, layers=1,
                                    epochs=1, batch_size=16, optimizer="adamw", lr=5e-5, weight_decay=0.01,
                                    schedule="linear", warmup=0.1, seed=seed, progress=False, **settings)
            assert result.trim_padding["used"] == ("trim_padding" not in settings), result.trim_padding
            seconds[name].append(result.history[0]["seconds"])
            accuracy[name].append(result.history[0]["val_accuracy"])
    print(f"torch {torch.__version__}, {args.threads} thread(s), max_length={args.max_length}, seeds 0-{args.seeds - 1}, "
          f"{time.perf_counter() - start:.0f} s in all\n")
    baseline = statistics.median(seconds["padded (trim_padding=False)"])
    print(f"{'variant':<34} {'s / epoch':>10} {'vs padded':>9} {'accuracy (mean ± sd)':>22}")
    for name in VARIANTS:
        median = statistics.median(seconds[name])
        spread = statistics.stdev(accuracy[name]) if len(accuracy[name]) > 1 else 0.0
        print(f"{name:<34} {median:>10.1f} {baseline / median:>8.2f}x {statistics.mean(accuracy[name]):>14.4f} ± "
              f"{spread:.4f}")


if __name__ == "__main__":
    main()
