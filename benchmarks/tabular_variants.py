"""What each tabular rule of recipe="auto" is worth: "mlp" from scratch on the built-in tabular sets, one choice changed at a time.

    python benchmarks/tabular_variants.py [--seeds 20] [--threads 1] [--rows TEXT ...] [--sets diabetes ...]

Iris, wine, breast cancer (test accuracy) and diabetes (test R², the target standardised on the training rows),
each seed its own stratified 80/20 split. "mlp" gets the features as scikit-learn ships them (raw units: it scales
its inputs itself, registry.robust_scaling); scikit-learn's logistic / linear regression gets them standardised
on the training rows, as a practitioner would give them. Each row changes one of finetune.recipe's tabular
constants, gives settings, or averages several MLPs. A second table gives each row's paired difference from the
linear models, split by split, in points with its standard error: a gap of a few tenths of a point is a fraction
of a test row, visible only over many splits (--seeds 100). recipe.py's and the README's tabular figures come
from these tables.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from unittest import mock

import numpy as np
import torch

import finetune
from finetune import datasets, recipe, registry

SETS = {"iris": "classification", "wine": "classification", "breast_cancer": "classification",
        "diabetes": "regression"}
NO_SCALING = {"center": [], "scale": [], "clip": 0.0}



@dataclass
class Row:
    constants: dict[str, Any] = field(default_factory=dict)  # finetune.recipe's constants, changed for this row
    settings: dict[str, Any] | Callable[[np.ndarray], dict[str, Any]] = field(default_factory=dict)  # or a
    # function of the split's raw training features, for settings read off them
    models: int = 1  # the predictions (class probabilities) of this many MLPs of seeds seed, seed + 1000, ... averaged
    target: Callable[[np.ndarray], np.ndarray] | None = None  # diabetes' target, train and test, in other units
    regression_only: bool = False  # a row that changes nothing a classification set runs (skipped there; so is
    # every row with a target)
    candidates: tuple[dict[str, Any], ...] = ()  # constants of runs of which the one with the lowest loss on its
    # validation slice (result.metrics, measured before the refit) is kept: the recipe's way of picking a phase


def standardised(x: np.ndarray) -> dict[str, Any]:
    """The input scaling set to plain standardisation on the training rows (mean, population std), unclipped."""
    mean, std = x.mean(0).astype(np.float64), x.std(0).astype(np.float64)
    std[std == 0] = 1
    return {"center": mean.tolist(), "scale": (1 / std).tolist(), "clip": 0.0}


def unclipped(x: np.ndarray) -> dict[str, Any]:
    """The model's own robust scaling without its smooth clip."""
    return {**registry.robust_scaling(torch.from_numpy(x)), "clip": 0.0}


def thousands(y: np.ndarray) -> np.ndarray:
    """The target in other units (R² does not change with them; a model that does is the units' hostage)."""
    return y * np.float32(1000.0) + np.float32(50_000.0)


VARIANTS = {
    "the recipe as it is": Row(),
    "no label smoothing": Row(settings={"label_smoothing": 0.0}),
    "the general rate rule (/ 10)": Row({"TABULAR_LR_DIVISOR": {"classification": 10.0, "regression": 10.0}}),
    "classification / 100": Row({"TABULAR_LR_DIVISOR": {"classification": 100.0, "regression": 300.0}}),
    "regression / 30": Row({"TABULAR_LR_DIVISOR": {"classification": 30.0, "regression": 30.0}}),
    "regression / 100": Row({"TABULAR_LR_DIVISOR": {"classification": 30.0, "regression": 100.0}}),
    "regression capped at 50 epochs, patience 8 (before TABULAR_REGRESSION_EPOCHS)": Row(
        {"TABULAR_REGRESSION_EPOCHS": 50, "TABULAR_REGRESSION_PATIENCE": 8}, regression_only=True),
    "regression capped at 1000 epochs": Row({"TABULAR_REGRESSION_EPOCHS": 1000}, regression_only=True),
    "regression at patience 8 (before TABULAR_REGRESSION_PATIENCE)": Row(
        {"TABULAR_REGRESSION_PATIENCE": 8}, regression_only=True),
    "regression without early stopping (the best epoch restored)": Row(
        {"TABULAR_REGRESSION_PATIENCE": 300}, regression_only=True),
    "hidden [256, 256, 256] (RealMLP's width)": Row(settings={"hidden": [256, 256, 256]}),
    "dropout 0.15 (RealMLP's)": Row(settings={"dropout": 0.15}),
    "no input scaling (raw features)": Row(settings=NO_SCALING),
    "inputs standardised, not robust-scaled": Row(settings=standardised),
    "robust scaling without its smooth clip": Row(settings=unclipped),
    "a weight average (ema=0.9)": Row(settings={"ema": 0.9}),
    "a weight average (ema=0.97)": Row(settings={"ema": 0.97}),
    "a weight average (ema=0.99)": Row(settings={"ema": 0.99}),
    "an average of 5 MLPs (5 seeds; 5x the time)": Row(models=5),
    "diabetes' target x 1000 + 50,000": Row(target=thousands),
    "diabetes' target x 1000 + 50,000, without the model's target scaling": Row(
        settings={"target_center": [], "target_scale": []}, target=thousands),
    "no linear model beside the layers (linear='none')": Row(settings={"linear": "none"}),
    "the linear model's share fixed at a half": Row({"LINEAR_SHARES": (0.5,)}),
    "the linear model's share chosen from 0 to 1": Row({"LINEAR_SHARES": tuple(i / 10 for i in range(11))}),
    "rates / 30 and / 100 (regression / 300 and / 1000), the lower slice loss kept": Row(candidates=(
        {"TABULAR_LR_DIVISOR": {"classification": 30.0, "regression": 300.0}},
        {"TABULAR_LR_DIVISOR": {"classification": 100.0, "regression": 1000.0}})),
}
LINEAR = "scikit-learn logistic / linear regression (standardised)"

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


def fit_predict(row: Row, name: str, task: str, seed: int, x: np.ndarray, y: np.ndarray,
                x_test: np.ndarray) -> np.ndarray:
    """The row's predictions on x_test: its MLP(s) trained on (x, y) with its constants and settings."""
    settings = row.settings(x) if callable(row.settings) else row.settings
    classification = task == "classification"
    if row.candidates:
        results = []
        for constants in row.candidates:
            with mock.patch.multiple(recipe, **constants):
                results.append(finetune.train("mlp", (x, y), task=task, seed=seed, progress=False, **settings))
        kept = min(results, key=lambda result: result.metrics["loss"])
        return finetune.predict(kept.model, x_test, task=task)
    outputs = []
    with mock.patch.multiple(recipe, **row.constants) if row.constants else contextlib.nullcontext():
        for k in range(row.models):
            model = finetune.train("mlp", (x, y), task=task, seed=seed + 1000 * k, progress=False, **settings).model
            outputs.append(finetune.predict(model, x_test, task=task,
                                            output="probabilities" if classification and row.models > 1 else None))
    if row.models == 1:
        return outputs[0]
    average = np.mean(outputs, axis=0)
    return average.argmax(1) if classification else average


def main() -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", nargs="*", help="only the rows whose name contains one of these (the linear "
                        "models always run: the paired table's reference)")
    parser.add_argument("--sets", nargs="*", choices=list(SETS), help="only these data sets (default: all four)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    unmatched = [text for text in args.rows or [] if not any(text in row for row in VARIANTS)]
    if unmatched:
        parser.error(f"--rows {unmatched} matches none of the rows: {list(VARIANTS)}")
    chosen = {row: v for row, v in VARIANTS.items() if not args.rows or any(text in row for text in args.rows)}
    start = time.perf_counter()
    rows: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, list[float]] = {}
    for name, task in SETS.items():
        if args.sets and name not in args.sets:
            continue
        for seed in range(args.seeds):
            x_raw, x_raw_test, x_std, x_std_test, y, y_test = split(name, seed)
            linear = LogisticRegression(max_iter=5000) if task == "classification" else LinearRegression()
            rows.setdefault(LINEAR, {}).setdefault(name, []).append(
                score(name, linear.fit(x_std, y).predict(x_std_test), y_test))
            for row, variant in chosen.items():
                if (variant.regression_only or variant.target is not None) and task != "regression":
                    continue
                units = variant.target or (lambda values: values)
                began = time.perf_counter()
                predicted = fit_predict(variant, name, task, seed, x_raw, units(y), x_raw_test)
                seconds.setdefault(row, []).append(time.perf_counter() - began)
                rows.setdefault(row, {}).setdefault(name, []).append(score(name, predicted, units(y_test)))
    print(f'### "mlp" from scratch, one tabular rule changed ({args.seeds} splits, {args.threads} thread(s))\n')
    print("| variant | " + " | ".join(SETS) + " | seconds a set |\n|---|" + "---|" * (len(SETS) + 1))
    for row, by_set in rows.items():
        cells = [f"{statistics.mean(by_set[n]):.3f} ± {statistics.pstdev(by_set[n]):.3f}" if n in by_set else ""
                 for n in SETS]
        spent = f"{statistics.mean(seconds[row]):.2f}" if row in seconds else ""
        print(f"| {row} | " + " | ".join(cells) + f" | {spent} |")
    print(f"\n### Paired against the linear models, split by split: mean difference in points (accuracy or R² x 100), "
          f"standard error in brackets\n")
    print("| variant | " + " | ".join(SETS) + " |\n|---|" + "---|" * len(SETS))
    for row, by_set in rows.items():
        if row != LINEAR:
            print(f"| {row} | " + " | ".join(paired(by_set[name], rows[LINEAR][name]) if name in by_set else ""
                                             for name in SETS) + " |")
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


def paired(values: list[float], reference: list[float]) -> str:
    """The mean of values - reference, in points, and its standard error (one split: no error)."""
    differences = [100 * (a - b) for a, b in zip(values, reference)]
    error = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else float("nan")
    return f"{statistics.mean(differences):+.2f} ({error:.2f})"

if __name__ == "__main__":
    main()
