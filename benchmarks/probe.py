"""The recipe's head phase as a linear probe beside the loop's head phase and scikit-learn, on MiniLM's features.

    python benchmarks/probe.py [--seeds 4] [--shots 8 16 64] [--fraction 0.1] [--threads 1]

Rotten Tomatoes, the samples of benchmarks/setfit_side_by_side.py (k snippets per class, and a stratified 10%; the
same 2,000 test snippets per seed). MiniLM's features (all-MiniLM-L6-v2, 48 tokens, eval mode) are computed once
for every snippet any seed uses; each method then trains a linear head on them:

- scikit-learn's LogisticRegression at its default C=1 (the reference a user would reach for: finetune.embed,
  then scikit-learn);
- finetune's head phase as the recipe now runs it (recipe="head"): the linear probe, L-BFGS with C chosen by
  stratified 5-fold cross-validation on the training slice (finetune.probe);
- finetune's head phase in the loop, as before the probe (recipe="head" with batch_size=32, the default, given:
  a setting given for the loop makes the loop train the head): AdamW at a range-tested rate, early stopping on
  the validation slice.

The model is a body (an identity: the features are its input) and a seeded nn.Linear head, so the recipe runs on
the features as it runs on the cached ones of a "minilm" built by name.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

import finetune
from finetune import datasets, text
from setfit_side_by_side import TEST_SIZE, draw


class OnFeatures(torch.nn.Module):
    """A head on features given as the input: the recipe's head phase runs on them as on cached ones."""

    def __init__(self, features: int, classes: int, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.body = torch.nn.Identity()
        self.head = torch.nn.Linear(features, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--shots", type=int, nargs="*", default=[8, 16, 64])
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    columns = [f"{k} per class" for k in args.shots] + [f"{args.fraction:.0%}"]
    runs = []  # (seed, column, train texts, train labels, test texts, test labels)
    for seed in range(args.seeds):
        split = datasets.load("rotten-tomatoes", seed=seed)
        keep, _ = datasets.stratified_split(split.y_test, 1.0 - TEST_SIZE / len(split.y_test), seed)
        samples = [draw(split.y_train, k, seed) for k in args.shots]
        samples.append(datasets.stratified_split(split.y_train, 1.0 - args.fraction, seed)[0])
        for column, indices in zip(columns, samples):
            runs.append((seed, column, split.x_train[indices], split.y_train[indices], split.x_test[keep],
                         split.y_test[keep]))
    texts = sorted({t for run in runs for part in (run[2], run[4]) for t in part})
    model, tokenize = text.minilm_classifier(2, max_length=48, seed=0)
    embedded = time.perf_counter()
    features = finetune.embed(model, tokenize(texts))
    print(f"features of {len(texts)} snippets in {time.perf_counter() - embedded:.0f} s", flush=True)
    row = {t: i for i, t in enumerate(texts)}

    table: dict[tuple[str, str], list[float]] = {}
    for seed, column, x, y, x_test, y_test in runs:
        f, f_test = features[[row[t] for t in x]], features[[row[t] for t in x_test]]
        methods = {
            "scikit-learn LogisticRegression (C=1)":
                lambda: LogisticRegression(max_iter=5000).fit(f, y).score(f_test, y_test),
            "finetune recipe='head': the linear probe (now)": lambda: head_phase(f, y, f_test, y_test, seed, {}),
            "finetune recipe='head' in the loop (before)":
                lambda: head_phase(f, y, f_test, y_test, seed, {"batch_size": 32}),
        }
        for method, run in methods.items():
            accuracy = run()
            table.setdefault((method, column), []).append(accuracy)
            print(f"seed {seed}, {column}, {method}: {accuracy:.4f}", flush=True)
    print(f"\n### A linear head on MiniLM's features, Rotten Tomatoes ({args.seeds} seeds; test accuracy on {TEST_SIZE} "
          "snippets, mean ± std)\n")
    print("| method | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for method in dict.fromkeys(m for m, _ in table):
        cells = [f"{statistics.mean(table[(method, c)]):.3f} ± {statistics.pstdev(table[(method, c)]):.3f}"
                 for c in columns]
        print(f"| {method} | " + " | ".join(cells) + " |")
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


def head_phase(f: np.ndarray, y: np.ndarray, f_test: np.ndarray, y_test: np.ndarray, seed: int,
               settings: dict) -> float:
    model = OnFeatures(f.shape[1], 2, seed)
    finetune.train(model, (f, y), recipe="head", seed=seed, progress=False, runner="python", **settings)
    return finetune.evaluate(model, (f_test, y_test), runner="python")["accuracy"]


if __name__ == "__main__":
    main()
