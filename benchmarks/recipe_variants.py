"""What each choice of recipe="auto" is worth: the digits story's fine-tune with one choice changed at a time.

    python benchmarks/recipe_variants.py [--seeds 16] [--threads 1] [--rows TEXT ...]

A CNN pretrained on digits 0-4 is adapted to all ten on a stratified 20% sample (the demo's story; each seed its
own split, pretraining and sample), with finetune's defaults and with one of the recipe's numbers changed
(finetune.recipe's constants, set here for one row) or one setting given. Held-out accuracy, mean ± std. The
README's "The recipe" quotes this table. The tabular rules: benchmarks/tabular_variants.py.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from unittest import mock

import torch

import finetune
from finetune import heads, recipe
from finetune.demo import load_digits_split
from mirrors import as_python


def no_head(*args, **kwargs):
    raise ValueError("the head phase is left out for this row")


def steepest_rate(lrs, losses, divisor=None):
    """fastai's former suggestion, as finetune.find_lr's `steepest`: the rate where the smoothed loss falls fastest
    against log(lr), the noisy ends skipped (csrc/lr_finder.cpp's steepest_descent), taken as the rate itself."""
    n = len(losses)
    skip_start, skip_end = min(n // 10, 10), min(n // 20 + 1, 5)
    slopes = {i: (losses[i] - losses[i - 1]) / math.log(lrs[i] / lrs[i - 1]) for i in range(skip_start + 1, n - skip_end)}
    return lrs[min(slopes, key=slopes.get)] if slopes else lrs[n // 2]


SCRATCH = {"from scratch": True}  # the row of the same CNN trained from scratch on the same sample, for reference
AS_PYTHON = {"as a Python module": True}  # the row of the pretrained CNN copied into an nn.Module

# row -> (recipe constants changed, settings given, patches)
VARIANTS = {
    "the same CNN from scratch (recipe='auto')": ({}, SCRATCH, {}),
    "from scratch, rate = lowest loss / 10 (the rule before)": ({"SCRATCH_LR_DIVISOR": 10.0}, SCRATCH, {}),
    "from scratch, rate = lowest loss / 30": ({"SCRATCH_LR_DIVISOR": 30.0}, SCRATCH, {}),
    "from scratch, patience 16 of 100 epochs": ({"SCRATCH_PATIENCE": 16, "SCRATCH_EPOCHS": 100}, SCRATCH, {}),
    "from scratch, patience 4 of 25 epochs": ({"SCRATCH_PATIENCE": 4, "SCRATCH_EPOCHS": 25}, SCRATCH, {}),
    "the recipe as it is": ({}, {}, {}),
    "no head phase": ({}, {}, {"find_head": no_head}),
    "no phase scratch (the recipe before it)": ({"SCRATCH_CANDIDATE": False}, {}, {}),
    "phase scratch kept by the lower validation loss alone (no paired test)": ({"SCRATCH_Z": 0.0}, {}, {}),
    "no phase shrunk (the recipe before it)": ({"SHRINK_MAX_PARAMS": 0}, {}, {}),
    "phase full kept over shrunk by the lower validation loss alone (no paired test; the rule before)":
        ({"FULL_Z": 0.0}, {}, {}),
    "shrunk: x 0.3, noise 0.1": ({"SHRINK": 0.3}, {}, {}),
    "shrunk: x 0.7, noise 0.1": ({"SHRINK": 0.7}, {}, {}),
    "shrunk: x 0.5, noise 0.3": ({"PERTURB": 0.3}, {}, {}),
    "shrunk: x 0.5, noise 0.03": ({"PERTURB": 0.03}, {}, {}),
    "shrunk at / 10 alone (the recipe before shrunk_low)": ({"SHRUNK_LR_DIVISORS": (10.0,)}, {}, {}),
    "shrunk at / 100 alone": ({"SHRUNK_LR_DIVISORS": (100.0,)}, {}, {}),
    "shrunk_low always (the recipe before its gate)": ({"SHRUNK_LOW_GATE": 1.0}, {}, {}),
    "shrunk_low gated at a quarter of the schedule (10 of 40; the gate before)": ({"SHRUNK_LOW_GATE": 0.25}, {}, {}),
    "AdamW instead of SGD (the recipe before)": ({"FINE_TUNE_SGD": False}, {}, {}),
    # finetune's "cnn" runs natively, where no hook sees its head's input, so its head phase trains in the loop.
    "the same CNN as a Python module (its head phase: the linear probe)": ({}, AS_PYTHON, {}),
    "no layer decay": ({"LAYER_DECAY": 1.0}, {}, {}),
    "layer decay 0.5": ({"LAYER_DECAY": 0.5}, {}, {}),
    "rate = lowest loss / 3": ({"LR_DIVISOR": 3.0}, {}, {}),
    "rate = lowest loss / 30": ({"LR_DIVISOR": 30.0}, {}, {}),
    "rate = the steepest descent (fastai's former suggestion)": ({"lr_from_range": steepest_rate}, {}, {}),
    "flat curve: within 10% (FLAT_TOLERANCE 0.10)": ({"FLAT_TOLERANCE": 0.10}, {}, {}),
    "flat curve: against the first compared step, not the noise floor (the rule before)":
        ({"FLAT_FLOOR_STEPS": 1}, {}, {}),
    "full phase: patience 12 of 60 epochs": ({"FULL_PATIENCE": 12, "FULL_EPOCHS": 60}, {}, {}),
    "head phase: patience 6 of 40 epochs": ({"HEAD_PATIENCE": 6, "HEAD_EPOCHS": 40}, {}, {}),
    "head phase: patience 1 of 10 epochs": ({"HEAD_PATIENCE": 1, "HEAD_EPOCHS": 10}, {}, {}),
    "a 30% validation slice": ({"VAL_FRACTION": 0.3}, {}, {}),
    "no refit": ({"REFIT": False}, {}, {}),
    "phases compared by the loss at the best temperature (a transformer's rule)":
        ({"CALIBRATED_FAMILIES": ("default",)}, {}, {}),
}


def fine_tune(seed: int, settings: dict) -> float:
    x_train, x_test, y_train, y_test = load_digits_split(seed)
    if settings == SCRATCH:
        scratch = finetune.train("cnn", (x_train, y_train), sample_fraction=0.2, seed=seed, progress=False)
        return finetune.evaluate(scratch.model, (x_test, y_test))["accuracy"]
    old = y_train < 5
    pretrained = finetune.train("cnn", (x_train[old], y_train[old]), epochs=10, num_classes=10, optimizer="sgd",
                                lr=0.05, batch_size=32, seed=seed, progress=False).model
    if settings == AS_PYTHON:
        pretrained, settings = as_python(pretrained, x_test), {}
    tuned = finetune.train(pretrained, (x_train, y_train), sample_fraction=0.2, seed=seed, progress=False, **settings)
    return finetune.evaluate(tuned.model, (x_test, y_test))["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)  # a fine-tune and scratch differ by ~0.02 on one seed
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", nargs="*", help="only the rows whose name contains one of these (the first, "
                        "scratch, always runs: the reference of the last column)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    print(f"### The digits story's fine-tune, one choice changed ({args.seeds} seeds, {args.threads} thread(s))\n")
    print("| variant | held-out accuracy | seeds above scratch |\n|---|---|---|")
    scratch: list[float] = []
    for number, (name, (constants, settings, patches)) in enumerate(VARIANTS.items()):
        if number and args.rows and not any(text in name for text in args.rows):
            continue
        with contextlib.ExitStack() as changed:
            if constants:
                changed.enter_context(mock.patch.multiple(recipe, **constants))
            if patches:
                changed.enter_context(mock.patch.multiple(heads, **patches))
            accuracies = [fine_tune(seed, settings) for seed in range(args.seeds)]
        above = "" if settings == SCRATCH else f"{sum(a > b for a, b in zip(accuracies, scratch))} of {args.seeds}"
        scratch = accuracies if settings == SCRATCH and not scratch else scratch  # the first row: the reference
        print(f"| {name} | {statistics.mean(accuracies):.3f} ± {statistics.pstdev(accuracies):.3f} | {above} |",
              flush=True)
    print(f"\nTook {time.perf_counter() - start:.0f} s on {args.threads} thread(s).")


if __name__ == "__main__":
    main()
