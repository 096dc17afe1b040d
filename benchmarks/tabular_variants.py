"""What each tabular rule of recipe="auto" is worth: "mlp" from scratch on the built-in tabular sets, one choice changed at a time.

    python benchmarks/tabular_variants.py [--seeds 20] [--threads 1]

Iris, wine, breast cancer (test accuracy) and diabetes (test R², the target standardised on the training rows),
each seed its own stratified 80/20 split. "mlp" gets the features as scikit-learn ships them (raw units: it scales
its inputs itself, registry.robust_scaling); scikit-learn's logistic / linear regression gets them standardised
on the training rows, as a practitioner would give them. Each row changes one of finetune.recipe's tabular
constants or gives one setting. recipe.py's and the README's tabular figures come from this table.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from unittest import mock

import numpy as np
import torch

import finetune
from finetune import datasets, recipe

SETS = {"iris": "classification", "wine": "classification", "breast_cancer": "classification",
        "diabetes": "regression"}
NO_SCALING = {"center": [], "scale": [], "clip": 0.0}

# row -> (recipe constants changed, settings given)
VARIANTS = {
    "the recipe as it is": ({}, {}),
    "no label smoothing": ({}, {"label_smoothing": 0.0}),
    "the general rate rule (/ 10)": ({"TABULAR_LR_DIVISOR": {"classification": 10.0, "regression": 10.0}}, {}),
    "classification / 100": ({"TABULAR_LR_DIVISOR": {"classification": 100.0, "regression": 300.0}}, {}),
    "regression / 30": ({"TABULAR_LR_DIVISOR": {"classification": 30.0, "regression": 30.0}}, {}),
    "regression / 100": ({"TABULAR_LR_DIVISOR": {"classification": 30.0, "regression": 100.0}}, {}),
    "hidden [256, 256, 256] (RealMLP's width)": ({}, {"hidden": [256, 256, 256]}),
    "dropout 0.15 (RealMLP's)": ({}, {"dropout": 0.15}),
    "no input scaling (raw features)": ({}, NO_SCALING),
}


def split(name: str, seed: int) -> tuple[np.ndarray, ...]:
    """(raw train, raw test, standardised train, standardised test, y train, y test) of one seeded split."""
    from sklearn import datasets as sk

    d = getattr(sk, f"load_{name}")()
    classification = SETS[name] == "classification"
    x = d.data.astype(np.float32)
    y = d.target.astype(np.int64) if classification else d.target.astype(np.float32)
    train, test = datasets.stratified_split(y, 0.2, seed, stratify=classification)
    if not classification:
        y = (y - y[train].mean()) / y[train].std()
    return (x[train], x[test], *datasets._standardise(x[train], x[test]), y[train], y[test])


def score(name: str, predicted: np.ndarray, y: np.ndarray) -> float:
    predicted = np.asarray(predicted).reshape(-1)
    if SETS[name] == "classification":
        return float((predicted == y).mean())
    return float(1 - ((predicted - y) ** 2).mean() / ((y - y.mean()) ** 2).mean())


def main() -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows: dict[str, dict[str, list[float]]] = {}
    for name, task in SETS.items():
        for seed in range(args.seeds):
            x_raw, x_raw_test, x_std, x_std_test, y, y_test = split(name, seed)
            linear = LogisticRegression(max_iter=5000) if task == "classification" else LinearRegression()
            rows.setdefault("scikit-learn logistic / linear regression (standardised)", {}).setdefault(name, []).append(
                score(name, linear.fit(x_std, y).predict(x_std_test), y_test))
            for row, (constants, settings) in VARIANTS.items():
                with contextlib.ExitStack() as changed:
                    if constants:
                        changed.enter_context(mock.patch.multiple(recipe, **constants))
                    model = finetune.train("mlp", (x_raw, y), task=task, seed=seed, progress=False, **settings).model
                rows.setdefault(row, {}).setdefault(name, []).append(
                    score(name, finetune.predict(model, x_raw_test, task=task), y_test))
    print(f'### "mlp" from scratch, one tabular rule changed ({args.seeds} splits, {args.threads} thread(s))\n')
    print("| variant | " + " | ".join(SETS) + " |\n|---|" + "---|" * len(SETS))
    for row, by_set in rows.items():
        cells = [f"{statistics.mean(v):.3f} ± {statistics.pstdev(v):.3f}" for v in by_set.values()]
        print(f"| {row} | " + " | ".join(cells) + " |")
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


if __name__ == "__main__":
    main()
