"""Recommender baselines, ranking metrics and recommendations: the user/item-bias and popularity baselines, HR@k and
NDCG@k with sampled negatives (the NCF paper's protocol), and each user's top items (``top_items``).

For each user with a held-out interaction, the held-out item is ranked among `negatives` items the user never
rated (seeded sample); HR@k is the share of users whose held-out item lands in the top k, NDCG@k adds
1 / log2(rank + 2) for those that do.
"""

from __future__ import annotations

import numpy as np
import torch

from .training import predict


def bias_baseline(pairs: np.ndarray, ratings: np.ndarray, test_pairs: np.ndarray, reg: float = 10.0,
                  iterations: int = 10) -> np.ndarray:
    """Predicted ratings for `test_pairs` as mean + b_user + b_item, fitted on (`pairs`, `ratings`) by alternating
    regularised least squares (Surprise's BaselineOnly); a user or item never seen gets bias 0."""
    mu = ratings.mean()
    users, items = pairs[:, 0], pairs[:, 1]
    bu, bi = np.zeros(users.max() + 1), np.zeros(items.max() + 1)
    for _ in range(iterations):
        bi = np.bincount(items, ratings - mu - bu[users], minlength=len(bi)) / (np.bincount(items, minlength=len(bi)) + reg)
        bu = np.bincount(users, ratings - mu - bi[items], minlength=len(bu)) / (np.bincount(users, minlength=len(bu)) + reg)
    tu = np.minimum(test_pairs[:, 0], len(bu) - 1)
    ti = np.minimum(test_pairs[:, 1], len(bi) - 1)
    known_u = test_pairs[:, 0] < len(bu)
    known_i = test_pairs[:, 1] < len(bi)
    return mu + np.where(known_u, bu[tu], 0) + np.where(known_i, bi[ti], 0)


class Popularity(torch.nn.Module):
    """The ranking baseline: every user gets the items most often seen in training first (their count as score)."""

    def __init__(self, counts: np.ndarray):
        super().__init__()
        self.register_buffer("counts", torch.as_tensor(counts, dtype=torch.float32))
        self.unused = torch.nn.Parameter(torch.zeros(1))  # a module finetune runs needs a parameter

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.counts[pairs[:, 1]] + self.unused


def _count(value: int, name: str) -> int:
    """An argument that counts (num_items, k): an int >= 1, or a ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _ids(values: np.ndarray, name: str, columns: int | None, num_items: int | None = None) -> np.ndarray:
    """``values`` as int64 ids -- (N, 2) (user, item) pairs where ``columns`` is 2, else (N,) users -- checked: whole
    numbers >= 0, items below ``num_items``; a ValueError naming ``name`` otherwise (a float id truncated, or an
    item beyond the catalogue, would rank something else silently)."""
    array = np.asarray(values)
    shape = "(N, 2) (user, item) pairs" if columns == 2 else "a 1-D array of user ids"
    if array.ndim != (2 if columns == 2 else 1) or (columns == 2 and array.shape[1] != 2):
        raise ValueError(f"{name} must be {shape}, got shape {array.shape}")
    if array.size and array.dtype.kind not in "fiu":
        raise ValueError(f"{name} must hold integer ids, got dtype {array.dtype}")
    if array.size:
        bad = ~np.isfinite(array) | (array != np.round(array)) | (array < 0)
        if bad.any():
            raise ValueError(f"{name} must hold whole numbers >= 0 (ids), got e.g. {array[bad][:3].tolist()}")
    array = array.astype(np.int64)
    if columns == 2 and num_items is not None and array.size and array[:, 1].max() >= num_items:
        raise ValueError(f"{name} holds item {int(array[:, 1].max())}, beyond num_items={num_items} (items 0.."
                         f"{num_items - 1})")
    return array


def popularity(pairs: np.ndarray, num_items: int) -> Popularity:
    """The popularity ranker of the interactions ``pairs`` (user, item), for ``ranking_metrics``."""
    num_items = _count(num_items, "num_items")
    return Popularity(np.bincount(_ids(pairs, "pairs", 2, num_items)[:, 1], minlength=num_items))


def leave_one_out(pairs: np.ndarray, order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, test indices): the last interaction of each user with at least two (by `order`, e.g.
    timestamps; by position when None) is held out."""
    order = np.arange(len(pairs)) if order is None else np.asarray(order)
    last: dict[int, int] = {}
    counts = np.bincount(pairs[:, 0])
    for index in np.lexsort((order, pairs[:, 0])):
        last[int(pairs[index, 0])] = int(index)
    test = np.array(sorted(i for u, i in last.items() if counts[u] >= 2), dtype=np.int64)
    train = np.setdiff1d(np.arange(len(pairs)), test)
    return train, test


def ranking_metrics(model, train_pairs: np.ndarray, test_pairs: np.ndarray, num_items: int, k: int = 10,
                    negatives: int = 99, seed: int = 0) -> dict[str, float]:
    """HR@k and NDCG@k of `model` (a rating predictor) on one held-out (user, item) per row of `test_pairs`, each
    ranked among `negatives` items drawn from those its user never had (in either set; seeded), or among all of them
    where the user has fewer left (``short_users`` below)."""
    num_items, k = _count(num_items, "num_items"), _count(k, "k")
    train_pairs = _ids(train_pairs, "train_pairs", 2, num_items)
    test_pairs = _ids(test_pairs, "test_pairs", 2, num_items)
    if not 1 <= negatives < num_items:
        raise ValueError(f"negatives must be from 1 to num_items - 1 ({num_items - 1}), got {negatives}")
    rng = np.random.default_rng(seed)
    seen: dict[int, set[int]] = {}
    for u, i in np.concatenate([train_pairs, test_pairs]):
        seen.setdefault(int(u), set()).add(int(i))
    candidates = np.full((len(test_pairs), negatives + 1), -1, dtype=np.int64)  # -1: no candidate (never ranks)
    for row, (u, i) in enumerate(test_pairs):
        had = seen[int(u)]
        if num_items - len(had) < negatives:  # fewer left than to draw: every one of them, in order
            drawn = [c for c in range(num_items) if c not in had]
        else:
            drawn = []
            while len(drawn) < negatives:
                for c in rng.integers(0, num_items, size=2 * negatives).tolist():
                    if c not in had and c not in drawn:
                        drawn.append(c)
                        if len(drawn) == negatives:
                            break
        candidates[row, :len(drawn) + 1] = [i] + drawn
    users = np.repeat(test_pairs[:, 0], negatives + 1)
    items = np.where(candidates >= 0, candidates, candidates[:, :1]).ravel()
    scores = predict(model, np.stack([users, items], 1), task="regression").reshape(candidates.shape)
    scores = np.where(candidates >= 0, scores, -np.inf)
    # rank of the held-out item (column 0): how many candidates score strictly higher
    rank = (scores[:, 1:] > scores[:, :1]).sum(1)
    hits = rank < k
    return {f"hr@{k}": float(hits.mean()), f"ndcg@{k}": float((hits / np.log2(rank + 2)).mean())}


def short_users(train_pairs: np.ndarray, test_pairs: np.ndarray, num_items: int, negatives: int) -> int:
    """How many rows of ``test_pairs`` have a user with fewer than ``negatives`` items they never had (in either
    set): ranked among all of those instead (ranking_metrics), an easier test."""
    known = np.unique(np.concatenate([train_pairs, test_pairs]), axis=0)
    had = np.bincount(known[:, 0], minlength=int(test_pairs[:, 0].max()) + 1)
    return int((num_items - had[test_pairs[:, 0]] < negatives).sum())


def top_items(model, users: np.ndarray, num_items: int, k: int = 10, exclude: np.ndarray | None = None,
              batch_rows: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """(items, scores), each (len(users), min(k, num_items)): each user's ``k`` highest-scoring items by ``model`` (a
    ranker's scores or a rating model's predicted ratings), best first, leaving out the (user, item) pairs of
    ``exclude`` (what each user already had). A user left fewer items gets item -1 and score -inf for the rest.
    Scored a few users at a time (``batch_rows`` pairs)."""
    users = _ids(users, "users", None)
    num_items, k = _count(num_items, "num_items"), _count(k, "k")
    exclude = _ids(exclude, "exclude", 2, num_items) if exclude is not None else None
    k = min(k, num_items)
    had: dict[int, np.ndarray] = {}  # each user's items to leave out
    if exclude is not None and len(exclude):
        ordered = exclude[np.argsort(exclude[:, 0], kind="stable")]
        starts = np.concatenate([[0], np.flatnonzero(np.diff(ordered[:, 0])) + 1])
        had = {int(ordered[s, 0]): items for s, items in zip(starts, np.split(ordered[:, 1], starts[1:]))}
    items_out = np.full((len(users), k), -1, dtype=np.int64)
    scores_out = np.full((len(users), k), -np.inf, dtype=np.float64)
    per_batch = max(1, batch_rows // num_items)
    catalogue = np.arange(num_items, dtype=np.int64)
    for start in range(0, len(users), per_batch):
        chunk = users[start:start + per_batch]
        pairs = np.stack([np.repeat(chunk, num_items), np.tile(catalogue, len(chunk))], 1)
        scores = predict(model, pairs, task="regression").astype(np.float64).reshape(len(chunk), num_items)
        for row, user in enumerate(chunk.tolist()):
            if user in had:
                scores[row, had[user]] = -np.inf
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        found = np.take_along_axis(scores, best, 1)
        items_out[start:start + len(chunk)] = np.where(np.isfinite(found), best, -1)
        scores_out[start:start + len(chunk)] = found
    return items_out, scores_out
