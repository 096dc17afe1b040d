"""Sampling a fraction of the training set: stratified shares within one example, seeded, reshuffled per epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finetune import _C
from finetune.config import TrainConfig


def imbalanced_labels(seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    counts = [500, 120, 37, 9, 3, 1, 230]
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return torch.from_numpy(rng.permutation(labels))


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.5, 0.9])
def test_stratified_shares_within_one_and_no_class_dropped(fraction):
    y = imbalanced_labels()
    idx = _C.sample_indices(y, TrainConfig(sample_fraction=fraction).to_cpp())
    assert len(set(idx.tolist())) == len(idx)  # no repeats
    sampled = torch.bincount(y[idx], minlength=7).numpy()
    full = torch.bincount(y).numpy()
    exact = full * round(fraction * len(y)) / len(y)
    assert (sampled >= 1).all(), sampled
    # floor or ceil of the exact share; a class whose share rounds to zero still gets one example
    assert np.all((np.abs(sampled - exact) < 1) | (sampled == 1)), (sampled, exact)

def test_sample_size_is_exact_and_counts_reported():
    y = imbalanced_labels()
    idx = _C.sample_indices(y, TrainConfig(sample_size=200).to_cpp())
    assert len(idx) == 200
    assert _C.class_counts(y, idx) == torch.bincount(y[idx]).tolist()


def test_tiny_sample_keeps_every_class():
    y = imbalanced_labels()  # 7 classes, the smallest with a single example
    idx = _C.sample_indices(y, TrainConfig(sample_size=3).to_cpp())
    assert sorted(set(y[idx].tolist())) == list(range(7))


def test_sampling_is_seeded():
    y = imbalanced_labels()
    a = _C.sample_indices(y, TrainConfig(sample_fraction=0.3, seed=1).to_cpp())
    b = _C.sample_indices(y, TrainConfig(sample_fraction=0.3, seed=1).to_cpp())
    c = _C.sample_indices(y, TrainConfig(sample_fraction=0.3, seed=2).to_cpp())
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_unstratified_sample_has_requested_size():
    y = imbalanced_labels()
    idx = _C.sample_indices(y, TrainConfig(sample_fraction=0.2, stratify=False).to_cpp())
    assert len(idx) == round(0.2 * len(y))


def test_full_fraction_keeps_everything_in_order():
    y = imbalanced_labels()
    assert torch.equal(_C.sample_indices(y, TrainConfig().to_cpp()), torch.arange(len(y)))


def test_each_epoch_is_a_new_seeded_permutation():
    subset = torch.arange(100) * 3
    e0, e1 = _C.epoch_order(subset, 0, 0), _C.epoch_order(subset, 0, 1)
    assert sorted(e0.tolist()) == subset.tolist() and sorted(e1.tolist()) == subset.tolist()
    assert not torch.equal(e0, e1)
    assert torch.equal(e0, _C.epoch_order(subset, 0, 0))
    assert torch.equal(_C.epoch_order(subset, 0, 0, shuffle=False), subset)
