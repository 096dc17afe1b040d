"""evaluate()'s metrics against scikit-learn's on the same predictions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import finetune

metrics = pytest.importorskip("sklearn.metrics")


@pytest.fixture(scope="module")
def trained(digits):
    x, y, x_test, y_test = digits
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 10))
    # a short, weak fine-tune so that there are errors to count
    finetune.train(model, (x, y), epochs=1, lr=0.05, momentum=0.0, progress=False)
    return model, x_test, y_test


def test_classification_metrics_match_sklearn(trained):
    model, x, y = trained
    ours = finetune.evaluate(model, (x, y), topk=3)
    probs = finetune.predict(model, x, output="probabilities")
    pred = probs.argmax(1)
    assert 0.2 < ours["accuracy"] < 0.99  # a model that makes mistakes, so the metrics mean something
    assert ours["accuracy"] == pytest.approx(metrics.accuracy_score(y, pred), abs=1e-12)
    assert ours["macro_f1"] == pytest.approx(metrics.f1_score(y, pred, average="macro"), abs=1e-12)
    assert ours["balanced_accuracy"] == pytest.approx(metrics.balanced_accuracy_score(y, pred), abs=1e-12)
    assert ours["top3_accuracy"] == pytest.approx(metrics.top_k_accuracy_score(y, probs, k=3), abs=1e-12)
    assert ours["loss"] == pytest.approx(metrics.log_loss(y, probs, labels=range(10)), rel=1e-6)
    np.testing.assert_array_equal(ours["confusion_matrix"], metrics.confusion_matrix(y, pred, labels=range(10)))


def test_top_k_accuracy_is_left_out_where_k_reaches_the_number_of_classes(digits):
    """Two classes and k=5 (or k=2): every example is in its top k, a 1.0 that measures nothing."""
    x, y, _, _ = digits
    binary = torch.nn.Linear(64, 2)
    two = (y % 2).astype(np.int64)
    assert not any(k.startswith("top") for k in finetune.evaluate(binary, (x, two)))
    assert not any(k.startswith("top") for k in finetune.evaluate(binary, (x, two), topk=2))
    assert "top1_accuracy" in finetune.evaluate(binary, (x, two), topk=1)
    with pytest.raises(ValueError, match=r"got 'val_top5_accuracy' \(top-k accuracy is reported only for k below "):
        finetune.train(binary, (x, two), val=(x, two), epochs=1, monitor="val_top5_accuracy", progress=False)


def test_macro_f1_leaves_out_classes_never_seen_like_sklearn(trained):
    model, x, y = trained
    keep = y < 4  # targets of 4 classes only; predictions may name others
    ours = finetune.evaluate(model, (x[keep], y[keep]))
    pred = finetune.predict(model, x[keep])
    assert ours["macro_f1"] == pytest.approx(metrics.f1_score(y[keep], pred, average="macro"), abs=1e-12)
    with warnings.catch_warnings():  # scikit-learn warns of the predicted classes the targets lack, and leaves them out
        warnings.simplefilter("ignore")
        expected = metrics.balanced_accuracy_score(y[keep], pred)
    assert ours["balanced_accuracy"] == pytest.approx(expected, abs=1e-12)


def test_regression_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x.sum(1) + rng.normal(size=300)).astype(np.float32)
    model = torch.nn.Linear(4, 1)
    ours = finetune.evaluate(model, (x, y), task="regression")
    pred = finetune.predict(model, x, task="regression").ravel()
    assert ours["rmse"] == pytest.approx(metrics.mean_squared_error(y, pred) ** 0.5, rel=1e-6)
    assert ours["mae"] == pytest.approx(metrics.mean_absolute_error(y, pred), rel=1e-6)
    assert ours["r2"] == pytest.approx(metrics.r2_score(y, pred), rel=1e-6)
    assert ours["loss"] == pytest.approx(metrics.mean_squared_error(y, pred), rel=1e-6)
