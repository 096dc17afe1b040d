"""The linear probe: a linear head fit to convergence on features computed once, its L2 strength by cross-validation.

On frozen features, training a linear head is a convex problem -- L2-regularised (multinomial) logistic
regression -- so it has one best answer for each regularisation strength, found by L-BFGS in tens of
milliseconds, as scikit-learn's ``LogisticRegression`` finds it (and Kumar et al. 2022's linear probe). The
strength is what matters, and it is chosen by stratified k-fold cross-validation on the training examples:
every example serves both to fit and to judge, where a carved validation slice of a few examples judges
noisily. Measured on MiniLM's features of Rotten Tomatoes (README, "The recipe", rule 3). A regression head is
ridge regression, solved exactly (``fit_ridge``), its strength chosen the same way over random folds.
"""

from __future__ import annotations

from typing import Any

import torch

from . import _C

# Strengths tried: C (scikit-learn's inverse strength: the penalty is |W|^2 / (2 C) beside the summed loss) from
# 1e-3 to 1e3 in half decades. Chosen on MiniLM features, Rotten Tomatoes, seeds 0-3: C 1e-3 to 1e2 were picked.
STRENGTHS = tuple(10.0 ** (e / 2) for e in range(-6, 7))
FOLDS = 5
# The sweep walks from the strongest penalty to the weakest (each fit starting from the last, as glmnet walks its
# path) and stops once this many strengths in a row held out worse than the best so far: the held-out loss of an
# L2-regularised fit falls then rises with C, and the weak end is the costly one (nearly separable data needs
# hundreds of iterations there: MiniLM's four-layer features of 9,222 snippets, C 10 to 1000 took 500 each).
SWEEP_PATIENCE = 2
# L-BFGS's stopping rule, on the gradient's largest entry: 100x tighter than scikit-learn's default (tol=1e-4, its
# lbfgs gtol on the same mean objective), so that the fit matches a scikit-learn reference solved tightly (tests).
# On the digits story's CNN features the folds' weak strengths (C >= 1) stop at MAX_ITERATIONS instead; at 1e-4
# they converge in 30-240 iterations and the probe takes half the time, its accuracy within the seeds' noise
# (fastai_side_by_side.py's CNN, digits seeds 0-4: 0.942 +- 0.025 at 1e-4, 0.952 +- 0.019 here; MNIST-5k seeds
# 0-2: 0.947 +- 0.009, 0.946 +- 0.006) -- one seed's fine-tune moved by 6 points either way, so not adopted.
TOLERANCE = 1e-6
MAX_ITERATIONS = 500


def objective(layer_weight: torch.Tensor, bias: torch.Tensor, features: torch.Tensor, targets: torch.Tensor,
              strength: float, class_weights: torch.Tensor | None, label_smoothing: float) -> torch.Tensor:
    """The mean (class-weighted) cross-entropy plus |W|^2 / (2 C n): scikit-learn's objective divided by n."""
    n = features.shape[0]
    losses = torch.nn.functional.cross_entropy(torch.addmm(bias, features, layer_weight.t()), targets,
                                               reduction="none", label_smoothing=label_smoothing)
    if class_weights is not None:
        losses = losses * class_weights[targets]
    return losses.sum() / n + layer_weight.pow(2).sum() / (2.0 * strength * n)


def fit(features: torch.Tensor, targets: torch.Tensor, classes: int, strength: float,
        class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0,
        start: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(weight [classes, features], bias [classes], L-BFGS iterations) minimising ``objective``, in float64 (a
    convex problem solved to its tolerance; the bias is not penalised, as in scikit-learn)."""
    members = torch.ones(1, features.shape[0], dtype=torch.bool, device=features.device)
    start = None if start is None else (start[0][None], start[1][None])
    weight, bias, iterations = fit_subsets(features, targets, members, classes, strength, class_weights,
                                           label_smoothing, start)
    return weight[0], bias[0], iterations


def fit_subsets(features: torch.Tensor, targets: torch.Tensor, members: torch.Tensor, classes: int, strength: float,
                class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0,
                start: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``fit`` on each subset of the examples at once: ``members`` [subsets, examples] says which examples each fit
    sees; returns (weight [subsets, classes, features], bias [subsets, classes], iterations). The subsets' objectives
    are independent, so L-BFGS on their sum stops only when every subset's gradient is within the tolerance: each
    answer is its own fit's, to the tolerance (where MAX_ITERATIONS reaches it: the subsets share that budget).
    One solver for the cross-validation's folds instead of one per fold: its cost was Python's per step, not the
    arithmetic (the digits story's CNN features: the probe's 41 s became 20 s); the solver is now C++'s
    (csrc/probe.cpp: torch::optim::LBFGS, the same algorithm as torch.optim.LBFGS)."""
    return _C.fit_probe(features, targets, members, classes, strength, class_weights, label_smoothing,
                        *(start or (None, None)), MAX_ITERATIONS, TOLERANCE)


def folds(targets: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Each example's fold (0..count-1): each class's examples in a seeded order, dealt round-robin, so every fold
    holds each class in proportion (a class with fewer examples than folds is missing from some)."""
    generator = torch.Generator().manual_seed(int(seed))
    fold = torch.empty_like(targets)
    for label in torch.unique(targets):
        members = torch.nonzero(targets == label).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        fold[members] = torch.arange(len(members)) % count
    return fold


def choose_strength(features: torch.Tensor, targets: torch.Tensor, classes: int, seed: int,
                    class_weights: torch.Tensor | None = None,
                    label_smoothing: float = 0.0) -> tuple[float, dict[float, float]]:
    """(the strength C of ``STRENGTHS`` with the lowest mean held-out loss over stratified folds, each strength's
    loss). The held-out loss is the fit's cross-entropy (class-weighted when the fit is), without the penalty.
    Folds: ``FOLDS``, fewer when the smallest class has fewer examples (at least 2). The strengths are tried from
    the strongest penalty until ``SWEEP_PATIENCE`` in a row did worse than the best: the losses hold those tried."""
    smallest = int(torch.bincount(targets).masked_select(torch.bincount(targets) > 0).min())
    count = max(2, min(FOLDS, smallest))
    fold = folds(targets, count, seed)
    x = features.to(torch.float64)
    weights = None if class_weights is None else class_weights.to(torch.float64)
    losses: dict[float, float] = {}
    inside = torch.stack([fold != k for k in range(count)])  # the folds fit together (fit_subsets)
    held = ~inside
    start = None  # each strength starts from the previous (stronger) one's answers: fewer iterations
    best, worse = None, 0
    for strength in STRENGTHS:
        weight, bias, _ = fit_subsets(x, targets, inside, classes, strength, weights, label_smoothing, start)
        start = (weight, bias)
        losses[strength] = sum(float(objective(weight[k], bias[k], x[held[k]], targets[held[k]], float("inf"),
                                               weights, label_smoothing)) for k in range(count)) / count
        if best is None or losses[strength] < losses[best]:
            best, worse = strength, 0
        elif losses[strength] > losses[best]:  # a tie (a fit already converged from its start) is not worse
            worse += 1
        if worse == SWEEP_PATIENCE:
            break
    return best, losses


def fit_layer(layer: torch.nn.Linear, features: torch.Tensor, targets: torch.Tensor, strength: float,
              class_weights: torch.Tensor | None = None, label_smoothing: float = 0.0) -> dict[str, Any]:
    """Fits ``layer`` (an ``nn.Linear`` mapping the features to the classes' scores) in place; returns the
    iterations and the training loss reached."""
    weight, bias, iterations = fit(features, targets, layer.out_features, strength, class_weights, label_smoothing)
    with torch.no_grad():
        layer.weight.copy_(weight.to(layer.weight.device, layer.weight.dtype))
        if layer.bias is not None:
            layer.bias.copy_(bias.to(layer.bias.device, layer.bias.dtype))
    with torch.no_grad():  # the loss as the loop reports it: the (class-weighted) mean cross-entropy
        logits = torch.addmm(bias, features.to(torch.float64), weight.t())
        loss = torch.nn.functional.cross_entropy(
            logits, targets, weight=None if class_weights is None else class_weights.to(torch.float64),
            label_smoothing=label_smoothing)
    if not torch.isfinite(loss):
        raise ValueError(f"the linear probe's loss is {float(loss)}: the features hold values that are not finite")
    return {"iterations": iterations, "loss": float(loss)}


# Ridge strengths: alpha (scikit-learn's Ridge: |y - X W - b|^2 + alpha |W|^2, the intercept not penalised) as
# multiples of the centred features' mean eigenvalue (trace(Xc' Xc) / features), so that one grid serves features of
# any scale: 1e-4 (least squares, nearly) to 1e4 (every direction shrunk to nothing: the training mean, a model that
# never scores below R^2 = 0 by much) in half decades. A head fit in the loop at a range-tested rate did: MiniLM on
# movie titles' ratings, the range test's lowest loss at its top rate, the head at 1.0, validation R^2 -0.34.
RIDGE_STRENGTHS = tuple(10.0 ** (e / 2) for e in range(-8, 9))


def _decomposed(features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The centred least-squares problem of ``features`` and ``targets`` in float64, decomposed once for every
    strength: (x_mean, y_mean, singular values s, right singular vectors vh, U' y)."""
    x = features.flatten(1).to(torch.float64)
    y = targets.to(torch.float64).reshape(x.shape[0], -1)
    x_mean, y_mean = x.mean(0), y.mean(0)
    u, s, vh = torch.linalg.svd(x - x_mean, full_matrices=False)
    return x_mean, y_mean, s, vh, u.T @ (y - y_mean)


def _ridge(decomposed: tuple[torch.Tensor, ...], alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [outputs, features], bias [outputs]) of ridge regression at ``alpha`` from ``_decomposed``."""
    x_mean, y_mean, s, vh, projected = decomposed
    weight = vh.T @ (projected * (s / (s.square() + alpha))[:, None])  # [features, outputs]
    return weight.T, y_mean - x_mean @ weight


def fit_ridge(features: torch.Tensor, targets: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [outputs, features], bias [outputs]) of ridge regression at ``alpha`` (``RIDGE_STRENGTHS``' scale:
    absolute here), in float64: scikit-learn's ``Ridge(alpha)`` on centred data, solved by one SVD."""
    return _ridge(_decomposed(features, targets), alpha)


def ridge_scale(features: torch.Tensor) -> float:
    """The centred features' mean eigenvalue, trace(Xc' Xc) / features: what RIDGE_STRENGTHS multiply."""
    x = features.flatten(1).to(torch.float64)
    scale = float((x - x.mean(0)).square().sum()) / x.shape[1]
    return max(scale, torch.finfo(torch.float64).tiny)  # constant features: a strength > 0 still (0 / 0 else)


def random_folds(examples: int, count: int, seed: int) -> torch.Tensor:
    """Each example's fold (0..count-1): the examples in a seeded order, dealt round-robin."""
    fold = torch.empty(examples, dtype=torch.int64)
    fold[torch.randperm(examples, generator=torch.Generator().manual_seed(int(seed)))] = torch.arange(examples) % count
    return fold


def choose_ridge_strength(features: torch.Tensor, targets: torch.Tensor,
                          seed: int) -> tuple[float, dict[float, float], int]:
    """(the alpha of ``RIDGE_STRENGTHS`` x ``ridge_scale`` with the lowest mean held-out squared error over seeded
    random folds, each alpha's error, the folds: FOLDS, fewer below 10 examples). Each fold's SVD serves every
    strength."""
    if not bool(torch.isfinite(features).all()):
        raise ValueError("the linear probe's features hold values that are not finite")
    n = features.shape[0]
    count = max(2, min(FOLDS, n // 2))
    fold = random_folds(n, count, seed).to(features.device)
    scale = ridge_scale(features)
    alphas = [strength * scale for strength in RIDGE_STRENGTHS]
    x_all = features.flatten(1).to(torch.float64)
    y_all = targets.to(torch.float64).reshape(n, -1)
    errors = {alpha: 0.0 for alpha in alphas}
    for k in range(count):
        inside, held = fold != k, fold == k
        decomposed = _decomposed(x_all[inside], y_all[inside])
        for alpha in alphas:
            weight, bias = _ridge(decomposed, alpha)
            predicted = x_all[held] @ weight.T + bias
            errors[alpha] += float((predicted - y_all[held]).square().mean()) / count
    best = min(alphas, key=lambda alpha: errors[alpha])
    return best, errors, count


def fit_ridge_layer(layer: torch.nn.Linear, features: torch.Tensor, targets: torch.Tensor,
                    alpha: float) -> dict[str, Any]:
    """Fits ``layer`` (an ``nn.Linear`` mapping the features to the targets) by ``fit_ridge`` in place; returns the
    training loss reached (the mean squared error, as the loop reports it)."""
    outputs = targets.reshape(targets.shape[0], -1).shape[1]
    if layer.out_features != outputs:
        raise ValueError(f"the head has {layer.out_features} outputs and the targets {outputs} values an example")
    weight, bias = fit_ridge(features, targets, alpha)
    with torch.no_grad():
        layer.weight.copy_(weight.to(layer.weight.device, layer.weight.dtype))
        layer.bias.copy_(bias.to(layer.bias.device, layer.bias.dtype))
        predicted = features.flatten(1).to(torch.float64) @ weight.T + bias
        loss = (predicted - targets.to(torch.float64).reshape(predicted.shape)).square().mean()
    if not torch.isfinite(loss):
        raise ValueError(f"the linear probe's loss is {float(loss)}: the features hold values that are not finite")
    return {"iterations": 1, "loss": float(loss)}
