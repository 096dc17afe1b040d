"""MiniLM fully fine-tuned with BERT's settings on one sample of the SetFit table: test accuracy after each epoch.

    python benchmarks/transformer_curve.py [--column 10%|64|16|8] [--seed 0] [--epochs 4] [--lr 5e-5] [--threads 2]

The evidence for the recipe's rule 10 (recipe.TRANSFORMER): AdamW at --lr, weight decay 0.01, batches of 16,
linear warm-up over 10% of the steps then linear decay over --epochs, every layer at one rate, from a new head,
on the sample benchmarks/setfit_side_by_side.py draws for --column and --seed (all of it: no slice held out);
validation on 1,000 of that benchmark's test snippets after each epoch (so slower than the training itself).
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import finetune
from finetune import datasets
from setfit_side_by_side import TEST_SIZE, draw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--column", default="10%", help="'10%%' (a stratified 10%%) or k examples per class")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    split = datasets.load("rotten-tomatoes", seed=args.seed)
    keep, _ = datasets.stratified_split(split.y_test, 1.0 - TEST_SIZE / len(split.y_test), args.seed)
    x_test, y_test = split.x_test[keep][:1000], split.y_test[keep][:1000]
    indices = (datasets.stratified_split(split.y_train, 0.9, args.seed)[0] if args.column == "10%"
               else draw(split.y_train, int(args.column), args.seed))
    start = time.perf_counter()
    # normalize=False, layers=1: the raw mean of the last layer, as the README's table was measured
    result = finetune.train("minilm", (split.x_train[indices], split.y_train[indices]), val=(x_test, y_test),
                            normalize=False, layers=1, recipe="none", seed=args.seed, progress=False, optimizer="adamw",
                            lr=args.lr, weight_decay=0.01, batch_size=16, schedule="linear", warmup=0.1,
                            epochs=args.epochs)
    print(f"{args.column}, seed {args.seed}, {len(indices)} snippets, {args.epochs} epochs at {args.lr:g} "
          f"({time.perf_counter() - start:.0f} s with the validation)")
    print("test accuracy by epoch: " + ", ".join(f"{h['val_accuracy']:.3f}" for h in result.history))
    print("test loss by epoch:     " + ", ".join(f"{h['val_loss']:.3f}" for h in result.history))


if __name__ == "__main__":
    main()
