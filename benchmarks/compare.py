"""The same fine-tune through finetune.train and through a plain PyTorch loop, side by side in one run.

    python benchmarks/compare.py [--threads 1] [--repeats 5]

Same model architecture and initial weights, same data, batch size, optimizer (SGD, momentum 0.9) and
epochs. Variants run round-robin (repeat r of every variant before repeat r+1 of any) after a warm-up;
the table shows median steps/s, the spread (min-max) and the ratio to the plain loop.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
import torch.nn.functional as F

import finetune
from mirrors import PythonCnn, native_copy


def plain_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int) -> int:
    """A fine-tune written the usual way (and the fast way: tensors in memory, no DataLoader)."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    steps = 0
    for _ in range(epochs):
        order = torch.randperm(len(x))
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            steps += 1
    return steps


def torch_mlp() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))


def torch_cnn() -> torch.nn.Module:
    """finetune's native "cnn" with its default options (1x28x28 images), as an nn.Module."""
    return PythonCnn(finetune.build("cnn").options)


CASES = {
    # name: (module factory, native name and options, example shape, batch size, examples)
    "mlp 64-128-10": (torch_mlp, ("mlp", dict(in_features=64, hidden=[128], num_classes=10)), (64,), 32, 32 * 1000),
    "cnn 1x28x28": (torch_cnn, ("cnn", dict()), (1, 28, 28), 64, 64 * 30),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} round-robin repeats\n")
    print(f"{'model':<16} {'batch':>5} {'variant':<36} {'steps/s':>9} {'spread':>17} {'vs plain':>8}")
    for case in args.cases:
        factory, (native_name, native_options), shape, batch_size, n = CASES[case]
        torch.manual_seed(0)
        x, y = torch.randn(n, *shape), torch.randint(0, 10, (n,))
        initial = factory()
        # name: (prepare a fresh model with the initial weights, run one epoch on it) - only the run is timed
        variants = {
            "plain PyTorch loop (eager)": (
                lambda: copy.deepcopy(initial),
                lambda model: plain_loop(model, x, y, batch_size, 1)),
            "finetune.train, scripted nn.Module": (
                lambda: copy.deepcopy(initial),
                lambda model: finetune.train(model, (x, y), epochs=1, batch_size=batch_size, lr=0.01,
                                             progress=False).steps),
            "finetune.train, runner='python'": (
                lambda: copy.deepcopy(initial),
                lambda model: finetune.train(model, (x, y), epochs=1, batch_size=batch_size, lr=0.01,
                                             runner="python", progress=False).steps),
            f"finetune.train, native '{native_name}'": (
                lambda: native_copy(native_name, initial, **native_options),
                lambda model: finetune.train(model, (x, y), epochs=1, batch_size=batch_size, lr=0.01,
                                             progress=False).steps),
        }
        rates: dict[str, list[float]] = {name: [] for name in variants}
        for repeat in range(args.repeats + 1):
            for name, (prepare, run) in variants.items():
                model = prepare()
                start = time.perf_counter()
                steps = run(model)
                if repeat > 0:  # repeat 0 is the warm-up
                    rates[name].append(steps / (time.perf_counter() - start))
        baseline = statistics.median(rates["plain PyTorch loop (eager)"])
        for name, values in rates.items():
            median = statistics.median(values)
            print(f"{case:<16} {batch_size:>5} {name:<36} {median:>9.1f} {min(values):>8.1f}-{max(values):<8.1f} "
                  f"{median / baseline:>7.2f}x")


if __name__ == "__main__":
    main()
