"""Shared fixtures: scikit-learn's digits (real data that installs with the test extra)."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(X_train, y_train, X_test, y_test): 64 features in [0, 1], a stratified 70/30 split."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    from sklearn.model_selection import train_test_split

    d = sklearn_datasets.load_digits()
    x = (d.data / 16.0).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(x, d.target, test_size=0.3, stratify=d.target, random_state=0)
    return x_train, y_train, x_test, y_test


@pytest.fixture(autouse=True)
def _seed_torch() -> None:
    """Every test starts from the same torch RNG state (initial weights, dropout), whatever ran before it."""
    torch.manual_seed(0)

