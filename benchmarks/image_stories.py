"""The recipe's test accuracy on the image stories, as it is and with its constants changed: what a rule is worth
beyond the digits story recipe_variants.py measures it on.

    python benchmarks/image_stories.py --story fashion-mnist5k --seeds 3 --threads 1 [--set FINE_TUNE_SGD=False]

Stories: scratch_candidate.py's (the digits story, Fashion-MNIST 10% from digit-recognizer's MNIST CNN or from the
CNN pretrained on MNIST-5k, fastai's two). Each --set NAME=VALUE changes one of finetune.recipe's constants for the
run (VALUE read as a Python literal); with several, the rows are the recipe as it is and the recipe with all of them.
Prints each seed's accuracy and the phase kept, then mean ± sample std and the change's paired gain over the seeds.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import statistics
import time
from unittest import mock

import torch

import finetune
from finetune import recipe
from scratch_candidate import STORIES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--story", choices=list(STORIES), default="fashion-mnist5k")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE", help="recipe constants changed")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    changed = {}
    for item in args.set:
        name, _, value = item.partition("=")
        if not hasattr(recipe, name):
            parser.error(f"--set: finetune.recipe has no constant {name!r}")
        changed[name] = ast.literal_eval(value)
    rows = {"the recipe as it is": {}} | ({", ".join(args.set): changed} if changed else {})
    accuracies: dict[str, list[float]] = {row: [] for row in rows}
    for seed in range(args.seeds):
        start, _, options, train, test, fraction = STORIES[args.story](seed)
        state = copy.deepcopy(start.state_dict()) if hasattr(start, "state_dict") else None
        for row, constants in rows.items():
            if state is not None:
                start.load_state_dict(state)  # each row fine-tunes the same pretrained weights
            began = time.perf_counter()
            with mock.patch.multiple(recipe, **constants) if constants else contextlib.nullcontext():
                result = finetune.train(start, train, sample_fraction=fraction, seed=seed, progress=False, **options)
            kept = next(d["value"] for d in result.recipe if d["what"] == "kept")
            accuracies[row].append(finetune.evaluate(result.model, test)["accuracy"])
            print(f"seed {seed}, {row}: {accuracies[row][-1]:.4f} (kept {kept}, {time.perf_counter() - began:.0f} s)",
                  flush=True)
    for row, values in accuracies.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{row}: {statistics.mean(values):.4f} ± {spread:.4f} ({args.seeds} seeds)")
    if changed and args.seeds > 1:  # the same seeds, so the rows pair up: the change's gain, seed by seed
        gains = [b - a for a, b in zip(*accuracies.values())]
        error = statistics.stdev(gains) / len(gains) ** 0.5
        print(f"the change minus the recipe: {100 * statistics.mean(gains):+.2f} points (paired standard error "
              f"{100 * error:.2f}), ahead on {sum(g > 0 for g in gains)} seeds, behind on {sum(g < 0 for g in gains)}")


if __name__ == "__main__":
    main()
