"""`finetune demo`: the article's story on scikit-learn's digits, from Python.

A CNN is pretrained on the digits 0-4 only, then fine-tuned with SGD on a stratified sample of all ten
digits; held-out accuracy is printed before and after, beside the same CNN trained from scratch on the
same sample.
"""

from __future__ import annotations

import time

import numpy as np

import finetune


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


def run_demo(fraction: float = 0.2, epochs: int = 20, seed: int = 0, progress: bool = True) -> dict[str, float]:
    start = time.perf_counter()
    x_train, x_test, y_train, y_test = load_digits_split(seed)
    print(f"digits: {len(x_train)} training and {len(x_test)} held-out images (8x8, 10 classes)")
    common = dict(optimizer="sgd", lr=0.05, momentum=0.9, batch_size=32, seed=seed, progress=progress)

    old = y_train < 5
    pretrained = finetune.train("cnn", (x_train[old], y_train[old]), epochs=10, num_classes=10, **common)
    print(f"pretrained a CNN on digits 0-4 only ({int(old.sum())} images)")
    before = finetune.evaluate(pretrained.model, (x_test, y_test))["accuracy"]

    tuned = finetune.train(pretrained.model, (x_train, y_train), val=(x_test, y_test), epochs=epochs,
                           sample_fraction=fraction, stratify=True, **common)
    counts = " ".join(f"{c}:{n}" for c, n in tuned.class_counts.items())
    print(f"fine-tuned on a stratified {fraction:.0%} sample ({tuned.train_size} images), class counts {counts}")
    speed = np.median([h["samples_per_s"] for h in tuned.history])

    scratch = finetune.train("cnn", (x_train, y_train), val=(x_test, y_test), epochs=epochs,
                             sample_fraction=fraction, stratify=True, **{**common, "progress": False})
    after, from_scratch = tuned.metrics["accuracy"], scratch.metrics["accuracy"]
    print(f"held-out accuracy: before fine-tuning {before:.4f}, after {after:.4f} "
          f"(from scratch on the same sample: {from_scratch:.4f})")
    print(f"fine-tune speed: {speed:,.0f} samples/s (median over epochs); demo took {time.perf_counter() - start:.1f} s")
    return {"before": before, "after": after, "from_scratch": from_scratch, "samples_per_s": float(speed)}
