"""`finetune demo`: the article's story on scikit-learn's digits, from Python.

A CNN is pretrained on the digits 0-4 only, then fine-tuned with finetune's defaults (recipe="auto") on a
stratified sample of all ten digits; held-out accuracy is printed before and after, beside the same CNN
trained from scratch (also with the defaults) on the same sample, for several seeds.
"""

from __future__ import annotations

import time

import numpy as np

import finetune
from finetune import recipe


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits as (N, 1, 8, 8) float32 in [0, 1], split 70/30 with each class's share kept."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise SystemExit("finetune demo needs scikit-learn: pip install 'finetune[demo]'") from None
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    return train_test_split(x, digits.target, test_size=0.3, stratify=digits.target, random_state=seed)


def recipe_line(result: finetune.Result) -> str:
    """The recipe's decisions in one line: each phase's rate, epochs and validation loss (phase scratch's with the
    paired test's z it is kept by, README rule 3), the phase kept (a shrunk phase kept over full's lower loss with
    that test's z, rule 5)."""
    found = {d["what"]: d["value"] for d in result.recipe}
    phases = [f"head as a linear probe (C {found['head.C']:.2g})"] if "head.C" in found else []
    phases += [f"{name} at lr {found[name + '.lr']:.1e} ({found[name + '.result']['best_epoch'] + 1} epochs best, "
               f"validation loss {found[name + '.result']['val_loss']:.4f}"
               + (f", z {found[name + '.gain']['z']:.2f}" if name + ".gain" in found else "") + ")"
               for name in ("head", "full", "shrunk", "shrunk_low", "scratch") if name + ".lr" in found]
    kept = found["kept"]
    gain = found.get(f"{kept}.full_gain")  # rule 5: a shrunk phase takes full's place unless full is clearly better
    over = (f" over full's lower loss (z {gain['z']:.2f}, not clearly)"
            if gain and gain["lower_by"] > 0 and not gain["z"] >= recipe.FULL_Z else "")
    return f"{', '.join(phases)}; kept: {kept}{over}" + ("; refit on the whole sample" if "refit" in found else "")


def run_demo(fraction: float = 0.2, seeds: int = 5, progress: bool = False) -> dict[str, float]:
    """The story over ``seeds`` seeds (each its own split, pretraining and sample). Fine-tune and scratch both run
    finetune's defaults: recipe="auto" (finetune.recipe), nothing hand-picked."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be an int of at least 1, got {seeds!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    start = time.perf_counter()
    rows = []
    for seed in range(seeds):
        x_train, x_test, y_train, y_test = load_digits_split(seed)
        if seed == 0:
            print(f"digits: {len(x_train)} training and {len(x_test)} held-out images (8x8, 10 classes), "
                  f"{seeds} seed{'s' if seeds > 1 else ''} (each its own split)")
        old = y_train < 5
        # The "pretrained model": trained on the digits 0-4 only, with plain settings.
        pretrained = finetune.train("cnn", (x_train[old], y_train[old]), epochs=10, num_classes=10, optimizer="sgd",
                                    lr=0.05, batch_size=32, seed=seed, progress=False, recipe="none").model
        before = finetune.evaluate(pretrained, (x_test, y_test))["accuracy"]
        tuned = finetune.train(pretrained, (x_train, y_train), sample_fraction=fraction, seed=seed, progress=progress)
        scratch = finetune.train("cnn", (x_train, y_train), sample_fraction=fraction, seed=seed, progress=False)
        row = {"before": before, "after": finetune.evaluate(tuned.model, (x_test, y_test))["accuracy"],
               "from_scratch": finetune.evaluate(scratch.model, (x_test, y_test))["accuracy"]}
        print(f"seed {seed}: pretrained on 0-4 {row['before']:.4f}, fine-tuned on a stratified {fraction:.0%} "
              f"sample ({len(tuned.sample_indices)} images) {row['after']:.4f}, from scratch {row['from_scratch']:.4f}"
              f" | recipe: {recipe_line(tuned)}")
        rows.append(row)
    summary = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    spread = {k: float(np.std([r[k] for r in rows])) for k in rows[0]}
    print(f"held-out accuracy over {seeds} seed{'s' if seeds > 1 else ''}: "
          f"before fine-tuning {summary['before']:.4f} ± {spread['before']:.4f}, "
          f"after {summary['after']:.4f} ± {spread['after']:.4f} (from scratch on the same samples: "
          f"{summary['from_scratch']:.4f} ± {spread['from_scratch']:.4f})")
    print(f"demo took {time.perf_counter() - start:.1f} s")
    return {**summary, **{k + "_std": v for k, v in spread.items()}}
